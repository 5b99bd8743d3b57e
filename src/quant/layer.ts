/** Shared plumbing of the quantizers: input checks and the K x N working layout. */
import { GptqError } from "../util/errors.js";

export function checkWeight(W: Float32Array, N: number, K: number): void {
  if (!(Number.isInteger(N) && N > 0 && Number.isInteger(K) && K > 0))
    throw new GptqError(`weight shape must be positive integers, got N=${N}, K=${K}`);
  if (W.length !== N * K) throw new GptqError(`weight has ${W.length} values, expected N x K = ${N} x ${K}`);
  for (let i = 0; i < W.length; i++)
    if (!Number.isFinite(W[i]))
      throw new GptqError(`weight has a non-finite value at row ${Math.floor(i / K)}, column ${i % K}`);
}

/** N x K row-major -> K x N row-major (column k of the weight becomes a contiguous row). */
export function transpose(
  src: Float32Array,
  rows: number,
  cols: number,
  out: Float32Array = new Float32Array(rows * cols),
): Float32Array {
  const T = 64;
  for (let r0 = 0; r0 < rows; r0 += T) {
    const r1 = Math.min(r0 + T, rows);
    for (let c0 = 0; c0 < cols; c0 += T) {
      const c1 = Math.min(c0 + T, cols);
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) out[c * rows + r] = src[r * cols + c];
    }
  }
  return out;
}
