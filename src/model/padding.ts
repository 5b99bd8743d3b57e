/**
 * Zero-padding that keeps a Llama-family model's function exactly: the MLP intermediate dimension.
 * Extra gate/up rows are zero, so their outputs are silu(0) * 0 = 0, and the matching extra down
 * columns are zero, so those zeros add nothing. Other dimensions cannot be padded this way: hidden_size
 * feeds RMSNorm (its mean runs over every channel, so zero channels change it) and the head dimension
 * sets the attention scale and the rotary frequencies; pad-plan.ts says so and names what would fit.
 * Here: the padding of tensors and of a loaded model's layers in memory (transform/pad.ts writes a padded
 * checkpoint).
 */
import { DTYPE_BYTES } from "../tensor/dtype.js";
import { Tensor, bytesOf, viewAs } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import { DecoderLayer, LlamaModel } from "./llama.js";
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
export function padModelIntermediate(model: LlamaModel, to: number): void {
  const from = model.config.intermediateSize;
  if (to === from) return;
  for (const layer of model.layers) padLayerIntermediate(layer, from, to);
  model.config.intermediateSize = to;
}

/** One decoder layer's MLP zero-padded from `from` to `to` intermediate features (see padModelIntermediate). */
export function padLayerIntermediate(layer: DecoderLayer, from: number, to: number): void {
  if (to === from) return;
  const f32 = (data: Float32Array, shape: number[]): Tensor => ({ dtype: "F32", shape, data });
  for (const name of ["gate_proj", "up_proj", "down_proj"] as const) {
    const l = layer.linears[name];
    if (!(l instanceof DenseLinear))
      throw new GptqError(`${layer.linearPrefix(name)} is quantized; only unquantized layers can be padded`);
    const w = f32(l.weight, [l.outFeatures, l.inFeatures]);
    layer.linears[name] =
      name === "down_proj"
        ? new DenseLinear(padCols(w, to).data as Float32Array, l.outFeatures, to, l.bias)
        : new DenseLinear(
            padRows(w, to).data as Float32Array,
            to,
            l.inFeatures,
            l.bias && (padRows(f32(l.bias, [from]), to).data as Float32Array),
          );
  }
}
