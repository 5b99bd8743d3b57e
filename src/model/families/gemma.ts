/**
 * Gemma 2 and Gemma 3 (text): (1 + w) RMSNorm before and after both blocks, GeGLU (tanh GELU),
 * embeddings scaled by sqrt(hidden_size), scores scaled by query_pre_attn_scalar^-1/2, sliding-window
 * layers as layer_types says. Gemma 2 soft-caps attention scores and the final logits; Gemma 3 norms q
 * and k per head and gives its sliding (local) layers their own rotary base.
 */
import { GptqError } from "../../util/errors.js";
import {
  ConfigFields,
  RawConfig,
  readLayerTypes,
  readLlamaStyle,
  readRope,
  slidingWindowOf,
} from "./fields.js";
import { LLAMA_GROUPS, LLAMA_LINEARS, LLAMA_TENSORS } from "./llama.js";
import { FamilySpec, ModelConfig, NormSpec } from "./types.js";

const SANDWICH: NormSpec[] = [
  { role: "attentionIn", module: "input_layernorm" },
  { role: "attentionOut", module: "post_attention_layernorm" },
  { role: "mlpIn", module: "pre_feedforward_layernorm" },
  { role: "mlpOut", module: "post_feedforward_layernorm" },
];

function gemmaCommon(f: ConfigFields, family: string, c: ModelConfig): ModelConfig {
  c.attentionScale = 1 / Math.sqrt(f.num("query_pre_attn_scalar", c.headDim));
  c.embedScale = Math.fround(Math.sqrt(c.hiddenSize));
  c.slidingWindow = slidingWindowOf(f);
  c.family = family;
  return c;
}

function parseGemma2(raw: RawConfig, where: string): ModelConfig {
  const f = new ConfigFields(raw, where);
  const c = gemmaCommon(f, "gemma2", readLlamaStyle(f, "gemma2", ["gelu_tanh"], true));
  // transformers' default before layer_types: even layers slide
  c.layerTypes = readLayerTypes(f, c.numLayers, (i) =>
    (i + 1) % 2 ? "sliding_attention" : "full_attention",
  );
  c.attentionSoftcap = f.optionalNum("attn_logit_softcapping");
  c.finalSoftcap = f.optionalNum("final_logit_softcapping");
  return c;
}

function parseGemma3(raw: RawConfig, where: string): ModelConfig {
  const f = new ConfigFields(raw, where);
  // rope_parameters holds one setting per layer type; older files give rope_theta + rope_local_base_freq
  const params = raw.rope_parameters as Record<string, unknown> | undefined;
  const perType = params && typeof params.full_attention === "object";
  const heads = { ...raw, rope_parameters: perType ? params.full_attention : params };
  const c = gemmaCommon(
    f,
    "gemma3",
    readLlamaStyle(new ConfigFields(heads, where), "gemma3", ["gelu_tanh"], true),
  );
  c.raw = raw;
  const pattern = typeof raw.sliding_window_pattern === "number" ? raw.sliding_window_pattern : 6;
  c.layerTypes = readLayerTypes(f, c.numLayers, (i) =>
    (i + 1) % pattern ? "sliding_attention" : "full_attention",
  );
  if (f.optionalNum("attn_logit_softcapping") || f.optionalNum("final_logit_softcapping"))
    throw new GptqError(`${where}: Gemma 3 with soft-capping is not supported`);
  c.localRopeTheta = perType
    ? readRope(f, params.sliding_attention as Record<string, unknown>, c.headDim).ropeTheta
    : f.num("rope_local_base_freq", 10000);
  return c;
}

const gemmaBase = {
  tensors: LLAMA_TENSORS,
  layout: () => "sequential" as const,
  norm: "rms_offset",
  linears: LLAMA_LINEARS,
  fused: [],
  groups: LLAMA_GROUPS,
  mlp: "gated",
  positions: "rope",
  // GELU(0) * 0 = 0: zero intermediate rows add nothing; the hidden size feeds (1 + w) norms
  paddable: { intermediate: true, hidden: false },
} as const;

export const gemma2: FamilySpec = {
  ...gemmaBase,
  name: "gemma2",
  modelTypes: ["gemma2"],
  summary:
    "Gemma 2: (1 + w) RMSNorm around both blocks, GeGLU, scaled embeddings, soft-capping, sliding window",
  parseConfig: parseGemma2,
  norms: () => SANDWICH,
};

export const gemma3: FamilySpec = {
  ...gemmaBase,
  name: "gemma3",
  modelTypes: ["gemma3_text"],
  summary: "Gemma 3 (text): Gemma 2's layout with q/k norms, local/global layers with their own rotary base",
  parseConfig: parseGemma3,
  norms: () => [
    ...SANDWICH,
    { role: "q", module: "self_attn.q_norm" },
    { role: "k", module: "self_attn.k_norm" },
  ],
};
