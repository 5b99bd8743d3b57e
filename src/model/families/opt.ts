/**
 * OPT, the GPTQ paper's family: pre-LayerNorm (with bias), learned absolute positions (row = position + 2),
 * attention and a ReLU MLP (fc1, fc2), biases on every projection.
 */
import { ConfigFields, RawConfig, readActivation } from "./fields.js";
import { FamilySpec, ModelConfig } from "./types.js";

/** OPT's learned position table starts 2 rows in (a fairseq legacy: rows 0 and 1 were padding) */
const POSITION_OFFSET = 2;

function parseOpt(raw: RawConfig, where: string): ModelConfig {
  const f = new ConfigFields(raw, where);
  const hiddenSize = f.int("hidden_size");
  const numHeads = f.int("num_attention_heads");
  const headDim = hiddenSize / numHeads;
  if (!Number.isInteger(headDim))
    f.fail(`hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  // OPT-350m projects embeddings in and out and norms after each block: a different layout
  if (raw.do_layer_norm_before === false)
    f.fail(`OPT with do_layer_norm_before false (post-norm, as OPT-350m) is not supported`);
  if (raw.word_embed_proj_dim != null && raw.word_embed_proj_dim !== hiddenSize)
    f.fail(
      `word_embed_proj_dim ${JSON.stringify(raw.word_embed_proj_dim)} differs from hidden_size ${hiddenSize} (OPT-350m's projections are not supported)`,
    );
  if (raw.layer_norm_elementwise_affine === false)
    f.fail(`layer_norm_elementwise_affine false is not supported`);
  return {
    family: "opt",
    modelType: "opt",
    hiddenSize,
    intermediateSize: f.int("ffn_dim"),
    numLayers: f.int("num_hidden_layers"),
    numHeads,
    numKvHeads: numHeads,
    headDim,
    rotaryDim: 0,
    vocabSize: f.int("vocab_size"),
    normEps: 1e-5, // nn.LayerNorm's default, which OPT keeps
    ropeTheta: 0,
    ropeScaling: { type: "default" },
    tieWordEmbeddings: typeof raw.tie_word_embeddings === "boolean" ? raw.tie_word_embeddings : true,
    hiddenAct: readActivation(f, ["relu", "gelu"], "activation_function", "relu"),
    attentionScale: 1 / Math.sqrt(headDim),
    learnedPositions: { offset: POSITION_OFFSET, maxPositions: f.int("max_position_embeddings") },
    raw,
  };
}

export const opt: FamilySpec = {
  name: "opt",
  modelTypes: ["opt"],
  summary: "OPT: pre-LayerNorm, learned positions (offset 2), ReLU fc1/fc2, biases",
  parseConfig: parseOpt,
  tensors: {
    layers: "model.decoder.layers",
    embed: "model.decoder.embed_tokens.weight",
    positions: "model.decoder.embed_positions.weight",
    finalNorm: "model.decoder.final_layer_norm",
    lmHead: "lm_head",
  },
  layout: () => "sequential",
  norm: "layer",
  norms: () => [
    { role: "attentionIn", module: "self_attn_layer_norm" },
    { role: "mlpIn", module: "final_layer_norm" },
  ],
  linears: [
    { name: "q_proj", module: "self_attn.q_proj", role: "q" },
    { name: "k_proj", module: "self_attn.k_proj", role: "k" },
    { name: "v_proj", module: "self_attn.v_proj", role: "v" },
    { name: "out_proj", module: "self_attn.out_proj", role: "o" },
    { name: "fc1", module: "fc1", role: "up" },
    { name: "fc2", module: "fc2", role: "down" },
  ],
  fused: [],
  groups: [
    { roles: ["q", "k", "v"], block: "attention" },
    { roles: ["o"], block: "attention" },
    { roles: ["up"], block: "mlp" },
    { roles: ["down"], block: "mlp" },
  ],
  mlp: "plain",
  positions: "learned",
  paddable: { intermediate: false, hidden: false },
};
