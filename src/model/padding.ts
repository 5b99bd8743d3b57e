/**
 * Zero-padding that keeps a model's function exactly: the MLP intermediate dimension (of the families
 * whose table entry allows it). Extra gate/up rows are zero, so their outputs are act(0) * 0 = 0, and the
 * matching extra down
 * columns are zero, so those zeros add nothing. Other dimensions cannot be padded this way: hidden_size
 * feeds RMSNorm (its mean runs over every channel, so zero channels change it) and the head dimension
 * sets the attention scale and the rotary frequencies; pad-plan.ts says so and names what would fit.
 * Here: the padding of tensors and of a loaded model's layers in memory (transform/pad.ts writes a padded
 * checkpoint).
 */
import { DTYPE_BYTES } from "../tensor/dtype.js";
import { Tensor, bytesOf, viewAs } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import { DecoderLayer, DecoderModel } from "./decoder.js";
import { DenseLinear } from "../backend/cpu/linear.js";

/** A [rows, cols] tensor with zero rows appended to `newRows` (any dtype: zero bits are zero). */
export function padRows(t: Tensor, newRows: number): Tensor {
  const rows = t.shape[0];
  const cols = t.shape.length === 1 ? 1 : t.shape[1];
  if (newRows < rows) throw new GptqError(`cannot pad ${rows} rows down to ${newRows}`);
  const size = DTYPE_BYTES[t.dtype];
  const out = new Uint8Array(new ArrayBuffer(newRows * cols * size));
  out.set(bytesOf(t.data));
  return {
    dtype: t.dtype,
    shape: t.shape.length === 1 ? [newRows] : [newRows, cols],
    data: viewAs(t.dtype, out),
  };
}

/** A [rows, cols] tensor with zero columns appended to `newCols`. */
export function padCols(t: Tensor, newCols: number): Tensor {
  const [rows, cols] = t.shape;
  if (newCols < cols) throw new GptqError(`cannot pad ${cols} columns down to ${newCols}`);
  const size = DTYPE_BYTES[t.dtype];
  const src = bytesOf(t.data);
  const out = new Uint8Array(new ArrayBuffer(rows * newCols * size));
  for (let r = 0; r < rows; r++)
    out.set(src.subarray(r * cols * size, (r + 1) * cols * size), r * newCols * size);
  return { dtype: t.dtype, shape: [rows, newCols], data: viewAs(t.dtype, out) };
}

/**
 * Pads a loaded model's MLP intermediate in memory (the same zeros `padCheckpoint` writes), so layers can
 * be quantized at a packable size. Changes `model.config.intermediateSize`; every layer must be dense.
 */
export function padModelIntermediate(model: DecoderModel, to: number): void {
  const from = model.config.intermediateSize;
  if (to === from) return;
  model.layers.forEach((layer, i) => (model.layers[i] = padLayerIntermediate(layer, from, to)));
  model.config = model.layers[0].config;
}

/**
 * One decoder layer with its MLP zero-padded from `from` to `to` intermediate features (see
 * padModelIntermediate): zero rows after each gate and up part (a fused gate_up_proj pads both halves),
 * zero columns after down's.
 */
export function padLayerIntermediate(layer: DecoderLayer, from: number, to: number): DecoderLayer {
  if (to === from) return layer;
  const linears = { ...layer.linears };
  for (const name of layer.linearsFor(["gate", "up", "down"])) {
    const l = layer.linears[name];
    if (!(l instanceof DenseLinear))
      throw new GptqError(`${layer.linearPrefix(name)} is quantized; only unquantized layers can be padded`);
    const K = l.inFeatures;
    const segments = layer.segmentsOf(name);
    if (segments.some((g) => g.part === "down")) {
      const w: Tensor = { dtype: "F32", shape: [l.outFeatures, K], data: l.weight };
      linears[name] = new DenseLinear(padCols(w, to).data as Float32Array, l.outFeatures, to, l.bias);
      continue;
    }
    // each part's rows, then its zero rows
    const N = (l.outFeatures / from) * to;
    const weight = new Float32Array(N * K);
    const bias = l.bias && new Float32Array(N);
    let src = 0;
    let dst = 0;
    for (const g of segments) {
      weight.set(l.weight.subarray(src * K, (src + g.count) * K), dst * K);
      bias?.set(l.bias!.subarray(src, src + g.count), dst);
      src += g.count;
      dst += g.count + (g.from + g.count === from ? to - from : 0);
    }
    linears[name] = new DenseLinear(weight, N, K, bias);
  }
  return layer.withLinears({ ...layer.config, intermediateSize: to }, linears);
}
