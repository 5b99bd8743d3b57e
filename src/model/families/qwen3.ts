/** Qwen3: Llama's layout with an RMSNorm on each query and key head (before rotary) and an explicit head_dim. */
import { ConfigFields, RawConfig, readLayerTypes, readLlamaStyle, slidingWindowOf } from "./fields.js";
import { LLAMA_FUSED, LLAMA_GROUPS, LLAMA_LINEARS, LLAMA_NORMS, LLAMA_TENSORS } from "./llama.js";
import { FamilySpec } from "./types.js";

export function parseQwen3(raw: RawConfig, where: string) {
  const f = new ConfigFields(raw, where);
  const c = readLlamaStyle(f, "qwen3", ["silu"], false);
  // as transformers: with use_sliding_window, layers from max_window_layers on use the window
  const windowOn = raw.use_sliding_window === true;
  const from = typeof raw.max_window_layers === "number" ? raw.max_window_layers : c.numLayers;
  c.layerTypes = readLayerTypes(f, c.numLayers, (i) =>
    windowOn && i >= from ? "sliding_attention" : "full_attention",
  );
  if (c.layerTypes.includes("sliding_attention")) c.slidingWindow = slidingWindowOf(f);
  return c;
}

export const qwen3: FamilySpec = {
  name: "qwen3",
  modelTypes: ["qwen3"],
  summary: "Qwen3: Llama's layout plus per-head q/k RMSNorm, explicit head_dim",
  parseConfig: parseQwen3,
  tensors: LLAMA_TENSORS,
  layout: () => "sequential",
  norm: "rms",
  norms: () => [
    ...LLAMA_NORMS,
    { role: "q", module: "self_attn.q_norm" },
    { role: "k", module: "self_attn.k_norm" },
  ],
  linears: LLAMA_LINEARS,
  fused: LLAMA_FUSED,
  groups: LLAMA_GROUPS,
  mlp: "gated",
  positions: "rope",
  paddable: { intermediate: true, hidden: false },
};
