/**
 * The dense float64 linear algebra GPTQ needs: Cholesky factorisation and the upper Cholesky factor of an
 * inverse. Matrices are n x n row-major Float64Arrays. Inner loops run along rows (contiguous) and are
 * register-blocked four rows at a time, so each streamed row serves four dot products or updates.
 */

/**
 * Pivots at or below this fraction of their original diagonal count as a failed factorisation: in float64
 * a singular positive semi-definite matrix often leaves a tiny positive pivot rather than a negative one,
 * and factoring on through it would give an inverse of garbage.
 */
const PIVOT_TOLERANCE = 1e-12;

/**
 * In-place lower Cholesky factorisation A = L L^T (reads and writes the lower triangle; the strict upper
 * triangle is left as it was). Returns false when A is not (numerically) positive definite.
 */
export function choleskyLowerInPlace(a: Float64Array, n: number): boolean {
  for (let i0 = 0; i0 < n; i0 += 4) {
    const rows = Math.min(4, n - i0);
    // Columns left of the 4-row block: each row j < i0 is read once for all four rows.
    for (let j = 0; j < i0; j++) {
      const rj = j * n;
      const r0 = i0 * n;
      const r1 = r0 + n;
      const r2 = r1 + n;
      const r3 = r2 + n;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      if (rows === 4) {
        for (let k = 0; k < j; k++) {
          const l = a[rj + k];
          s0 += a[r0 + k] * l;
          s1 += a[r1 + k] * l;
          s2 += a[r2 + k] * l;
          s3 += a[r3 + k] * l;
        }
      } else {
        for (let k = 0; k < j; k++) {
          const l = a[rj + k];
          s0 += a[r0 + k] * l;
          if (rows > 1) s1 += a[r1 + k] * l;
          if (rows > 2) s2 += a[r2 + k] * l;
        }
      }
      const d = a[rj + j];
      a[r0 + j] = (a[r0 + j] - s0) / d;
      if (rows > 1) a[r1 + j] = (a[r1 + j] - s1) / d;
      if (rows > 2) a[r2 + j] = (a[r2 + j] - s2) / d;
      if (rows > 3) a[r3 + j] = (a[r3 + j] - s3) / d;
    }
    // The small triangle inside the block.
    for (let i = i0; i < i0 + rows; i++) {
      const ri = i * n;
      for (let j = i0; j <= i; j++) {
        const rj = j * n;
        let s = a[ri + j];
        for (let k = 0; k < j; k++) s -= a[ri + k] * a[rj + k];
        if (i === j) {
          if (!(s > PIVOT_TOLERANCE * a[ri + i])) return false;
          a[ri + i] = Math.sqrt(s);
        } else {
          a[ri + j] = s / a[rj + j];
        }
      }
    }
  }
  return true;
}

/** Inverse of a lower-triangular L (lower triangle of `l`) into a new lower-triangular matrix. */
export function invertLower(l: Float64Array, n: number): Float64Array {
  const x = new Float64Array(n * n);
  // Row i of X = (e_i - sum_{k<i} L[i,k] X[k,:]) / L[i,i]; X[k,:] is non-zero only in 0..k.
  for (let i0 = 0; i0 < n; i0 += 4) {
    const rows = Math.min(4, n - i0);
    for (let k = 0; k < i0; k++) {
      const rk = k * n;
      if (rows === 4) {
        const c0 = l[i0 * n + k];
        const c1 = l[(i0 + 1) * n + k];
        const c2 = l[(i0 + 2) * n + k];
        const c3 = l[(i0 + 3) * n + k];
        const r0 = i0 * n;
        const r1 = r0 + n;
        const r2 = r1 + n;
        const r3 = r2 + n;
        for (let m = 0; m <= k; m++) {
          const v = x[rk + m];
          x[r0 + m] -= c0 * v;
          x[r1 + m] -= c1 * v;
          x[r2 + m] -= c2 * v;
          x[r3 + m] -= c3 * v;
        }
      } else {
        for (let i = i0; i < i0 + rows; i++) {
          const c = l[i * n + k];
          const ri = i * n;
          for (let m = 0; m <= k; m++) x[ri + m] -= c * x[rk + m];
        }
      }
    }
    for (let i = i0; i < i0 + rows; i++) {
      const ri = i * n;
      x[ri + i] += 1;
      for (let k = i0; k < i; k++) {
        const c = l[ri + k];
        const rk = k * n;
        for (let m = 0; m <= k; m++) x[ri + m] -= c * x[rk + m];
      }
      const inv = 1 / l[ri + i];
      for (let m = 0; m <= i; m++) x[ri + m] *= inv;
    }
  }
  return x;
}

/**
 * The upper-triangular U with H^-1 = U^T U (what `cholesky(cholesky_inverse(cholesky(H)), upper=True)`
 * computes), or undefined when H is not positive definite. With J the reversal permutation, J H J = L L^T
 * gives H = R R^T with R = J L J upper, so H^-1 = R^-T R^-1 and U = R^-1 = J L^-1 J: one factorisation and
 * one triangular inverse instead of three factorisations. With `shift`, of H + shift I. H is not modified.
 */
export function upperCholeskyOfInverse(h: Float64Array, n: number, shift = 0): Float64Array | undefined {
  const r = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const src = (n - 1 - i) * n + (n - 1);
    const dst = i * n;
    for (let j = 0; j <= i; j++) r[dst + j] = h[src - j];
    r[dst + i] += shift;
  }
  if (!choleskyLowerInPlace(r, n)) return undefined;
  const x = invertLower(r, n);
  // U[a, b] = X[n-1-a, n-1-b]: reverse both axes, reusing r as the output.
  for (let a = 0; a < n; a++) {
    const src = (n - 1 - a) * n + (n - 1);
    const dst = a * n;
    for (let b = 0; b < n; b++) r[dst + b] = x[src - b];
  }
  return r;
}

/** Solves L L^T x = rhs in place (rhs becomes x), L the lower factor from choleskyLowerInPlace. */
export function solveLower(l: Float64Array, rhs: Float64Array, n: number): void {
  for (let i = 0; i < n; i++) {
    let s = rhs[i];
    for (let k = 0; k < i; k++) s -= l[i * n + k] * rhs[k];
    rhs[i] = s / l[i * n + i];
  }
  for (let i = n - 1; i >= 0; i--) {
    let s = rhs[i];
    for (let k = i + 1; k < n; k++) s -= l[k * n + i] * rhs[k];
    rhs[i] = s / l[i * n + i];
  }
}
