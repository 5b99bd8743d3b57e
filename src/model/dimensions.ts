/**
 * Which model dimension sits behind each side of a linear layer, and whether gptq-ts can pad it without
 * changing the function: what `check` needs to turn "pad in_features to 192" into a command, or into the
 * reason no padding can be offered. Only the MLP intermediate of a Llama-family model (Llama, Mistral,
 * Qwen2) can be padded (`gptq pad`, `quantize --pad auto`); see padding.ts.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { FixContext, ModelDimension } from "../kernels/fixes.js";
import { GptqError } from "../util/errors.js";
import { parseLlamaConfig } from "./config.js";

/** Families whose blocks normalise with LayerNorm (mean and variance) rather than RMSNorm. */
const LAYER_NORM = new Set([
  "falcon",
  "opt",
  "gpt2",
  "gpt_neox",
  "gptj",
  "bloom",
  "phi",
  "mpt",
  "gpt_bigcode",
]);

const INTO_BLOCK = new Set([
  "q_proj",
  "k_proj",
  "v_proj",
  "qkv_proj",
  "query_key_value",
  "c_attn",
  "Wqkv",
  "gate_proj",
  "up_proj",
  "gate_up_proj",
  "fc1",
  "dense_h_to_4h",
  "w1",
  "w3",
  "c_fc",
]);
const OUT_OF_ATTENTION = new Set(["o_proj", "out_proj", "dense", "wo", "c_proj", "out_proj"]);
const OUT_OF_MLP = new Set(["down_proj", "fc2", "dense_4h_to_h", "w2"]);
const MLP_UP = new Set(["gate_proj", "up_proj", "gate_up_proj", "fc1", "dense_h_to_4h", "w1", "w3", "c_fc"]);

export interface ModelFixFacts {
  modelType: string;
  /** gptq quantize and gptq pad take this model (a Llama-family config) */
  llamaFamily: boolean;
  /** why not, in words, when not */
  why?: string;
}

/** The model behind a checkpoint directory's config.json. */
export function modelFixFacts(dir: string): ModelFixFacts {
  const path = join(dir, "config.json");
  if (!existsSync(path)) return { modelType: "", llamaFamily: false, why: `${dir} has no config.json` };
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch {
    return { modelType: "", llamaFamily: false, why: `${path} is not valid JSON` };
  }
  const modelType = String(raw.model_type ?? "");
  try {
    parseLlamaConfig(raw, path);
    return { modelType, llamaFamily: true };
  } catch (e) {
    if (!(e instanceof GptqError)) throw e;
    return {
      modelType,
      llamaFamily: false,
      why: `gptq quantize and gptq pad take Llama, Mistral and Qwen2 models only (${modelType ? `this is model_type "${modelType}"` : e.message})`,
    };
  }
}

/** The dimension behind `side` of the linear `layer` in a model of this type. */
export function layerDimension(
  m: ModelFixFacts,
  layer: string,
  side: "in" | "out",
): ModelDimension | undefined {
  const last = layer.split(".").pop() ?? layer;
  // RMSNorm over zero channels is kept exact by gptq pad --hidden-multiple (eps and norm weights rescaled);
  // LayerNorm subtracts the mean, which turns the zero channels non-zero
  const hidden: ModelDimension = LAYER_NORM.has(m.modelType)
    ? {
        name: "hidden_size",
        paddable: false,
        why: "LayerNorm takes the mean and variance over every hidden channel, so zero channels would change its output (subtracting the mean makes them non-zero)",
      }
    : m.llamaFamily
      ? { name: "hidden_size", paddable: true, padFlag: "--hidden-multiple" }
      : { name: "hidden_size", paddable: false, why: m.why ?? "gptq pad does not rewrite this model" };
  const heads = (what: string): ModelDimension => ({
    name: what,
    paddable: false,
    why: "padding head_dim changes the 1/sqrt(head_dim) score scale and the rotary frequencies, and gptq pad does not add heads",
  });
  const falcon = m.modelType === "falcon";
  const intermediate: ModelDimension = m.llamaFamily
    ? { name: "intermediate_size", paddable: true }
    : {
        name: falcon ? "ffn_hidden_size" : "the MLP intermediate size",
        paddable: false,
        why: falcon
          ? "gptq pad refuses Falcon: it rewrites only Llama-family MLPs (gate_proj/up_proj/down_proj); Falcon's dense_h_to_4h/dense_4h_to_h could be zero-padded in principle (GELU(0) = 0), but pad does not do it"
          : (m.why ?? "gptq pad does not rewrite this model"),
      };
  if (side === "in" && INTO_BLOCK.has(last)) return hidden;
  if (side === "out" && (OUT_OF_ATTENTION.has(last) || OUT_OF_MLP.has(last))) return hidden;
  if (side === "out" && MLP_UP.has(last)) return intermediate;
  if (side === "in" && OUT_OF_MLP.has(last)) return intermediate;
  if (side === "out" && last === "q_proj") return heads("num_attention_heads x head_dim");
  if (side === "out" && (last === "k_proj" || last === "v_proj"))
    return heads("num_key_value_heads x head_dim");
  if (side === "out" && ["qkv_proj", "query_key_value", "c_attn", "Wqkv"].includes(last))
    return heads("the query, key and value heads x head_dim");
  if (side === "in" && OUT_OF_ATTENTION.has(last)) return heads("num_attention_heads x head_dim");
  return undefined;
}

/** The context `check` renders fixes in, for the checkpoint `dir`. */
export function fixContext(dir: string, quantized: boolean, scheme: FixContext["scheme"]): FixContext {
  const m = modelFixFacts(dir);
  return {
    dir,
    quantized,
    quantizable: m.llamaFamily,
    scheme,
    dimension: (layer, side) => layerDimension(m, layer, side),
    notQuantizableWhy: m.why,
  };
}
