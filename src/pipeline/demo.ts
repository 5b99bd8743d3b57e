/**
 * The whole job on an embedded example, in seconds: a synthetic Llama with LLM-like statistics is written
 * to a temporary directory, quantized with RTN, GPTQ and fp-target GPTQ (4-bit, group 128, symmetric),
 * each result evaluated, the GPTQ checkpoint converted to Marlin (and evaluated again) and checked
 * against every known kernel's rules.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openCheckpoint } from "../io/checkpoint.js";
import { checkLayers, checkpointProblems } from "../kernels/check.js";
import { KERNELS } from "../kernels/registry.js";
import { DecoderModel } from "../model/decoder.js";
import { DEMO_SPEC, Rng, writeSyntheticLlama, writeTokenFile } from "./synthetic.js";
import { PipelineOptions } from "./quantize-model.js";
import { quantizeCheckpoint } from "./quantize-checkpoint.js";
import { convertCheckpoint } from "../transform/convert.js";

export interface DemoRow {
  name: string;
  dir: string;
  /** perplexity against the fp model's next-token distributions (see softPerplexity) */
  ppl: number;
  /** mean relative output error of the projections on the calibration inputs */
  relError?: number;
  seconds?: number;
}

export interface DemoReport {
  dir: string;
  rows: DemoRow[];
  /** kernel name -> layers that pass / layers, for the GPTQ checkpoint */
  kernels: Record<string, { ok: number; layers: number }>;
  seconds: number;
}

/**
 * Token sequences the model itself finds likely, cheaply: each next token is drawn from the model's
 * prediction given the current token alone (a one-token forward), so the fp model's perplexity is
 * meaningful and quantization damage shows in it.
 */
function tokenSampler(model: DecoderModel): (n: number, seqlen: number, seed: number) => Int32Array[] {
  const V = model.config.vocabSize;
  const cdf = new Float64Array(V * V);
  for (let v = 0; v < V; v++) {
    const logits = model.forward(Int32Array.of(v));
    const max = Math.max(...logits);
    let sum = 0;
    for (let w = 0; w < V; w++) cdf[v * V + w] = sum += Math.exp(logits[w] - max);
    for (let w = 0; w < V; w++) cdf[v * V + w] /= sum;
  }
  return (n, seqlen, seed) => {
    const rng = new Rng(seed);
    return Array.from({ length: n }, () => {
      const seq = new Int32Array(seqlen);
      for (let t = 1; t < seqlen; t++) {
        const u = rng.uniform();
        const row = seq[t - 1] * V;
        let w = 0;
        while (w < V - 1 && cdf[row + w] < u) w++;
        seq[t] = w;
      }
      return seq;
    });
  };
}

function softmaxRows(logits: Float32Array, T: number, V: number): Float64Array {
  const p = new Float64Array(T * V);
  for (let t = 0; t < T; t++) {
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, logits[t * V + v]);
    let sum = 0;
    for (let v = 0; v < V; v++) sum += p[t * V + v] = Math.exp(logits[t * V + v] - max);
    for (let v = 0; v < V; v++) p[t * V + v] /= sum;
  }
  return p;
}

/**
 * exp of the mean cross-entropy between the fp model's next-token distributions and `model`'s: the
 * perplexity `model` would have on endless text sampled from the fp model (fp32's own is exp(entropy)).
 */
function softPerplexity(model: DecoderModel, seqs: Int32Array[], targets: Float64Array[]): number {
  const V = model.config.vocabSize;
  let ce = 0;
  let n = 0;
  seqs.forEach((s, i) => {
    const logits = model.forward(s);
    for (let t = 0; t < s.length; t++) {
      let max = -Infinity;
      for (let v = 0; v < V; v++) max = Math.max(max, logits[t * V + v]);
      let sum = 0;
      for (let v = 0; v < V; v++) sum += Math.exp(logits[t * V + v] - max);
      const lse = max + Math.log(sum);
      for (let v = 0; v < V; v++) ce -= targets[i][t * V + v] * (logits[t * V + v] - lse);
      n++;
    }
  });
  return Math.exp(ce / n);
}

const SCHEME = { bits: 4, groupSize: 128, sym: true, descAct: false, staticGroups: false } as const;

export async function runDemo(
  opts: { keep?: boolean; log?: (line: string) => void } = {},
): Promise<DemoReport> {
  const log = opts.log ?? (() => {});
  const t0 = Date.now();
  const dir = mkdtempSync(join(tmpdir(), "gptq-demo-"));
  try {
    const fp = join(dir, "fp");
    writeSyntheticLlama(fp, DEMO_SPEC);
    const tokens = join(dir, "tokens.safetensors");
    const sample = tokenSampler(DecoderModel.load(fp));
    const evalSeqs = sample(16, 64, 2);
    // 64 x 64 tokens: 32 per input of the 128-input projections, what fp-target needs (TOKENS_PER_INPUT)
    writeTokenFile(tokens, { calibration_tokens: sample(64, 64, 1), evaluation_tokens: evalSeqs });
    const { hiddenSize: H, intermediateSize: I, numLayers: L } = DEMO_SPEC;
    log(
      `synthetic Llama: hidden ${H}, intermediate ${I}, ${L} layers, heavy weight columns, outlier channels`,
    );
    const fpModel = DecoderModel.load(fp);
    const targets = evalSeqs.map((s) => softmaxRows(fpModel.forward(s), s.length, DEMO_SPEC.vocabSize));
    const ppl = (d: string) => softPerplexity(DecoderModel.load(d), evalSeqs, targets);
    const rows: DemoRow[] = [{ name: "fp32", dir: fp, ppl: ppl(fp) }];

    const variants: [string, Partial<PipelineOptions>][] = [
      ["RTN", { method: "rtn" }],
      ["GPTQ", {}],
      ["GPTQ fp-target", { fpTarget: true }],
    ];
    for (const [name, over] of variants) {
      const out = join(dir, name.toLowerCase().replace(/[^a-z]+/g, "-"));
      const res = await quantizeCheckpoint({
        modelDir: fp,
        outDir: out,
        options: { method: "gptq", ...SCHEME, damp: 0.01, clip: "minmax", ...over },
        // plain GPTQ, plus only what each variant names
        preset: "fast",
        calib: { file: tokens },
        format: "gptq",
        pad: "auto",
      });
      rows.push({ name, dir: out, ppl: ppl(out), relError: res.meanRelError, seconds: res.seconds });
      log(`quantized with ${name} in ${res.seconds.toFixed(1)}s`);
    }

    const marlin = join(dir, "gptq-marlin");
    const conv = await convertCheckpoint(rows[2].dir, marlin, "marlin");
    rows.push({ name: "GPTQ as Marlin", dir: marlin, ppl: ppl(marlin) });
    log(`converted GPTQ to Marlin: ${conv.verifiedLayers}/${conv.layers} layers verified bit for bit`);

    const ck = openCheckpoint(rows[2].dir);
    let kernels: DemoReport["kernels"];
    try {
      const reports = checkLayers(ck.layers, ck.config!, KERNELS, 1, checkpointProblems(ck));
      kernels = Object.fromEntries(
        KERNELS.map((k) => [
          k.name,
          { ok: reports.filter((r) => r.kernels[k.name].ok).length, layers: reports.length },
        ]),
      );
    } finally {
      ck.close();
    }
    return { dir, rows, kernels, seconds: (Date.now() - t0) / 1000 };
  } finally {
    if (!opts.keep) rmSync(dir, { recursive: true, force: true });
  }
}
