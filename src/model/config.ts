/**
 * The architecture fields of a Llama-family config.json (Llama, Mistral, Qwen2), normalised: defaults
 * filled in as transformers fills them, and both the old (`rope_theta`, `rope_scaling`) and the new
 * (`rope_parameters`) spellings of the rotary settings accepted.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { GptqError } from "../util/errors.js";
import { parseJsonStrict } from "../util/json.js";

export type RopeScaling =
  | { type: "default" }
  | { type: "linear"; factor: number }
  | {
      type: "llama3";
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

export interface LlamaConfig {
  modelType: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** dimensions of each head that are rotated (head_dim x partial_rotary_factor) */
  rotaryDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  tieWordEmbeddings: boolean;
  /** attend only to the last `slidingWindow` positions (Mistral); undefined = full causal */
  slidingWindow?: number;
  hiddenAct: "silu";
  /** the parsed config.json, for fields this module does not interpret */
  raw: Record<string, unknown>;
}

const SUPPORTED = new Set(["llama", "mistral", "qwen2"]);

export function readLlamaConfig(dir: string): LlamaConfig {
  const path = join(dir, "config.json");
  if (!existsSync(path)) throw new GptqError(`${dir}: no config.json`);
  const raw = parseJsonStrict(readFileSync(path, "utf8"), path);
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    throw new GptqError(`${path}: expected a JSON object`);
  return parseLlamaConfig(raw as Record<string, unknown>, path);
}

export function parseLlamaConfig(raw: Record<string, unknown>, where = "config.json"): LlamaConfig {
  const modelType = String(raw.model_type ?? "");
  if (!SUPPORTED.has(modelType))
    throw new GptqError(
      `${where}: model_type "${modelType}" is not supported (supported: ${[...SUPPORTED].join(", ")})`,
    );
  const int = (key: string, fallback?: number): number => {
    const v = raw[key] ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0)
      throw new GptqError(`${where}: "${key}" must be a positive integer, got ${JSON.stringify(raw[key])}`);
    return v;
  };
  const num = (key: string, fallback: number, obj: Record<string, unknown> = raw): number => {
    const v = obj[key] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0)
      throw new GptqError(`${where}: "${key}" must be a positive number, got ${JSON.stringify(obj[key])}`);
    return v;
  };
  const hiddenSize = int("hidden_size");
  const numHeads = int("num_attention_heads");
  const numKvHeads = int("num_key_value_heads", numHeads);
  if (numHeads % numKvHeads !== 0)
    throw new GptqError(
      `${where}: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`,
    );
  const headDim = raw.head_dim == null ? hiddenSize / numHeads : int("head_dim");
  if (!Number.isInteger(headDim))
    throw new GptqError(
      `${where}: hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`,
    );

  // transformers >= 5 nests rotary settings in rope_parameters; older files use rope_theta + rope_scaling
  const ropeParams = (raw.rope_parameters ?? raw.rope_scaling ?? {}) as Record<string, unknown>;
  if (typeof ropeParams !== "object" || ropeParams === null)
    throw new GptqError(`${where}: "rope_parameters" / "rope_scaling" must be an object`);
  const ropeTheta = num("rope_theta", num("rope_theta", 10000), ropeParams);
  const partial = num("partial_rotary_factor", num("partial_rotary_factor", 1), ropeParams);
  const rotaryDim = Math.floor(headDim * partial);
  if (rotaryDim % 2 !== 0 || rotaryDim <= 0 || rotaryDim > headDim)
    throw new GptqError(
      `${where}: rotary dimension ${rotaryDim} (head_dim x partial_rotary_factor) must be even`,
    );
  const ropeType = String(ropeParams.rope_type ?? ropeParams.type ?? "default");
  let ropeScaling: RopeScaling;
  if (ropeType === "default") ropeScaling = { type: "default" };
  else if (ropeType === "linear") ropeScaling = { type: "linear", factor: num("factor", NaN, ropeParams) };
  else if (ropeType === "llama3")
    ropeScaling = {
      type: "llama3",
      factor: num("factor", NaN, ropeParams),
      lowFreqFactor: num("low_freq_factor", NaN, ropeParams),
      highFreqFactor: num("high_freq_factor", NaN, ropeParams),
      originalMaxPositionEmbeddings: num("original_max_position_embeddings", NaN, ropeParams),
    };
  else throw new GptqError(`${where}: rope type "${ropeType}" is not supported (default, linear, llama3)`);

  const hiddenAct = String(raw.hidden_act ?? raw.hidden_activation ?? "silu");
  if (hiddenAct !== "silu")
    throw new GptqError(`${where}: hidden_act "${hiddenAct}" is not supported (silu)`);

  let slidingWindow: number | undefined;
  const sw = raw.sliding_window;
  // Qwen2 carries a sliding_window value but applies it only with use_sliding_window
  const swOn = modelType === "qwen2" ? raw.use_sliding_window === true : true;
  if (swOn && typeof sw === "number" && sw > 0) slidingWindow = sw;

  return {
    modelType,
    hiddenSize,
    intermediateSize: int("intermediate_size"),
    numLayers: int("num_hidden_layers"),
    numHeads,
    numKvHeads,
    headDim,
    rotaryDim,
    vocabSize: int("vocab_size"),
    rmsNormEps: num("rms_norm_eps", 1e-6),
    ropeTheta,
    ropeScaling,
    // Llama, Mistral and Qwen2 configs default to separate heads
    tieWordEmbeddings: raw.tie_word_embeddings === true,
    slidingWindow,
    hiddenAct: "silu",
    raw,
  };
}
