/**
 * Qwen3-MoE: Qwen3's attention (per-head q/k RMSNorm, explicit head_dim) with a mixture-of-experts MLP:
 * a router `mlp.gate` picks the top num_experts_per_tok experts per token (weights renormalised with
 * norm_topk_prob); each expert is a SwiGLU MLP of moe_intermediate_size under mlp.experts.<e>.
 */
import { readExperts } from "./experts.js";
import { ConfigFields, RawConfig } from "./fields.js";
import { LLAMA_GROUPS, LLAMA_TENSORS } from "./llama.js";
import { ATTENTION_LINEARS } from "./mixtral.js";
import { parseQwen3, qwen3 } from "./qwen3.js";
import { FamilySpec } from "./types.js";

function parseQwen3Moe(raw: RawConfig, where: string) {
  const f = new ConfigFields(raw, where);
  const c = parseQwen3(raw, where);
  c.family = "qwen3_moe";
  // layers listed in mlp_only_layers, or off the decoder_sparse_step, would have a dense MLP instead
  const step = f.int("decoder_sparse_step", 1);
  const denseLayers = Array.isArray(raw.mlp_only_layers) ? raw.mlp_only_layers.length : 0;
  if (step !== 1 || denseLayers > 0)
    f.fail(
      "layers with a dense MLP (mlp_only_layers, decoder_sparse_step > 1) are not supported; every layer must be mixture-of-experts",
    );
  c.intermediateSize = f.int("moe_intermediate_size");
  c.experts = readExperts(f, raw.norm_topk_prob === true);
  return c;
}

export const qwen3Moe: FamilySpec = {
  name: "qwen3_moe",
  modelTypes: ["qwen3_moe"],
  summary: "Qwen3-MoE: Qwen3's attention (q/k RMSNorm), mixture-of-experts SwiGLU MLP (router `gate`, top-k)",
  parseConfig: parseQwen3Moe,
  tensors: LLAMA_TENSORS,
  layout: () => "sequential",
  norm: "rms",
  norms: qwen3.norms,
  linears: ATTENTION_LINEARS,
  fused: [],
  groups: LLAMA_GROUPS,
  mlp: "experts",
  experts: {
    router: "mlp.gate",
    expert: (e) => `mlp.experts.${e}`,
    linears: [
      { name: "gate_proj", role: "gate" },
      { name: "up_proj", role: "up" },
      { name: "down_proj", role: "down" },
    ],
  },
  positions: "rope",
  paddable: { intermediate: false, hidden: false },
};
