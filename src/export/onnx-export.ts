/**
 * `gptq export --to onnx`: a quantized (or unquantized) Llama-family checkpoint as an ONNX decoder in a
 * folder transformers.js and onnxruntime-genai load:
 *   onnx/model.onnx (+ onnx/model.onnx_data for large models), config.json without its
 *   quantization_config, the tokenizer and generation files, and genai_config.json.
 * The folder is built aside and renamed into place only after onnxruntime-node (when installed) has
 * run the model and its logits, in one run and through the key/value cache, agreed with the project's
 * own forward pass (what `gptq eval` runs).
 */
import { copyFileSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { buildDirAtomic, writeFileAtomic, writeTextAtomic } from "../io/atomic.js";
import {
  CONFIG_FILE,
  QUANTIZE_CONFIG_FILE,
  LEGACY_QUANT_CONFIG_FILE,
  clearQuantConfig,
  openCheckpoint,
} from "../io/checkpoint.js";
import { checkOutputDir } from "../io/output.js";
import { INDEX_FILE } from "../io/store.js";
import { checkOutputPath } from "../transform/rewrite.js";
import { GptqError } from "../util/errors.js";
import { DecoderGraphSummary, OPSET, buildDecoderGraph } from "./decoder-graph.js";
import { MS_DOMAIN } from "./matmul-nbits.js";
import { DecoderConfig, readDecoderConfig, referenceLogits } from "./model-view.js";
import { ExternalWeights, GraphBuilder, WeightSink, inlineWeights } from "./onnx-graph.js";
import {
  DecoderCheck,
  OnnxDecoder,
  OnnxRuntime,
  RuntimeLoad,
  checkDecoder,
  loadOnnxRuntime,
} from "./onnx-runtime.js";

export const ONNX_MODEL_FILE = "onnx/model.onnx";
export const ONNX_DATA_FILE = "model.onnx_data";
export const GENAI_CONFIG_FILE = "genai_config.json";
/** logits of the export and of the project's forward may differ by this much, relative to their scale */
export const MAX_RELATIVE_DIFFERENCE = 1e-3;
/** ONNX IR version 8 goes with opset 17 */
const IR_VERSION = 8;
/** protobuf refuses messages of 2 GiB: weights past this go to the external data file */
const INLINE_LIMIT = 1.5 * 2 ** 30;

export interface OnnxExportOptions {
  /** token ids the check runs (default: 16 ids spread over the vocabulary, starting at 1) */
  tokens?: Int32Array;
  /** run the check (default true); it also needs onnxruntime-node */
  verify?: boolean;
  /** weights in onnx/model.onnx_data: true, false, or (default) only when they would not fit the model file */
  externalData?: boolean;
  /** MatMulNBits accuracy_level (0: fp32 activations, the default; 4: int8 activations) */
  accuracyLevel?: number;
  /** called with progress lines */
  log?: (line: string) => void;
}

export interface OnnxExportResult extends DecoderGraphSummary {
  files: string[];
  /** bytes of the model file and of its external data */
  modelBytes: number;
  externalDataBytes: number;
  verification: ({ runtime: string } & DecoderCheck) | { skipped: string };
}

/** What the ONNX model reads of the checkpoint's files is rewritten; the rest (tokenizer, ...) is copied. */
const NOT_COPIED = new Set([INDEX_FILE, QUANTIZE_CONFIG_FILE, LEGACY_QUANT_CONFIG_FILE]);

export async function exportOnnx(
  input: string,
  output: string,
  opts: OnnxExportOptions = {},
): Promise<OnnxExportResult> {
  const accuracyLevel = opts.accuracyLevel ?? 0;
  if (![0, 1, 2, 3, 4].includes(accuracyLevel))
    throw new GptqError(`accuracy level ${accuracyLevel} is not one of MatMulNBits' 0, 1, 2, 3, 4`);
  const config = readDecoderConfig(input);
  const tokens = opts.tokens ?? defaultTokens(config);
  for (const t of tokens)
    if (t < 0 || t >= config.vocabSize)
      throw new GptqError(`check token ${t} is outside the vocabulary [0, ${config.vocabSize})`);
  if (tokens.length < 2)
    throw new GptqError("the check needs at least 2 tokens (a prefix and a cached step)");
  checkOutputPath(input, output);
  const ckpt = openCheckpoint(input);
  try {
    // fp16 weights and embeddings widen to fp32; quantized layers keep about their size
    const sourceBytes = ckpt.store.files.reduce((n, f) => n + statSync(f.path).size, 0);
    checkOutputDir(output, 2 * sourceBytes);
    const external = opts.externalData ?? 2 * sourceBytes > INLINE_LIMIT;
    const runtime: RuntimeLoad =
      opts.verify === false
        ? { runtime: undefined, reason: "not asked for (--no-verify)" }
        : await loadOnnxRuntime();

    return await buildDirAtomic(output, async (dir) => {
      mkdirSync(join(dir, "onnx"));
      const modelPath = join(dir, ONNX_MODEL_FILE);
      const sink: WeightSink = external
        ? new ExternalWeights(join(dir, "onnx", ONNX_DATA_FILE))
        : inlineWeights;
      let summary: DecoderGraphSummary;
      let model;
      try {
        const g = new GraphBuilder(sink);
        summary = buildDecoderGraph(g, config, ckpt, { accuracyLevel });
        model = g.model({
          irVersion: IR_VERSION,
          opsets: { "": OPSET, [MS_DOMAIN]: 1 },
          producer: "gptq-ts",
          graphName: `${config.modelType} decoder`,
        });
      } finally {
        sink.close();
      }
      if (model.byteLength >= 2 ** 31)
        throw new GptqError(
          `the ONNX model would be ${model.byteLength} bytes, over protobuf's 2 GiB; export with external data (--external-data)`,
        );
      writeFileAtomic(modelPath, (fd) => model.writeTo(fd));
      opts.log?.(`wrote ${ONNX_MODEL_FILE}: ${summary.quantized} MatMulNBits, ${summary.dense} fp32 Gemm`);

      const files = copyModelFiles(input, dir);
      clearQuantConfig(dir);
      // transformers.js fetches onnx/model.onnx_data only when config.json says the model has one
      if (external) markExternalData(dir);
      writeTextAtomic(
        join(dir, GENAI_CONFIG_FILE),
        JSON.stringify(genaiConfig(config, input), null, 2) + "\n",
      );
      files.push(ONNX_MODEL_FILE, GENAI_CONFIG_FILE);
      if (external) files.push(`onnx/${ONNX_DATA_FILE}`);

      const verification = runtime.runtime
        ? await checkExport(runtime.runtime, runtime.version, modelPath, input, config, tokens, opts.log)
        : { skipped: runtime.reason };
      return {
        ...summary,
        files: files.sort(),
        modelBytes: model.byteLength,
        externalDataBytes: sink.externalBytes,
        verification,
      };
    });
  } finally {
    ckpt.close();
  }
}

/**
 * Runs the written model with onnxruntime-node on `tokens`, in one run and through its cache, against
 * the project's forward of the checkpoint; throws unless both agree within MAX_RELATIVE_DIFFERENCE.
 */
async function checkExport(
  ort: OnnxRuntime,
  version: string,
  modelPath: string,
  input: string,
  config: DecoderConfig,
  tokens: Int32Array,
  log?: (line: string) => void,
): Promise<{ runtime: string } & DecoderCheck> {
  log?.(`checking with onnxruntime-node ${version} on ${tokens.length} tokens`);
  const reference = referenceLogits(input, tokens);
  const decoder = await OnnxDecoder.open(ort, modelPath, config);
  let check: DecoderCheck;
  try {
    check = await checkDecoder(decoder, tokens, reference);
  } finally {
    await decoder.release();
  }
  for (const [what, d] of [
    ["in one run", check.fullRelDiff],
    ["through the key/value cache", check.cachedRelDiff],
  ] as const)
    if (!(d <= MAX_RELATIVE_DIFFERENCE))
      throw new GptqError(
        `verification failed: the ONNX model's logits ${what} differ from the project's forward by ${d.toExponential(3)} (relative; at most ${MAX_RELATIVE_DIFFERENCE} allowed); nothing was written`,
      );
  return { runtime: `onnxruntime-node ${version}`, ...check };
}

/** 16 ids spread over the vocabulary, the first 1 (a BOS for most Llama vocabularies) */
function defaultTokens(c: DecoderConfig): Int32Array {
  const T = Math.min(16, c.vocabSize);
  return Int32Array.from({ length: T }, (_, t) =>
    t === 0 ? Math.min(1, c.vocabSize - 1) : (t * 7919) % c.vocabSize,
  );
}

/** Copies the checkpoint's files other than its tensors and quantization configs; returns their names. */
function copyModelFiles(input: string, dir: string): string[] {
  const copied: string[] = [];
  for (const name of readdirSync(input)) {
    const from = join(input, name);
    if (
      NOT_COPIED.has(name) ||
      name.endsWith(".safetensors") ||
      name.startsWith(".") ||
      !statSync(from).isFile()
    )
      continue;
    copyFileSync(from, join(dir, name));
    copied.push(name);
  }
  return copied;
}

/** onnxruntime-genai's description of the model (genai_config.json), from config.json and generation_config.json */
function genaiConfig(c: DecoderConfig, input: string): Record<string, unknown> {
  const generation = readJsonIfPresent(join(input, "generation_config.json"));
  const token = (key: string) => c.raw[key] ?? generation[key] ?? null;
  const contextLength =
    typeof c.raw.max_position_embeddings === "number" ? c.raw.max_position_embeddings : 2048;
  return {
    model: {
      bos_token_id: token("bos_token_id"),
      eos_token_id: token("eos_token_id"),
      pad_token_id: token("pad_token_id") ?? token("eos_token_id"),
      context_length: contextLength,
      decoder: {
        session_options: { log_id: "onnxruntime-genai", provider_options: [] },
        filename: ONNX_MODEL_FILE,
        head_size: c.headDim,
        hidden_size: c.hiddenSize,
        inputs: {
          input_ids: "input_ids",
          attention_mask: "attention_mask",
          position_ids: "position_ids",
          past_key_names: "past_key_values.%d.key",
          past_value_names: "past_key_values.%d.value",
        },
        outputs: {
          logits: "logits",
          present_key_names: "present.%d.key",
          present_value_names: "present.%d.value",
        },
        num_attention_heads: c.numHeads,
        num_hidden_layers: c.numLayers,
        num_key_value_heads: c.numKvHeads,
      },
      type: c.modelType,
      vocab_size: c.vocabSize,
    },
    search: {
      diversity_penalty: 0.0,
      do_sample: false,
      early_stopping: true,
      length_penalty: 1.0,
      max_length: contextLength,
      min_length: 0,
      no_repeat_ngram_size: 0,
      num_beams: 1,
      num_return_sequences: 1,
      // the cache grows by concatenation, not in a preallocated buffer (that needs GroupQueryAttention)
      past_present_share_buffer: false,
      repetition_penalty: 1.0,
      temperature: 1.0,
      top_k: 1,
      top_p: 1.0,
    },
  };
}

function markExternalData(dir: string): void {
  const path = join(dir, CONFIG_FILE);
  const config = readJsonIfPresent(path);
  const section = (config["transformers.js_config"] ?? {}) as Record<string, unknown>;
  config["transformers.js_config"] = { ...section, use_external_data_format: true };
  writeTextAtomic(path, JSON.stringify(config, null, 2) + "\n");
}

function readJsonIfPresent(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch {
    return {};
  }
}
