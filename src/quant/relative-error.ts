/** How far a quantized weight Q is from W: relative output error from the Hessian, or relative weight error. */

/** Work (multiply-adds) spent on one layer's error figure; large layers are measured on a row sample. */
const ERROR_BUDGET = 5e8;

/** M H for M (rows x K) and a symmetric H (K x K): the dense step of the error figure. */
export type TimesHessian = (m: Float64Array, rows: number, H: Float64Array, K: number) => Float64Array;

export const timesHessian: TimesHessian = (m, rows, H, K) => {
  const out = new Float64Array(rows * K);
  for (let r = 0; r < rows; r++)
    for (let i = 0; i < K; i++) {
      const row = i * K;
      let s = 0;
      for (let j = 0; j < K; j++) s += H[row + j] * m[r * K + j];
      out[r * K + i] = s;
    }
  return out;
};

/**
 * ||(W - Q) X^T||^2 / ||W X^T||^2 from the Hessian (proportional to X^T X): sum over output rows n of
 * d_n^T H d_n / w_n^T H w_n, d = w - q. It costs N K^2, so for large layers every s-th row is used.
 */
export function relativeOutputError(
  W: Float32Array,
  Q: Float32Array,
  N: number,
  K: number,
  H: Float64Array,
  times: TimesHessian = timesHessian,
): number {
  const stride = Math.max(1, Math.ceil((N * K * K) / ERROR_BUDGET));
  const rows = Math.ceil(N / stride);
  // the sampled rows of W - Q, then those of W
  const m = new Float64Array(2 * rows * K);
  for (let r = 0; r < rows; r++) {
    const n = r * stride;
    for (let k = 0; k < K; k++) {
      m[(rows + r) * K + k] = W[n * K + k];
      m[r * K + k] = W[n * K + k] - Q[n * K + k];
    }
  }
  const mh = times(m, 2 * rows, H, K);
  let num = 0;
  let den = 0;
  for (let i = 0; i < rows * K; i++) num += m[i] * mh[i];
  for (let i = rows * K; i < 2 * rows * K; i++) den += m[i] * mh[i];
  return den > 0 ? num / den : 0;
}

/** ||W - Q||^2 / ||W||^2: the error figure when there are no calibration inputs. */
export function relativeWeightError(W: Float32Array, Q: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < W.length; i++) {
    num += (W[i] - Q[i]) ** 2;
    den += W[i] ** 2;
  }
  return den > 0 ? num / den : 0;
}
