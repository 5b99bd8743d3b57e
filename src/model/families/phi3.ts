/**
 * Phi-3: Llama's layout as published fused: `qkv_proj` (q, k, v concatenated) and `gate_up_proj` (gate,
 * then up); long-rope scaling (short and long per-frequency factors) in its long-context models.
 */
import { ConfigFields, RawConfig, readLlamaStyle, slidingWindowOf } from "./fields.js";
import { LLAMA_FUSED, LLAMA_GROUPS, LLAMA_LINEARS, LLAMA_NORMS, LLAMA_TENSORS } from "./llama.js";
import { FamilySpec } from "./types.js";

function parsePhi3(raw: RawConfig, where: string) {
  const f = new ConfigFields(raw, where);
  const c = readLlamaStyle(f, "phi3", ["silu"], false);
  c.slidingWindow = slidingWindowOf(f);
  return c;
}

export const phi3: FamilySpec = {
  name: "phi3",
  modelTypes: ["phi3"],
  summary: "Phi-3: fused qkv_proj and gate_up_proj (quantized and written fused), long-rope scaling",
  parseConfig: parsePhi3,
  tensors: LLAMA_TENSORS,
  layout: () => "sequential",
  norm: "rms",
  norms: () => LLAMA_NORMS,
  linears: LLAMA_LINEARS,
  fused: LLAMA_FUSED,
  groups: LLAMA_GROUPS,
  mlp: "gated",
  positions: "rope",
  // gptq pad rewrites separate gate_proj/up_proj tensors only
  paddable: { intermediate: false, hidden: false },
};
