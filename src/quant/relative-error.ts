/** How far a quantized weight Q is from W: relative output error from the Hessian, or relative weight error. */

/** Work (multiply-adds) spent on one layer's error figure; large layers are measured on a row sample. */
const ERROR_BUDGET = 5e8;

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
): number {
  let num = 0;
  let den = 0;
  const d = new Float64Array(K);
  const w = new Float64Array(K);
  const stride = Math.max(1, Math.ceil((N * K * K) / ERROR_BUDGET));
  for (let n = 0; n < N; n += stride) {
    for (let k = 0; k < K; k++) {
      w[k] = W[n * K + k];
      d[k] = w[k] - Q[n * K + k];
    }
    for (let i = 0; i < K; i++) {
      const row = i * K;
      let hd = 0;
      let hw = 0;
      for (let j = 0; j < K; j++) {
        hd += H[row + j] * d[j];
        hw += H[row + j] * w[j];
      }
      num += d[i] * hd;
      den += w[i] * hw;
    }
  }
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
