/**
 * Falcon. The 7B layout: one fused `query_key_value` with multi-query attention (all query heads, then
 * the one key head, then the one value head), attention and MLP in parallel off one LayerNorm (with
 * bias), a GELU MLP (dense_h_to_4h, dense_4h_to_h), rotary positions. The 40B/180B layout
 * (`new_decoder_architecture`): grouped kv heads, the fused rows ordered per kv group as that group's
 * query heads, its key head, its value head, and separate ln_attn / ln_mlp norms.
 */
import { ConfigFields, RawConfig, readRotary } from "./fields.js";
import { roleShape } from "./shapes.js";
import { FamilySpec, ModelConfig, NormSpec, Segment } from "./types.js";

function parseFalcon(raw: RawConfig, where: string): ModelConfig {
  const f = new ConfigFields(raw, where);
  if (raw.alibi === true) f.fail(`Falcon with ALiBi positions (alibi: true) is not supported`);
  const hiddenSize = f.int("hidden_size");
  const numHeads = f.int("num_attention_heads");
  const headDim = hiddenSize / numHeads;
  if (!Number.isInteger(headDim))
    f.fail(`hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  // as transformers: kv heads from num_kv_heads in the new layout or without multi_query, else one
  const numKvHeads =
    raw.new_decoder_architecture === true || raw.multi_query === false ? f.int("num_kv_heads", numHeads) : 1;
  if (numHeads % numKvHeads)
    f.fail(`num_attention_heads ${numHeads} is not a multiple of num_kv_heads ${numKvHeads}`);
  const act = String(raw.activation ?? "gelu");
  if (act !== "gelu") f.fail(`activation "${act}" is not supported (gelu)`);
  return {
    family: "falcon",
    modelType: "falcon",
    hiddenSize,
    intermediateSize: f.int("ffn_hidden_size", 4 * hiddenSize),
    numLayers: f.int("num_hidden_layers"),
    numHeads,
    numKvHeads,
    headDim,
    ...readRotary(f, headDim),
    vocabSize: f.int("vocab_size"),
    normEps: f.num("layer_norm_epsilon", 1e-5),
    tieWordEmbeddings: typeof raw.tie_word_embeddings === "boolean" ? raw.tie_word_embeddings : true,
    hiddenAct: "gelu",
    attentionScale: 1 / Math.sqrt(headDim),
    raw,
  };
}

/** The row layout of query_key_value (see the file comment; without multi_query: q, k, v per head). */
function qkvSegments(c: ModelConfig): Segment[] {
  const hd = c.headDim;
  const newLayout = c.raw.new_decoder_architecture === true;
  if (!newLayout && c.numKvHeads === 1)
    return (["q", "k", "v"] as const).map((part) => ({ part, from: 0, count: roleShape(c, part)[0] }));
  const perGroup = c.numHeads / c.numKvHeads;
  const out: Segment[] = [];
  for (let g = 0; g < c.numKvHeads; g++)
    out.push(
      { part: "q", from: g * perGroup * hd, count: perGroup * hd },
      { part: "k", from: g * hd, count: hd },
      { part: "v", from: g * hd, count: hd },
    );
  return out;
}

/** Only the old layout honours parallel_attn: false (attention, then the MLP); the new one is always parallel. */
function sequentialFalcon(c: ModelConfig): boolean {
  return c.raw.new_decoder_architecture !== true && c.raw.parallel_attn === false;
}

/** Two norms in the new layout (unless num_ln_in_parallel_attn is 1), one shared by both halves in 7B's. */
function falconNorms(c: ModelConfig): NormSpec[] {
  const raw = c.raw;
  if (sequentialFalcon(c))
    return [
      { role: "attentionIn", module: "input_layernorm" },
      { role: "mlpIn", module: "post_attention_layernorm" },
    ];
  const two = raw.new_decoder_architecture === true && (raw.num_ln_in_parallel_attn ?? 2) === 2;
  return two
    ? [
        { role: "attentionIn", module: "ln_attn" },
        { role: "mlpIn", module: "ln_mlp" },
      ]
    : [
        { role: "attentionIn", module: "input_layernorm" },
        { role: "mlpIn", module: "input_layernorm" },
      ];
}

export const falcon: FamilySpec = {
  name: "falcon",
  modelTypes: ["falcon"],
  summary:
    "Falcon: fused query_key_value (multi-query, or grouped kv in new_decoder_architecture), parallel attention + MLP, LayerNorm, GELU",
  parseConfig: parseFalcon,
  tensors: {
    layers: "transformer.h",
    embed: "transformer.word_embeddings.weight",
    finalNorm: "transformer.ln_f",
    lmHead: "lm_head",
  },
  layout: (c) => (sequentialFalcon(c) ? "sequential" : "parallel"),
  norm: "layer",
  norms: falconNorms,
  linears: [
    { name: "dense", module: "self_attention.dense", role: "o" },
    { name: "dense_h_to_4h", module: "mlp.dense_h_to_4h", role: "up" },
    { name: "dense_4h_to_h", module: "mlp.dense_4h_to_h", role: "down" },
  ],
  fused: [
    {
      name: "query_key_value",
      module: "self_attention.query_key_value",
      parts: ["q", "k", "v"],
      segments: qkvSegments,
    },
  ],
  groups: [
    { roles: ["q", "k", "v"], block: "attention" },
    { roles: ["o"], block: "attention" },
    { roles: ["up"], block: "mlp" },
    { roles: ["down"], block: "mlp" },
  ],
  mlp: "plain",
  positions: "rope",
  // the hidden size feeds LayerNorm (mean-centred: zero channels would not stay zero); GELU(0) = 0 would
  // allow padding dense_h_to_4h, which pad does not rewrite
  paddable: { intermediate: false, hidden: false },
};
