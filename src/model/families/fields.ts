/**
 * Reading config.json fields the way transformers reads them: typed, with its defaults, and one clear error
 * naming the key when a value is wrong. Shared by the family entries.
 */
import { GptqError } from "../../util/errors.js";
import { Activation, AttentionKind, ModelConfig, RopeScaling } from "./types.js";

export type RawConfig = Record<string, unknown>;

export class ConfigFields {
  constructor(
    readonly raw: RawConfig,
    readonly where: string,
  ) {}

  /** a positive integer; `fallback` when the key is absent or null */
  int(key: string, fallback?: number, obj: RawConfig = this.raw): number {
    const v = obj[key] ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0)
      throw new GptqError(
        `${this.where}: "${key}" must be a positive integer, got ${JSON.stringify(obj[key])}`,
      );
    return v;
  }

  /** a positive finite number; `fallback` when the key is absent or null */
  num(key: string, fallback: number, obj: RawConfig = this.raw): number {
    const v = obj[key] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0)
      throw new GptqError(
        `${this.where}: "${key}" must be a positive number, got ${JSON.stringify(obj[key])}`,
      );
    return v;
  }

  /** a positive number, or undefined when the key is absent or null */
  optionalNum(key: string): number | undefined {
    return this.raw[key] == null ? undefined : this.num(key, NaN);
  }

  /** a list of numbers */
  numbers(key: string, obj: RawConfig, length: number): number[] {
    const v = obj[key];
    if (!Array.isArray(v) || v.length !== length || v.some((x) => typeof x !== "number" || !(x > 0)))
      throw new GptqError(`${this.where}: "${key}" must be a list of ${length} positive numbers`);
    return v as number[];
  }

  fail(message: string): never {
    throw new GptqError(`${this.where}: ${message}`);
  }
}

/** The activation a config names (hidden_act or hidden_activation), if `allowed` takes it. */
export function readActivation(
  f: ConfigFields,
  allowed: readonly Activation[],
  key = f.raw.hidden_act != null ? "hidden_act" : "hidden_activation",
  fallback = "silu",
): Activation {
  const name = String(f.raw[key] ?? fallback);
  const act: Activation | undefined =
    name === "silu" || name === "swish"
      ? "silu"
      : name === "gelu"
        ? "gelu"
        : name === "gelu_pytorch_tanh" || name === "gelu_new"
          ? "gelu_tanh"
          : name === "relu"
            ? "relu"
            : undefined;
  if (!act || !allowed.includes(act))
    f.fail(`${key} "${name}" is not supported (${allowed.map(activationName).join(", ")})`);
  return act;
}

function activationName(a: Activation): string {
  return a === "gelu_tanh" ? "gelu_pytorch_tanh" : a;
}

/** hidden size, heads, kv heads and head_dim (explicit or hidden / heads), checked against each other. */
export function readHeads(
  f: ConfigFields,
  kvKey = "num_key_value_heads",
): Pick<ModelConfig, "hiddenSize" | "numHeads" | "numKvHeads" | "headDim"> {
  const hiddenSize = f.int("hidden_size");
  const numHeads = f.int("num_attention_heads");
  const numKvHeads = f.int(kvKey, numHeads);
  if (numHeads % numKvHeads !== 0)
    f.fail(`num_attention_heads ${numHeads} is not a multiple of ${kvKey} ${numKvHeads}`);
  const headDim = f.raw.head_dim == null ? hiddenSize / numHeads : f.int("head_dim");
  if (!Number.isInteger(headDim))
    f.fail(`hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  return { hiddenSize, numHeads, numKvHeads, headDim };
}

/** One rotary setting (a rope_parameters object): its base, scaling rule and rotated dimensions. */
export function readRope(
  f: ConfigFields,
  params: RawConfig,
  headDim: number,
): Pick<ModelConfig, "ropeTheta" | "ropeScaling" | "rotaryDim"> {
  if (typeof params !== "object" || params === null)
    f.fail(`"rope_parameters" / "rope_scaling" must be an object`);
  // a key inside rope_parameters wins over the same key at the top level (older files), then the default
  const key = (name: string, fallback: number) => {
    const top = f.raw[name];
    return f.num(name, typeof top === "number" ? top : fallback, params);
  };
  const ropeTheta = key("rope_theta", 10000);
  const partial = key("partial_rotary_factor", 1);
  const rotaryDim = Math.floor(headDim * partial);
  if (rotaryDim % 2 !== 0 || rotaryDim <= 0 || rotaryDim > headDim)
    f.fail(`rotary dimension ${rotaryDim} (head_dim x partial_rotary_factor) must be even`);
  const type = String(params.rope_type ?? params.type ?? "default");
  const original = () => key("original_max_position_embeddings", NaN);
  let ropeScaling: RopeScaling;
  if (type === "default") ropeScaling = { type: "default" };
  else if (type === "linear") ropeScaling = { type: "linear", factor: f.num("factor", NaN, params) };
  else if (type === "llama3")
    ropeScaling = {
      type: "llama3",
      factor: f.num("factor", NaN, params),
      lowFreqFactor: f.num("low_freq_factor", NaN, params),
      highFreqFactor: f.num("high_freq_factor", NaN, params),
      originalMaxPositionEmbeddings: original(),
    };
  else if (type === "longrope") {
    // as transformers: factor = max_position_embeddings / original_max_position_embeddings and, unless
    // given, attention_factor = sqrt(1 + ln(factor) / ln(original)) (1 when factor <= 1)
    const orig = original();
    const factor = f.num("max_position_embeddings", NaN) / orig;
    const given = params.attention_factor;
    ropeScaling = {
      type: "longrope",
      shortFactor: f.numbers("short_factor", params, rotaryDim / 2),
      longFactor: f.numbers("long_factor", params, rotaryDim / 2),
      originalMaxPositionEmbeddings: orig,
      attentionFactor:
        typeof given === "number"
          ? given
          : factor <= 1
            ? 1
            : Math.sqrt(1 + Math.log(factor) / Math.log(orig)),
    };
  } else f.fail(`rope type "${type}" is not supported (default, linear, llama3, longrope)`);
  return { ropeTheta, ropeScaling, rotaryDim };
}

/** The rotary settings of a config: transformers >= 5 nests them in rope_parameters, older files use rope_theta + rope_scaling. */
export function readRotary(
  f: ConfigFields,
  headDim: number,
): Pick<ModelConfig, "ropeTheta" | "ropeScaling" | "rotaryDim"> {
  return readRope(f, (f.raw.rope_parameters ?? f.raw.rope_scaling ?? {}) as RawConfig, headDim);
}

/** layer_types, or the family's default pattern when the config predates it. */
export function readLayerTypes(
  f: ConfigFields,
  numLayers: number,
  fallback: (i: number) => AttentionKind,
): AttentionKind[] {
  const v = f.raw.layer_types;
  if (v == null) return Array.from({ length: numLayers }, (_, i) => fallback(i));
  if (
    !Array.isArray(v) ||
    v.length !== numLayers ||
    v.some((t) => t !== "full_attention" && t !== "sliding_attention")
  )
    f.fail(
      `"layer_types" must list "full_attention" or "sliding_attention" for each of the ${numLayers} layers`,
    );
  return v as AttentionKind[];
}

/**
 * The fields Llama-style configs share (Llama, Mistral, Qwen2/3, Phi-3, Gemma): heads, rotary, RMSNorm eps,
 * MLP width; `activations` the family accepts; tie_word_embeddings defaulting to `tiedByDefault`.
 */
export function readLlamaStyle(
  f: ConfigFields,
  family: string,
  activations: readonly Activation[],
  tiedByDefault: boolean,
): ModelConfig {
  const heads = readHeads(f);
  return {
    family,
    modelType: String(f.raw.model_type),
    ...heads,
    ...readRotary(f, heads.headDim),
    intermediateSize: f.int("intermediate_size"),
    numLayers: f.int("num_hidden_layers"),
    vocabSize: f.int("vocab_size"),
    normEps: f.num("rms_norm_eps", 1e-6),
    tieWordEmbeddings:
      typeof f.raw.tie_word_embeddings === "boolean" ? f.raw.tie_word_embeddings : tiedByDefault,
    hiddenAct: readActivation(f, activations),
    attentionScale: 1 / Math.sqrt(heads.headDim),
    raw: f.raw,
  };
}

/** A positive sliding_window, when the config sets one. */
export function slidingWindowOf(f: ConfigFields): number | undefined {
  const sw = f.raw.sliding_window;
  return typeof sw === "number" && sw > 0 ? sw : undefined;
}
