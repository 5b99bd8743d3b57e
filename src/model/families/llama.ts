/**
 * Llama and the families laid out like it (Mistral, Qwen2): pre-norm RMSNorm, rotary grouped-query
 * attention (q/k/v, then o), SwiGLU MLP (gate/up, then down). Its module names and true-sequential groups
 * are shared by Qwen3, Phi-3 and Gemma.
 */
import { ConfigFields, RawConfig, readLlamaStyle, slidingWindowOf } from "./fields.js";
import { concatenated } from "./shapes.js";
import { FamilySpec, FusedSpec, LinearSpec, NormSpec, SequentialGroup } from "./types.js";

export const LLAMA_LINEARS: readonly LinearSpec[] = [
  { name: "q_proj", module: "self_attn.q_proj", role: "q" },
  { name: "k_proj", module: "self_attn.k_proj", role: "k" },
  { name: "v_proj", module: "self_attn.v_proj", role: "v" },
  { name: "o_proj", module: "self_attn.o_proj", role: "o" },
  { name: "gate_proj", module: "mlp.gate_proj", role: "gate" },
  { name: "up_proj", module: "mlp.up_proj", role: "up" },
  { name: "down_proj", module: "mlp.down_proj", role: "down" },
];

/** q/k/v share the normed input, o reads the attention output, gate/up the normed residual, down their product */
export const LLAMA_GROUPS: readonly SequentialGroup[] = [
  { roles: ["q", "k", "v"], block: "attention" },
  { roles: ["o"], block: "attention" },
  { roles: ["gate", "up"], block: "mlp" },
  { roles: ["down"], block: "mlp" },
];

/** Phi-3's fused projections, which `gptq merge` also writes: parts concatenated along out_features. */
export const LLAMA_FUSED: readonly FusedSpec[] = [
  concatenated("qkv_proj", "self_attn.qkv_proj", ["q", "k", "v"]),
  concatenated("gate_up_proj", "mlp.gate_up_proj", ["gate", "up"]),
];

export const LLAMA_TENSORS: FamilySpec["tensors"] = {
  layers: "model.layers",
  embed: "model.embed_tokens.weight",
  finalNorm: "model.norm",
  lmHead: "lm_head",
};

export const LLAMA_NORMS: NormSpec[] = [
  { role: "attentionIn", module: "input_layernorm" },
  { role: "mlpIn", module: "post_attention_layernorm" },
];

function parseLlama(raw: RawConfig, where: string) {
  const f = new ConfigFields(raw, where);
  const c = readLlamaStyle(f, "llama", ["silu"], false);
  // Qwen2 carries a sliding_window value but applies it only with use_sliding_window
  const windowOn = c.modelType === "qwen2" ? raw.use_sliding_window === true : true;
  if (windowOn) c.slidingWindow = slidingWindowOf(f);
  return c;
}

export const llama: FamilySpec = {
  name: "llama",
  modelTypes: ["llama", "mistral", "qwen2"],
  summary:
    "Llama, Mistral, Qwen2: RMSNorm, rotary GQA (q/k/v bias in Qwen2, sliding window in Mistral), SwiGLU",
  parseConfig: parseLlama,
  tensors: LLAMA_TENSORS,
  layout: () => "sequential",
  norm: "rms",
  norms: () => LLAMA_NORMS,
  linears: LLAMA_LINEARS,
  fused: LLAMA_FUSED,
  groups: LLAMA_GROUPS,
  mlp: "gated",
  positions: "rope",
  paddable: { intermediate: true, hidden: true },
};
