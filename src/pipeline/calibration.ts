/**
 * Calibration data: token sequences from a safetensors file (an int32/int64 [n, seqlen] tensor) or from a
 * text file tokenized with the model's `tokenizer.json` and cut into consecutive chunks.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { SafetensorsFile } from "../io/safetensors.js";
import { toInt32 } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import { Tokenizer } from "../model/tokenizer.js";

export const DEFAULT_CALIB_KEY = "calibration_tokens";
export const DEFAULT_NSAMPLES = 128;
/** Chunk length for text calibration when --seqlen is not given. */
export const DEFAULT_TEXT_SEQLEN = 2048;

export interface CalibrationRequest {
  /** a `.safetensors` token file, or any other file read as UTF-8 text */
  file: string;
  /** tensor name in a token file */
  key?: string;
  nsamples?: number;
  seqlen?: number;
  /** model directory holding `tokenizer.json` (text calibration only) */
  modelDir?: string;
  /** ids must be below this (the model's vocabulary) */
  vocabSize?: number;
}

export interface Calibration {
  sequences: Int32Array[];
  seqlen: number;
  /** one line for the report: where the tokens came from */
  source: string;
}

export function isTokenFile(path: string): boolean {
  return path.endsWith(".safetensors");
}

export function loadCalibration(req: CalibrationRequest): Calibration {
  if (!existsSync(req.file)) throw new GptqError(`calibration file ${req.file} does not exist`);
  if (!statSync(req.file).isFile())
    throw new GptqError(
      `calibration file ${req.file} is a folder; give a .safetensors token file or a text file`,
    );
  if (req.key !== undefined && !isTokenFile(req.file))
    throw new GptqError(
      `--calib-key names a tensor of a .safetensors token file; ${req.file} is read as text (tokenized with the model's tokenizer.json)`,
    );
  if (req.nsamples !== undefined && req.nsamples < 1) throw new GptqError(`--nsamples must be at least 1`);
  if (req.seqlen !== undefined && req.seqlen < 2) throw new GptqError(`--seqlen must be at least 2`);
  const cal = isTokenFile(req.file) ? fromTokenFile(req) : fromText(req);
  if (req.vocabSize !== undefined)
    for (const s of cal.sequences)
      for (const id of s)
        if (id < 0 || id >= req.vocabSize)
          throw new GptqError(
            `${req.file}: token id ${id} is outside the model's vocabulary of ${req.vocabSize}`,
          );
  return cal;
}

/** Rows of a 2-D integer tensor in a safetensors file, as Int32Array sequences. */
export function readTokenRows(file: string, key: string): { rows: Int32Array[]; width: number } {
  const f = SafetensorsFile.open(file);
  try {
    if (!f.has(key)) {
      const ints = f
        .names()
        .filter((n) => ["I32", "I64"].includes(f.info(n).dtype) && f.info(n).shape.length === 2);
      throw new GptqError(
        `${file}: no tensor "${key}"${ints.length ? `; integer [n, seqlen] tensors here: ${ints.join(", ")}` : ""}`,
      );
    }
    const t = f.read(key);
    if (t.shape.length !== 2 || !(t.dtype === "I32" || t.dtype === "I64"))
      throw new GptqError(
        `${file}: "${key}" is ${t.dtype}${JSON.stringify(t.shape)}; token ids must be int32 or int64 [n, seqlen]`,
      );
    const [n, width] = t.shape;
    const ids = toInt32(t);
    const rows: Int32Array[] = [];
    for (let i = 0; i < n; i++) rows.push(ids.slice(i * width, (i + 1) * width));
    return { rows, width };
  } finally {
    f.close();
  }
}

function fromTokenFile(req: CalibrationRequest): Calibration {
  const key = req.key ?? DEFAULT_CALIB_KEY;
  const { rows, width } = readTokenRows(req.file, key);
  const seqlen = req.seqlen ?? width;
  if (seqlen > width)
    throw new GptqError(`--seqlen ${seqlen} is longer than the ${width}-token sequences in ${req.file}`);
  const n = Math.min(req.nsamples ?? DEFAULT_NSAMPLES, rows.length);
  if (n === 0) throw new GptqError(`${req.file}: "${key}" holds no sequences`);
  const sequences = rows.slice(0, n).map((r) => r.slice(0, seqlen));
  return { sequences, seqlen, source: `${n} x ${seqlen} tokens from ${req.file} ["${key}"]` };
}

function fromText(req: CalibrationRequest): Calibration {
  const tokPath = req.modelDir ? join(req.modelDir, "tokenizer.json") : undefined;
  if (!tokPath || !existsSync(tokPath))
    throw new GptqError(
      `text calibration needs the model's tokenizer.json${tokPath ? ` (${tokPath} is absent)` : ""}; or pass token ids as --calib FILE.safetensors`,
    );
  const tok = Tokenizer.fromFile(tokPath);
  const text = readFileSync(req.file, "utf8");
  const seqlen = req.seqlen ?? DEFAULT_TEXT_SEQLEN;
  const want = req.nsamples ?? DEFAULT_NSAMPLES;
  const sequences = chunkTokens(tok.encode(text), tok.prefixIds, seqlen, want);
  if (!sequences.length)
    throw new GptqError(
      `${req.file} tokenizes to fewer than the ${seqlen} tokens of one sample; give more text or a smaller --seqlen`,
    );
  const short =
    sequences.length < want ? ` (the text holds only ${sequences.length} of the ${want} asked)` : "";
  return {
    sequences,
    seqlen,
    source: `${sequences.length} x ${seqlen} tokens of ${req.file} tokenized with ${tokPath}${short}`,
  };
}

/**
 * Consecutive chunks of `seqlen` tokens, each opening with `prefix` (BOS) as the model saw in training;
 * at most `max` chunks, only whole ones.
 */
export function chunkTokens(ids: number[], prefix: number[], seqlen: number, max: number): Int32Array[] {
  const body = seqlen - prefix.length;
  if (body < 1)
    throw new GptqError(`--seqlen ${seqlen} leaves no room after the ${prefix.length} BOS tokens`);
  const out: Int32Array[] = [];
  for (let at = 0; at + body <= ids.length && out.length < max; at += body) {
    const s = new Int32Array(seqlen);
    s.set(prefix);
    for (let i = 0; i < body; i++) s[prefix.length + i] = ids[at + i];
    out.push(s);
  }
  return out;
}
