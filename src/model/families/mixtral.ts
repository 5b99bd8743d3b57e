/**
 * Mixtral: Llama's attention (rotary GQA, RMSNorm, optional sliding window) with a mixture-of-experts MLP:
 * a router `block_sparse_moe.gate` picks the top 2 (num_experts_per_tok) of 8 experts per token, softmax
 * weights renormalised over those picked; each expert is a SwiGLU MLP w2(silu(w1 x) * w3 x).
 */
import { readExperts } from "./experts.js";
import { ConfigFields, RawConfig, readLlamaStyle, slidingWindowOf } from "./fields.js";
import { LLAMA_GROUPS, LLAMA_LINEARS, LLAMA_NORMS, LLAMA_TENSORS } from "./llama.js";
import { FamilySpec, LinearSpec } from "./types.js";

/** q/k/v/o: the projections a mixture-of-experts layer shares between tokens */
export const ATTENTION_LINEARS: readonly LinearSpec[] = LLAMA_LINEARS.filter((l) =>
  ["q", "k", "v", "o"].includes(l.role),
);

function parseMixtral(raw: RawConfig, where: string) {
  const f = new ConfigFields(raw, where);
  const c = readLlamaStyle(f, "mixtral", ["silu"], false);
  c.slidingWindow = slidingWindowOf(f);
  c.experts = readExperts(f, true);
  return c;
}

export const mixtral: FamilySpec = {
  name: "mixtral",
  modelTypes: ["mixtral"],
  summary:
    "Mixtral: Llama's attention, mixture-of-experts SwiGLU MLP (router `gate`, experts w1/w3/w2, top-k)",
  parseConfig: parseMixtral,
  tensors: LLAMA_TENSORS,
  layout: () => "sequential",
  norm: "rms",
  norms: () => LLAMA_NORMS,
  linears: ATTENTION_LINEARS,
  fused: [],
  groups: LLAMA_GROUPS,
  mlp: "experts",
  experts: {
    router: "block_sparse_moe.gate",
    expert: (e) => `block_sparse_moe.experts.${e}`,
    linears: [
      { name: "w1", role: "gate" },
      { name: "w3", role: "up" },
      { name: "w2", role: "down" },
    ],
  },
  positions: "rope",
  paddable: { intermediate: true, hidden: false },
};
