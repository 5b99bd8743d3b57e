/**
 * W[n, k] = scales[g, n] · (codes[k, n] − zeros[g, n]), g = g_idx[k]. With fp16 scales and codes below
 * 2^8 the product is exact in fp32, so storing the result as fp16 rounds once, as the reference does.
 */
import { floatsToBf16s, floatsToHalfs } from "../tensor/dtype.js";
import { QuantizedLinear } from "./types.js";

/** Rows k0..k1 of the dequantized matrix in qweight orientation: (k1 − k0) x N, index (k − k0)·N + n. */
export function dequantizeRows(
  layer: QuantizedLinear,
  k0: number,
  k1: number,
  out = new Float32Array((k1 - k0) * layer.outFeatures),
): Float32Array {
  const N = layer.outFeatures;
  const { codes, scales, zeros, gIdx } = layer;
  for (let k = k0; k < k1; k++) {
    const g = gIdx[k] * N;
    const src = k * N;
    const dst = (k - k0) * N;
    for (let n = 0; n < N; n++) out[dst + n] = scales[g + n] * (codes[src + n] - zeros[g + n]);
  }
  return out;
}

/** The full weight, N x K row-major (nn.Linear's orientation). */
export function dequantize(layer: QuantizedLinear): Float32Array {
  const out = new Float32Array(layer.outFeatures * layer.inFeatures);
  transposeRows(layer, out, (block) => block);
  return out;
}

/**
 * The full weight, N x K, stored as F32, F16 or BF16 (raw bits for the 16-bit types) without an fp32
 * copy of the whole matrix.
 */
export type FloatDType = "F32" | "F16" | "BF16";

export function dequantizeAs(layer: QuantizedLinear, dtype: FloatDType): Float32Array | Uint16Array {
  const n = layer.outFeatures * layer.inFeatures;
  if (dtype === "F32") return dequantize(layer);
  const out = new Uint16Array(n);
  const bits = new Uint16Array(BLOCK * layer.outFeatures);
  const convert = dtype === "F16" ? floatsToHalfs : floatsToBf16s;
  transposeRows(layer, out, (block, rows) => convert(block.subarray(0, rows * layer.outFeatures), bits));
  return out;
}

const BLOCK = 32;

// Dequantizes BLOCK rows of K at a time and writes them transposed, so reads and writes both stay
// within a few cache lines.
function transposeRows<T extends Float32Array | Uint16Array>(
  layer: QuantizedLinear,
  out: T,
  convert: (block: Float32Array, rows: number) => T,
): void {
  const { inFeatures: K, outFeatures: N } = layer;
  const block = new Float32Array(BLOCK * N);
  for (let k0 = 0; k0 < K; k0 += BLOCK) {
    const k1 = Math.min(K, k0 + BLOCK);
    dequantizeRows(layer, k0, k1, block);
    const b = convert(block, k1 - k0);
    for (let n = 0; n < N; n++) {
      const d = n * K;
      for (let k = k0; k < k1; k++) out[d + k] = b[(k - k0) * N + n];
    }
  }
}

/**
 * Compares two layers' dequantized weights bit for bit, a block of rows at a time (no full fp32 copy).
 * Returns undefined when identical (±0 count as equal), else where they first differ.
 */
export function firstWeightDifference(
  a: QuantizedLinear,
  b: QuantizedLinear,
): { out: number; in: number; a: number; b: number } | { shape: string } | undefined {
  if (a.inFeatures !== b.inFeatures || a.outFeatures !== b.outFeatures)
    return { shape: `${a.outFeatures}x${a.inFeatures} vs ${b.outFeatures}x${b.inFeatures}` };
  const N = a.outFeatures;
  const B = 64;
  const x = new Float32Array(B * N);
  const y = new Float32Array(B * N);
  const xi = new Int32Array(x.buffer);
  const yi = new Int32Array(y.buffer);
  for (let k0 = 0; k0 < a.inFeatures; k0 += B) {
    const k1 = Math.min(a.inFeatures, k0 + B);
    dequantizeRows(a, k0, k1, x);
    dequantizeRows(b, k0, k1, y);
    const n = (k1 - k0) * N;
    for (let i = 0; i < n; i++)
      if (xi[i] !== yi[i] && !(x[i] === 0 && y[i] === 0))
        return { out: i % N, in: k0 + Math.floor(i / N), a: x[i], b: y[i] };
  }
  return undefined;
}
