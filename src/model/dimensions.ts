/**
 * Which model dimension sits behind each side of a linear layer, and whether gptq-ts can pad it without
 * changing the function: what `check` needs to turn "pad in_features to 192" into a command, or into the
 * reason no padding can be offered. What can be padded is the family table's word (`paddable`): the MLP
 * intermediate of gated-MLP families, hidden_size of Llama, Mistral and Qwen2 (see padding.ts); never
 * the hidden size of a LayerNorm model.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { FixContext, ModelDimension } from "../kernels/fixes.js";
import { GptqError } from "../util/errors.js";
import { parseModelConfig } from "./config.js";
import { familyOf, rolesOfLayer } from "./families/index.js";
import { FamilySpec } from "./families/types.js";

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
  /** the family-table entry that reads it, when gptq quantize can */
  family?: FamilySpec;
  /** why quantize cannot, in words, when not */
  why?: string;
}

/** The model behind a checkpoint directory's config.json. */
export function modelFixFacts(dir: string): ModelFixFacts {
  const path = join(dir, "config.json");
  if (!existsSync(path)) return { modelType: "", why: `${dir} has no config.json` };
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch {
    return { modelType: "", why: `${path} is not valid JSON` };
  }
  const modelType = String(raw.model_type ?? "");
  try {
    return { modelType, family: familyOf(parseModelConfig(raw, path)) };
  } catch (e) {
    if (!(e instanceof GptqError)) throw e;
    return { modelType, why: e.message };
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
  const f = m.family;
  const hidden: ModelDimension =
    f?.norm === "layer" || LAYER_NORM.has(m.modelType)
      ? {
          name: "hidden_size",
          paddable: false,
          why: "LayerNorm takes the mean and variance over every hidden channel, so zero channels would change its output (subtracting the mean makes them non-zero)",
        }
      : f?.paddable.hidden
        ? { name: "hidden_size", paddable: true, padFlag: "--hidden-multiple" }
        : {
            name: "hidden_size",
            paddable: false,
            why: f
              ? `gptq pad pads hidden_size only where RMSNorm over zero channels stays exact and nothing else reads it (Llama, Mistral, Qwen2); not in ${m.modelType}`
              : (m.why ?? "gptq pad does not rewrite this model"),
          };
  const heads = (what: string): ModelDimension => ({
    name: what,
    paddable: false,
    why: "padding head_dim changes the 1/sqrt(head_dim) score scale and the rotary frequencies, and gptq pad does not add heads",
  });
  const falcon = m.modelType === "falcon";
  const intermediate: ModelDimension = f?.paddable.intermediate
    ? { name: "intermediate_size", paddable: true }
    : {
        name: falcon ? "ffn_hidden_size" : "the MLP intermediate size",
        paddable: false,
        why: f
          ? `gptq pad rewrites only separate gate_proj/up_proj/down_proj MLPs; ${[
              ...f.linears,
              ...(f.experts?.linears ?? []),
            ]
              .filter((l) => l.role === "up" || l.role === "down")
              .map((l) => l.name)
              .join(
                "/",
              )} of ${m.modelType} could be zero-padded in principle (the activation of 0 is 0), but pad does not do it`
          : (m.why ?? "gptq pad does not rewrite this model"),
      };
  // a family in the table says what each projection computes; other models go by the usual names
  const roles = f && rolesOfLayer(f, layer);
  if (roles) {
    const role = roles.length > 1 && roles.includes("q") ? "qkv" : roles[0];
    if (side === "in")
      return role === "o" ? heads("num_attention_heads x head_dim") : role === "down" ? intermediate : hidden;
    if (role === "o" || role === "down") return hidden;
    if (role === "gate" || role === "up") return intermediate;
    return heads(
      role === "q"
        ? "num_attention_heads x head_dim"
        : role === "qkv"
          ? "the query, key and value heads x head_dim"
          : "num_key_value_heads x head_dim",
    );
  }
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
    quantizable: m.family !== undefined,
    scheme,
    dimension: (layer, side) => layerDimension(m, layer, side),
    notQuantizableWhy: m.why,
    // tensor parallelism splits in_features of the projections back to the hidden size (o, down)
    rowParallel(layer) {
      const roles = m.family && rolesOfLayer(m.family, layer);
      return roles && roles.every((r) => r === "o" || r === "down");
    },
  };
}
