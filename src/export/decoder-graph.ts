/**
 * A Llama-family decoder (Llama, Mistral, Qwen2) as an ONNX graph, with the inputs and outputs
 * transformers.js and onnxruntime-genai feed and read:
 *   input_ids int64 [batch, seq], attention_mask int64 [batch, past + seq], position_ids int64 [batch, seq],
 *   past_key_values.N.key / .value float [batch, kv_heads, past, head_dim]
 *   -> logits float [batch, seq, vocab], present.N.key / .value float [batch, kv_heads, past + seq, head_dim]
 * Quantized projections are `com.microsoft` MatMulNBits nodes; everything else is standard ONNX
 * (opset 17) in fp32: RMSNorm from its parts, rotary embeddings from position_ids, grouped-query
 * attention with a causal (and sliding-window) mask and the padding mask, SwiGLU.
 */
import { Checkpoint } from "../io/checkpoint.js";
import { readFloatTensor } from "../io/finite.js";
import { layerShape, readLayer } from "../transform/layers.js";
import { CheckpointFormat } from "../formats/types.js";
import { GptqError } from "../util/errors.js";
import { GraphBuilder } from "./onnx-graph.js";
import { attr } from "../io/onnx-proto.js";
import { matMulNBits, toMatMulNBits } from "./matmul-nbits.js";
import {
  DecoderConfig,
  FUSED_LINEARS,
  LINEAR_MODULE,
  LinearName,
  inverseFrequencies,
  linearShapes,
} from "./model-view.js";

export const OPSET = 17;

/** Graph input and output names, as transformers.js and onnxruntime-genai spell them. */
export const IO_NAMES = {
  inputIds: "input_ids",
  attentionMask: "attention_mask",
  positionIds: "position_ids",
  logits: "logits",
  pastKey: (i: number) => `past_key_values.${i}.key`,
  pastValue: (i: number) => `past_key_values.${i}.value`,
  presentKey: (i: number) => `present.${i}.key`,
  presentValue: (i: number) => `present.${i}.value`,
};

export interface DecoderGraphOptions {
  /** MatMulNBits accuracy_level: 0 = fp32 activations (exact), 4 = int8 activations (faster on CPUs) */
  accuracyLevel?: number;
}

export interface DecoderGraphSummary {
  /** projections written as MatMulNBits (fused ones count once) */
  quantized: number;
  /** projections written as fp32 Gemm (lm_head included) */
  dense: number;
  /** quantized projections whose rows were reordered by g_idx (act-order) or padded to whole blocks */
  reordered: number;
  /** the code widths MatMulNBits stores, by the checkpoint's bits ("3 -> 4") when they differ */
  widened: string[];
}

/** The lowest float32 (transformers fills masked scores with it: a fully masked row stays finite). */
const FLOAT32_MIN = -3.4028234663852886e38;

export function buildDecoderGraph(
  g: GraphBuilder,
  c: DecoderConfig,
  ckpt: Checkpoint,
  opts: DecoderGraphOptions = {},
): DecoderGraphSummary {
  const store = ckpt.store;
  const D = c.hiddenSize;
  const { numHeads: H, numKvHeads: KV, headDim: hd } = c;
  const summary: DecoderGraphSummary = { quantized: 0, dense: 0, reordered: 0, widened: [] };
  const quantized = new Map(ckpt.layers.map((l) => [l.name, l]));

  const inputIds = g.input(IO_NAMES.inputIds, "INT64", ["batch_size", "sequence_length"]);
  const attentionMask = g.input(IO_NAMES.attentionMask, "INT64", ["batch_size", "total_sequence_length"]);
  const positionIds = g.input(IO_NAMES.positionIds, "INT64", ["batch_size", "sequence_length"]);
  g.output(IO_NAMES.logits, "FLOAT", ["batch_size", "sequence_length", c.vocabSize]);

  /** shape [..., n] of a projection's output from its input x [..., K] */
  const outShape = (x: string, n: number) =>
    g.memoized(`outshape:${x}:${n}`, () =>
      g.op(
        "Concat",
        [g.memoized(`lead:${x}`, () => g.op("Shape", [x], { end: attr.int(-1) })), g.int64([n])],
        {
          axis: attr.int(0),
        },
      ),
    );

  /** x [..., K] -> [..., N] through the projection stored at `prefix` (quantized or not) */
  const linear = (x: string, prefix: string, N: number, K: number): string => {
    const info = quantized.get(prefix);
    const bias = store.has(`${prefix}.bias`) ? readFloatTensor(store, `${prefix}.bias`, [N]) : undefined;
    let y: string;
    if (info) {
      if (info.outFeatures !== N || info.inFeatures !== K)
        throw new GptqError(
          `${ckpt.dir}: ${prefix} is ${info.outFeatures} x ${info.inFeatures} (out x in), config.json implies ${N} x ${K}`,
        );
      const q = readLayer(store, ckpt.format as CheckpointFormat, prefix, layerShape(ckpt, info));
      const w = toMatMulNBits(q);
      y = matMulNBits(g, x, prefix, w, opts.accuracyLevel ?? 0);
      if (w.rows) summary.reordered++;
      if (w.bits !== q.bits && !summary.widened.includes(`${q.bits} -> ${w.bits}`))
        summary.widened.push(`${q.bits} -> ${w.bits}`);
      summary.quantized++;
    } else {
      const weight = readFloatTensor(store, `${prefix}.weight`, [N, K]);
      y = dense(x, g.initializer(`${prefix}.weight`, "FLOAT", [N, K], weight), N, K, prefix);
    }
    return bias ? g.op("Add", [y, g.initializer(`${prefix}.bias`, "FLOAT", [N], bias)]) : y;
  };

  /** x [..., K] times weight^T (weight [N, K] as stored, so a tied embedding table serves as is) */
  const dense = (x: string, weight: string, N: number, K: number, prefix: string): string => {
    summary.dense++;
    const flat = g.op("Reshape", [x, g.int64([-1, K])]);
    const y = g.op("Gemm", [flat, weight], { transB: attr.int(1) }, { name: `${prefix}/Gemm` });
    return g.op("Reshape", [y, outShape(x, N)]);
  };

  const rmsNorm = (x: string, weightName: string): string => {
    const w = g.initializer(weightName, "FLOAT", [D], readFloatTensor(store, weightName, [D]));
    const meanSquare = g.op("ReduceMean", [g.op("Mul", [x, x])], {
      axes: attr.ints([-1]),
      keepdims: attr.int(1),
    });
    const inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [meanSquare, g.float(c.normEps)])])]);
    return g.op("Mul", [g.op("Mul", [x, inv]), w]);
  };

  // --- shared by every layer: rotary cos/sin from position_ids, and the attention mask
  g.scope = "/model/rotary";
  const inv = inverseFrequencies(c.rotaryDim, c.ropeTheta, c.ropeScaling);
  const positions = g.op("Unsqueeze", [g.op("Cast", [positionIds], { to: attr.int(1) }), g.int64([-1])]);
  const freqs = g.op("Mul", [positions, g.initializer("model.rotary.inv_freq", "FLOAT", [inv.length], inv)]);
  const both = (f: string) =>
    g.op("Unsqueeze", [g.op("Concat", [f, f], { axis: attr.int(-1) }), g.int64([1])]); // [B, 1, S, rot]
  const cos = both(g.op("Cos", [freqs]));
  const sin = both(g.op("Sin", [freqs]));

  g.scope = "/model/mask";
  const seqLen = g.op("Gather", [g.op("Shape", [inputIds]), g.int64([1], true)]);
  const totalLen = g.op("Gather", [g.op("Shape", [attentionMask]), g.int64([1], true)]);
  const queryPos = g.op("Range", [g.op("Sub", [totalLen, seqLen]), totalLen, g.int64([1], true)]); // [S]
  const keyPos = g.op("Range", [g.int64([0], true), totalLen, g.int64([1], true)]); // [T]
  const queryCol = g.op("Unsqueeze", [queryPos, g.int64([1])]); // [S, 1]
  let allowed = g.op("LessOrEqual", [keyPos, queryCol]); // [S, T]: causal
  if (c.slidingWindow !== undefined)
    allowed = g.op("And", [
      allowed,
      g.op("Greater", [keyPos, g.op("Sub", [queryCol, g.int64([c.slidingWindow], true)])]),
    ]);
  const padding = g.op("Unsqueeze", [g.op("Cast", [attentionMask], { to: attr.int(9) }), g.int64([1, 2, 3])]);
  // [B, 1, 1, S, T]: scores are laid out [B, kv_heads, heads per kv head, S, T]
  allowed = g.op("And", [allowed, padding]);

  /** [B, S, heads * hd] -> [B, heads, S, hd] */
  const heads = (x: string, n: number) =>
    g.op("Transpose", [g.op("Reshape", [x, g.int64([0, 0, n, hd])])], { perm: attr.ints([0, 2, 1, 3]) });
  /** rotate_half rotary embedding of the first rotaryDim values of each head of x [B, n, S, hd] */
  const rotate = (x: string): string => {
    const slice = (from: number, to: number) =>
      g.op("Slice", [x, g.int64([from]), g.int64([to]), g.int64([-1])]);
    const half = c.rotaryDim / 2;
    const x1 = slice(0, half);
    const x2 = slice(half, c.rotaryDim);
    const rotated = g.op("Concat", [g.op("Neg", [x2]), x1], { axis: attr.int(-1) });
    const rot = c.rotaryDim === hd ? x : slice(0, c.rotaryDim);
    const out = g.op("Add", [g.op("Mul", [rot, cos]), g.op("Mul", [rotated, sin])]);
    return c.rotaryDim === hd ? out : g.op("Concat", [out, slice(c.rotaryDim, hd)], { axis: attr.int(-1) });
  };

  // --- the decoder
  g.scope = "/model/embed_tokens";
  const embedding = g.initializer(
    "model.embed_tokens.weight",
    "FLOAT",
    [c.vocabSize, D],
    readFloatTensor(store, "model.embed_tokens.weight", [c.vocabSize, D]),
  );
  let h = g.op("Gather", [embedding, inputIds]);
  const shapes = linearShapes(c);
  for (let i = 0; i < c.numLayers; i++) {
    const prefix = `model.layers.${i}`;
    g.scope = `/model/layers.${i}`;
    const projections = (x: string, names: readonly LinearName[]): Record<string, string> => {
      const out: Record<string, string> = {};
      for (const f of FUSED_LINEARS) {
        if (!f.parts.every((p) => names.includes(p))) continue;
        const fused = `${prefix}.${f.module}`;
        if (!quantized.has(fused) && !store.has(`${fused}.weight`)) continue;
        const both = f.parts.find((p) => {
          const part = `${prefix}.${LINEAR_MODULE[p]}`;
          return quantized.has(part) || store.has(`${part}.weight`);
        });
        if (both)
          throw new GptqError(
            `${ckpt.dir}: both ${fused} and ${prefix}.${LINEAR_MODULE[both]} are stored; a projection is either fused or separate`,
          );
        const sizes = f.parts.map((p) => shapes[p][0]);
        const y = linear(
          x,
          fused,
          sizes.reduce((a, b) => a + b),
          shapes[f.parts[0]][1],
        );
        const parts = g.opN("Split", [y, g.int64(sizes)], sizes.length, { axis: attr.int(-1) });
        f.parts.forEach((p, j) => (out[p] = parts[j]));
      }
      for (const name of names)
        out[name] ??= linear(x, `${prefix}.${LINEAR_MODULE[name]}`, shapes[name][0], shapes[name][1]);
      return out;
    };

    const x = rmsNorm(h, `${prefix}.input_layernorm.weight`);
    const { q_proj, k_proj, v_proj } = projections(x, ["q_proj", "k_proj", "v_proj"]);
    const q = rotate(heads(q_proj, H));
    const key = g.op(
      "Concat",
      [g.input(IO_NAMES.pastKey(i), "FLOAT", pastDims(c)), rotate(heads(k_proj, KV))],
      {
        axis: attr.int(2),
      },
      { output: IO_NAMES.presentKey(i) },
    );
    const value = g.op(
      "Concat",
      [g.input(IO_NAMES.pastValue(i), "FLOAT", pastDims(c)), heads(v_proj, KV)],
      {
        axis: attr.int(2),
      },
      { output: IO_NAMES.presentValue(i) },
    );
    g.output(key, "FLOAT", presentDims(c));
    g.output(value, "FLOAT", presentDims(c));
    // grouped-query attention without repeating keys: query head h = kv * group + j reads kv head kv
    const q5 = g.op("Reshape", [q, g.int64([0, KV, H / KV, -1, hd])]); // [B, KV, group, S, hd]
    const k5 = g.op("Unsqueeze", [key, g.int64([2])]); // [B, KV, 1, T, hd]
    const v5 = g.op("Unsqueeze", [value, g.int64([2])]);
    const scores = g.op("Mul", [
      g.op("MatMul", [q5, g.op("Transpose", [k5], { perm: attr.ints([0, 1, 2, 4, 3]) })]),
      g.float(1 / Math.sqrt(hd)),
    ]);
    const probs = g.op("Softmax", [g.op("Where", [allowed, scores, g.float(FLOAT32_MIN)])], {
      axis: attr.int(-1),
    });
    const context = g.op("Reshape", [
      g.op("Transpose", [g.op("Reshape", [g.op("MatMul", [probs, v5]), g.int64([0, H, -1, hd])])], {
        perm: attr.ints([0, 2, 1, 3]),
      }),
      g.int64([0, 0, H * hd]),
    ]);
    const { o_proj } = projections(context, ["o_proj"]);
    h = g.op("Add", [h, o_proj]);

    const y = rmsNorm(h, `${prefix}.post_attention_layernorm.weight`);
    const { gate_proj, up_proj } = projections(y, ["gate_proj", "up_proj"]);
    const act = g.op("Mul", [g.op("Mul", [gate_proj, g.op("Sigmoid", [gate_proj])]), up_proj]);
    const { down_proj } = projections(act, ["down_proj"]);
    h = g.op("Add", [h, down_proj]);
  }

  g.scope = "/model/norm";
  const normed = rmsNorm(h, "model.norm.weight");
  g.scope = "/lm_head";
  // a checkpoint without lm_head.weight ties it to the embeddings, as the project's forward reads it
  let logits: string;
  if (quantized.has("lm_head") || (!c.tieWordEmbeddings && store.has("lm_head.weight")))
    logits = linear(normed, "lm_head", c.vocabSize, D);
  else logits = dense(normed, embedding, c.vocabSize, D, "lm_head");
  g.op("Identity", [logits], undefined, { output: IO_NAMES.logits });
  return summary;
}

function pastDims(c: DecoderConfig): (number | string)[] {
  return ["batch_size", c.numKvHeads, "past_sequence_length", c.headDim];
}

function presentDims(c: DecoderConfig): (number | string)[] {
  return ["batch_size", c.numKvHeads, "total_sequence_length", c.headDim];
}
