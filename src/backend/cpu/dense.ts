/**
 * The dense float64 work of calibration on every core: the Hessian's symmetric rank-k updates, the
 * factorisation GPTQ needs (a blocked right-looking Cholesky and triangular inverse, whose trailing
 * updates carry almost all of the work) and GPTQ's lazy block updates. Each is one kind of step,
 * C = beta C + alpha A B^T, split into strips of rows over the thread pool (see tasks.ts). Results equal
 * the serial code's up to float rounding (sums are taken in a different order, and the Hessian's, lazy
 * updates' and factorisation's trailing products are float32, as AutoGPTQ computes them).
 */
import { checkCalibrationRows } from "../../tensor/tensor.js";
import { GptqError } from "../../util/errors.js";
import { shared, threadPool } from "./pool.js";
import { SEARCH_ROWS, UPDATE_STRIP, UpdateArgs } from "./tasks.js";
import { RowSearcher } from "../../tensor/quant-grid.js";
import { RefitInput, RefitSystems } from "../../tensor/refit-input.js";
import { wasmGemm } from "./wasm-gemm.js";

/** Mirrors linalg.ts: a pivot at or below this fraction of its original diagonal fails the factorisation. */
const PIVOT_TOLERANCE = 1e-12;
/** columns per block of the factorisation and inverse */
const BLOCK = 256;
/**
 * The factorisation's trailing updates (almost all of its work) take float32 products over each block of
 * columns, summed into the float64 matrix, as the Hessian's do; the diagonal blocks and the solves against
 * them stay float64. U differs from the all-float64 factor by about 1e-7 of its largest entry (AutoGPTQ
 * factorises in float32 throughout).
 */
const TRAILING_SINGLE = true;
/** calibration rows per rank-k update of the Hessian */
const PANEL_ROWS = 256;

/** the kernels' K: a whole number of vectors */
const padK = (v: number) => Math.ceil(v / 4) * 4;
let jobs = 0;

/** C = beta C + alpha A B^T on the thread pool. */
function update(args: Omit<UpdateArgs, "job">): void {
  if (args.m === 0 || args.n === 0) return;
  threadPool().run("update", { ...args, job: ++jobs }, Math.ceil(args.m / UPDATE_STRIP));
}

/** A reusable shared scratch array of at least `length` values. */
class Scratch {
  private buf = shared(Float64Array, 0);
  get(length: number): Float64Array {
    if (this.buf.length < length) this.buf = shared(Float64Array, length);
    return this.buf;
  }
}

/**
 * HessianAccumulator's contract (H = 2/n sum x x^T, upper triangle, mirrored on read) on every core. The
 * sum itself accumulates, in place of H, and is scaled when H is read (and back should more rows come).
 */
export class ParallelHessian {
  private readonly h: Float64Array;
  private readonly panel: Float64Array;
  private n = 0;
  /** whether h holds H (mirrored) rather than the upper triangle of the sum */
  private isH = true;

  constructor(readonly inFeatures: number) {
    if (!(Number.isInteger(inFeatures) && inFeatures > 0))
      throw new GptqError(`in_features must be a positive integer, got ${inFeatures}`);
    this.h = shared(Float64Array, inFeatures * inFeatures);
    this.panel = shared(Float64Array, inFeatures * PANEL_ROWS);
  }

  get nsamples(): number {
    return this.n;
  }

  get H(): Float64Array {
    if (!this.isH) {
      this.scaleUpper(2 / this.n);
      const K = this.inFeatures;
      const h = this.h;
      for (let i = 0; i < K; i++) for (let j = 0; j < i; j++) h[i * K + j] = h[j * K + i];
      this.isH = true;
    }
    return this.h;
  }

  private scaleUpper(f: number): void {
    const K = this.inFeatures;
    const h = this.h;
    for (let i = 0; i < K; i++) for (let j = i * K + i; j < (i + 1) * K; j++) h[j] *= f;
  }

  add(x: Float32Array, rows: number): void {
    const K = this.inFeatures;
    checkCalibrationRows(x, rows, K);
    if (rows === 0) return;
    if (this.isH && this.n > 0) this.scaleUpper(this.n / 2);
    const p = this.panel;
    for (let r0 = 0; r0 < rows; r0 += PANEL_ROWS) {
      const R = Math.min(PANEL_ROWS, rows - r0);
      const kp = transposePanel(x, r0, R, K, p);
      // float32 products over the panel (as AutoGPTQ's fp32 matmul), summed into the float64 sum
      const [c, triangle, single] = [this.h, "upper" as const, true];
      update({ c, cOff: 0, cStride: K, a: p, b: p, m: K, n: K, kp, alpha: 1, beta: 1, triangle, single });
    }
    this.n += rows;
    this.isH = false;
  }
}

/** Rows r0 .. r0 + R of x (K wide) transposed into p (p[k * kp + r]), zero-padded to kp rows; kp. */
function transposePanel(x: Float32Array, r0: number, R: number, K: number, p: Float64Array): number {
  const kp = padK(R);
  for (let r = 0; r < R; r++) {
    const src = (r0 + r) * K;
    for (let k = 0; k < K; k++) p[k * kp + r] = x[src + k];
  }
  if (kp > R) for (let k = 0; k < K; k++) p.fill(0, k * kp + R, (k + 1) * kp);
  return kp;
}

/**
 * CrossAccumulator's contract (C = 2/n sum_r f_r q_r^T from row-aligned fp and quantized-path inputs) on
 * every core, with the Hessian's float32 products summed into float64; the sum is scaled when C is read.
 */
export class ParallelCross {
  private readonly c: Float64Array;
  private readonly pf: Float64Array;
  private readonly pq: Float64Array;
  private n = 0;
  /** whether c holds C rather than the sum */
  private isC = true;

  constructor(readonly K: number) {
    this.c = shared(Float64Array, K * K);
    this.pf = shared(Float64Array, K * PANEL_ROWS);
    this.pq = shared(Float64Array, K * PANEL_ROWS);
  }

  get C(): Float64Array {
    if (!this.isC) {
      const f = 2 / this.n;
      for (let i = 0; i < this.c.length; i++) this.c[i] *= f;
      this.isC = true;
    }
    return this.c;
  }

  add(f: Float32Array, q: Float32Array, rows: number): void {
    const { K } = this;
    checkCalibrationRows(f, rows, K);
    checkCalibrationRows(q, rows, K);
    if (rows === 0) return;
    if (this.isC && this.n > 0) for (let i = 0; i < this.c.length; i++) this.c[i] *= this.n / 2;
    for (let r0 = 0; r0 < rows; r0 += PANEL_ROWS) {
      const R = Math.min(PANEL_ROWS, rows - r0);
      const kp = transposePanel(f, r0, R, K, this.pf);
      transposePanel(q, r0, R, K, this.pq);
      const [c, a, b] = [this.c, this.pf, this.pq];
      update({
        c,
        cOff: 0,
        cStride: K,
        a,
        b,
        m: K,
        n: K,
        kp,
        alpha: 1,
        beta: 1,
        triangle: "all",
        single: true,
      });
    }
    this.n += rows;
    this.isC = false;
  }
}

/** Packs a[r0 .. r0 + rows, c0 .. c0 + cols] (stride n) into rows of kp values (zero padding). */
function pack(
  a: Float64Array,
  n: number,
  r0: number,
  rows: number,
  c0: number,
  cols: number,
  out: Float64Array,
  kp: number,
): Float64Array {
  for (let i = 0; i < rows; i++) {
    const o = i * kp;
    out.set(a.subarray((r0 + i) * n + c0, (r0 + i) * n + c0 + cols), o);
    out.fill(0, o + cols, o + kp);
  }
  return out;
}

/**
 * Factorises the diagonal block [b0, b1) of a (its lower triangle, in place), its columns left of b0
 * already updated; false when a pivot fails (at or below PIVOT_TOLERANCE x its original diagonal).
 */
function factorDiagonalBlock(
  a: Float64Array,
  n: number,
  b0: number,
  b1: number,
  diag: Float64Array,
): boolean {
  for (let i = b0; i < b1; i++) {
    const ri = i * n;
    for (let j = b0; j <= i; j++) {
      const rj = j * n;
      let s = a[ri + j];
      for (let k = b0; k < j; k++) s -= a[ri + k] * a[rj + k];
      if (i === j) {
        if (!(s > PIVOT_TOLERANCE * diag[i])) return false;
        a[ri + i] = Math.sqrt(s);
      } else a[ri + j] = s / a[rj + j];
    }
  }
  return true;
}

/** The inverse of l's lower-triangular diagonal block [b0, b1) into out as rows of kp values (zero padding). */
function invertDiagonalBlock(
  l: Float64Array,
  n: number,
  b0: number,
  b1: number,
  out: Float64Array,
  kp: number,
) {
  const nb = b1 - b0;
  out.fill(0, 0, nb * kp);
  for (let i = 0; i < nb; i++) {
    const ri = (b0 + i) * n + b0;
    const oi = i * kp;
    for (let t = 0; t < i; t++) {
      const c = l[ri + t];
      const ot = t * kp;
      for (let m = 0; m <= t; m++) out[oi + m] -= c * out[ot + m];
    }
    out[oi + i] += 1;
    const inv = 1 / l[ri + i];
    for (let m = 0; m <= i; m++) out[oi + m] *= inv;
  }
}

/**
 * In-place lower Cholesky of a shared n x n matrix (lower triangle); false when not positive definite.
 * Per block of columns: the diagonal block here, then the panel below it (a triangular solve, as a product
 * with the block's inverse) and the trailing update on the pool.
 */
export function choleskyLowerParallel(a: Float64Array, n: number, scratch = new Scratch()): boolean {
  const diag = new Float64Array(n);
  for (let i = 0; i < n; i++) diag[i] = a[i * n + i];
  const inv = shared(Float64Array, BLOCK * BLOCK);
  for (let b0 = 0; b0 < n; b0 += BLOCK) {
    const b1 = Math.min(n, b0 + BLOCK);
    if (!factorDiagonalBlock(a, n, b0, b1, diag)) return false;
    if (b1 === n) break;
    const nb = b1 - b0;
    const kp = padK(nb);
    const m = n - b1;
    // L21 = A21 L11^-T
    invertDiagonalBlock(a, n, b0, b1, inv, kp);
    let p = pack(a, n, b1, m, b0, nb, scratch.get(m * kp), kp);
    const single = false;
    update({
      c: a,
      cOff: b1 * n + b0,
      cStride: n,
      a: p,
      b: inv,
      m,
      n: nb,
      kp,
      alpha: 1,
      beta: 0,
      triangle: "all",
      single,
    });
    p = pack(a, n, b1, m, b0, nb, p, kp);
    update({
      c: a,
      cOff: b1 * n + b1,
      cStride: n,
      a: p,
      b: p,
      m,
      n: m,
      kp,
      alpha: -1,
      beta: 1,
      triangle: "lower",
      single: TRAILING_SINGLE,
    });
  }
  return true;
}

/**
 * The inverse of the lower-triangular l (n x n, shared) in place: its lower triangle becomes X = L^-1 and
 * the rest zero. Per block of rows: their solve against the diagonal block (a product with its inverse),
 * then the rows below take their update, both on the pool. Each block of L's columns is copied out before
 * X takes its place.
 */
export function invertLowerParallel(x: Float64Array, n: number, scratch = new Scratch()): void {
  for (let i = 0; i < n; i++) x.fill(0, i * n + i + 1, (i + 1) * n);
  const xt = new Scratch();
  const inv = shared(Float64Array, BLOCK * BLOCK);
  /** x[k0 .. k1, 0 .. k1] transposed into rows of kp values */
  const transposed = (k0: number, k1: number, kp: number) => {
    const b = xt.get(k1 * kp);
    const nb = k1 - k0;
    for (let m = 0; m < k1; m++) {
      for (let t = 0; t < nb; t++) b[m * kp + t] = x[(k0 + t) * n + m];
      b.fill(0, m * kp + nb, (m + 1) * kp);
    }
    return b;
  };
  const triangle = "all" as const;
  for (let k0 = 0; k0 < n; k0 += BLOCK) {
    const k1 = Math.min(n, k0 + BLOCK);
    const nb = k1 - k0;
    const kp = padK(nb);
    // rows k0 .. k1 of X = L_kk^-1 (their columns 0 .. k1 as updated so far, the identity on the diagonal)
    invertDiagonalBlock(x, n, k0, k1, inv, kp);
    for (let i = k0; i < k1; i++) {
      x.fill(0, i * n + k0, i * n + k1);
      x[i * n + i] = 1;
    }
    let b = transposed(k0, k1, kp);
    const single = false;
    update({
      c: x,
      cOff: k0 * n,
      cStride: n,
      a: inv,
      b,
      m: nb,
      n: k1,
      kp,
      alpha: 1,
      beta: 0,
      triangle,
      single,
    });
    if (k1 === n) break;
    // the rows below: X[k1:, :k1] -= L[k1:, k0:k1] X[k0:k1, :k1], where X[k1:, k0:k1] starts at zero
    const a = pack(x, n, k1, n - k1, k0, nb, scratch.get((n - k1) * kp), kp);
    for (let i = k1; i < n; i++) x.fill(0, i * n + k0, i * n + k1);
    b = transposed(k0, k1, kp);
    update({
      c: x,
      cOff: k1 * n,
      cStride: n,
      a,
      b,
      m: n - k1,
      n: k1,
      kp,
      alpha: -1,
      beta: 1,
      triangle,
      single: TRAILING_SINGLE,
    });
  }
}

/**
 * linalg.ts's upperCholeskyOfInverse (U = J L^-1 J with J H J = L L^T) on every core. J M J reverses M's
 * values in row-major order, so both flips are reversals in place; U comes back in shared memory.
 */
export function upperCholeskyOfInverseParallel(
  h: Float64Array,
  n: number,
  shift = 0,
): Float64Array | undefined {
  const r = shared(Float64Array, n * n);
  r.set(h.subarray(0, n * n));
  r.reverse();
  for (let i = 0; i < n; i++) r[i * n + i] += shift;
  const scratch = new Scratch();
  if (!choleskyLowerParallel(r, n, scratch)) return undefined;
  invertLowerParallel(r, n, scratch);
  return r.reverse();
}

/**
 * A group's range search with its rows split between the pool's threads (each row's search is
 * independent, so the parameters are the serial search's). The group's values are copied into shared
 * memory once; xmin, xmax and the weights travel with the job.
 */
export const searchRowsParallel: RowSearcher = (
  s,
  src,
  offset,
  cols,
  N,
  xmin,
  xmax,
  scale,
  zero,
  weights,
) => {
  const values = shared(Float32Array, cols * N);
  values.set(src.subarray(offset, offset + cols * N));
  const sc = shared(Float32Array, N);
  const z = shared(Float32Array, N);
  sc.set(scale.subarray(0, N));
  z.set(zero.subarray(0, N));
  threadPool().run(
    "search",
    { s, src: values, cols, N, xmin, xmax, scale: sc, zero: z, weights },
    Math.ceil(N / SEARCH_ROWS),
  );
  scale.set(sc);
  zero.set(z);
};

/** GPTQ's dense steps (quant/gptq.ts's CpuDenseSteps) on every core. */
export function parallelGptqSteps() {
  const ut = new Scratch();
  const et = new Scratch();
  return {
    searchRows: searchRowsParallel,
    refitSystems: refitSystemsParallel,
    upperCholeskyOfInverse: upperCholeskyOfInverseParallel,
    workspace: toShared,
    allocate: (length: number) => shared(Float32Array, length),
    lazyUpdate(
      w: Float32Array,
      err: Float32Array,
      U: Float64Array,
      N: number,
      K: number,
      i1: number,
      i2: number,
      end: number,
    ): void {
      const count = i2 - i1;
      const cp = padK(count);
      const a = ut.get((end - i2) * cp);
      for (let j = i2; j < end; j++) {
        const o = (j - i2) * cp;
        for (let t = 0; t < count; t++) a[o + t] = U[(i1 + t) * K + j];
        a.fill(0, o + count, o + cp);
      }
      const b = et.get(N * cp);
      for (let n = 0; n < N; n++) b.fill(0, n * cp + count, (n + 1) * cp);
      for (let t = 0; t < count; t++) {
        const e = t * N;
        for (let n = 0; n < N; n++) b[n * cp + t] = err[e + n];
      }
      // float32 products, as AutoGPTQ's fp32 update of W
      update({
        c: w,
        cOff: i2 * N,
        cStride: N,
        a,
        b,
        m: end - i2,
        n: N,
        kp: cp,
        alpha: -1,
        beta: 1,
        triangle: "all",
        single: true,
      });
    },
  };
}

/**
 * quant/refit.ts's refitSystems with its products on every core (float64): rows taken in group order so
 * each group is one run, V = H[:, g'] U[g', :] for the rows of groups g >= g' only (A is symmetric), and
 * H w, as pool GEMMs; the sums over each group's rows here. About K^2 N multiply-adds against the
 * scalar code's 2 K^2 N, at the kernels' speed, and K^2 N / 2 when H w is given.
 */
export function refitSystemsParallel(
  r: RefitInput,
  /** H w (K x N, processing order) from an earlier call with the same H and w: the refine rounds reuse it */
  Hw?: Float64Array,
): RefitSystems & { Hw: Float64Array } {
  const { w, H, codes, groupOf, zeros, N, K, G } = r;
  const order = Int32Array.from({ length: K }, (_, k) => k).sort((a, b) => groupOf[a] - groupOf[b] || a - b);
  const starts = new Int32Array(G + 1);
  for (let k = 0; k < K; k++) starts[groupOf[k] + 1]++;
  for (let g = 0; g < G; g++) starts[g + 1] += starts[g];
  const kp = padK(K);
  // u = codes - zero point, K x N in group order
  const u = new Float64Array(K * N);
  for (let a = 0; a < K; a++) {
    const k = order[a];
    const z = groupOf[k] * N;
    for (let n = 0; n < N; n++) u[a * N + n] = codes[k * N + n] - zeros[z + n];
  }
  const hg = shared(Float64Array, K * kp);
  for (let a = 0; a < K; a++) {
    const row = order[a] * K;
    for (let c = 0; c < K; c++) hg[a * kp + c] = H[row + order[c]];
  }
  const v = shared(Float64Array, K * N);
  const acc = new Float64Array(N);
  /** acc[n] = sum over the rows k of group g of x[k, n] v[k - r0, n] */
  const groupSum = (x: Float64Array, g: number, r0: number) => {
    acc.fill(0);
    for (let k = starts[g]; k < starts[g + 1]; k++) {
      const xk = k * N;
      const vk = (k - r0) * N;
      for (let n = 0; n < N; n++) acc[n] += x[xk + n] * v[vk + n];
    }
  };
  const A = new Float64Array(N * G * G);
  const scratch = new Scratch();
  const part = new Scratch();
  for (let gp = 0; gp < G; gp++) {
    const s0 = starts[gp];
    const cnt = starts[gp + 1] - s0;
    if (cnt === 0) continue; // a group without columns: its row and column of A stay zero
    const cp = padK(cnt);
    const a = pack(hg, kp, s0, K - s0, s0, cnt, scratch.get((K - s0) * cp), cp);
    const b = part.get(N * cp); // U[g', :] transposed, N x cp
    for (let n = 0; n < N; n++) {
      for (let t = 0; t < cnt; t++) b[n * cp + t] = u[(s0 + t) * N + n];
      b.fill(0, n * cp + cnt, (n + 1) * cp);
    }
    update({
      c: v,
      cOff: 0,
      cStride: N,
      a,
      b,
      m: K - s0,
      n: N,
      kp: cp,
      alpha: 1,
      beta: 0,
      triangle: "all",
      single: false,
    });
    for (let g = gp; g < G; g++) {
      groupSum(u, g, s0);
      for (let n = 0; n < N; n++) A[(n * G + g) * G + gp] = A[(n * G + gp) * G + g] = acc[n];
    }
  }
  if (Hw) {
    for (let a = 0; a < K; a++) v.set(Hw.subarray(order[a] * N, (order[a] + 1) * N), a * N);
  } else {
    const wT = part.get(N * kp); // w in group order, transposed
    for (let n = 0; n < N; n++) {
      for (let a = 0; a < K; a++) wT[n * kp + a] = w[order[a] * N + n];
      wT.fill(0, n * kp + K, (n + 1) * kp);
    }
    update({
      c: v,
      cOff: 0,
      cStride: N,
      a: hg,
      b: wT,
      m: K,
      n: N,
      kp,
      alpha: 1,
      beta: 0,
      triangle: "all",
      single: false,
    });
    Hw = new Float64Array(K * N);
    for (let a = 0; a < K; a++) Hw.set(v.subarray(a * N, (a + 1) * N), order[a] * N);
  }
  const b = new Float64Array(N * G);
  for (let g = 0; g < G; g++) {
    groupSum(u, g, 0);
    for (let n = 0; n < N; n++) b[n * G + g] = acc[n];
  }
  const wHw = new Float64Array(N);
  for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) wHw[n] += w[k * N + n] * Hw[k * N + n];
  return { A, b, wHw, Hw };
}

/** M H (quant/relative-error.ts's TimesHessian) on every core, float64. */
export function timesHessianParallel(
  m: Float64Array,
  rows: number,
  H: Float64Array,
  K: number,
): Float64Array {
  const kp = padK(K);
  const a = pack(m, K, 0, rows, 0, K, shared(Float64Array, rows * kp), kp);
  // H as it is when the workers can read it and its rows need no padding (the pool's Hessians are shared)
  const ready = kp === K && H.buffer instanceof SharedArrayBuffer && H.length === K * K;
  const b = ready ? H : pack(H, K, 0, K, 0, K, shared(Float64Array, K * kp), kp);
  const out = shared(Float64Array, rows * K);
  const [alpha, beta, triangle, single] = [1, 1, "all" as const, false];
  update({ c: out, cOff: 0, cStride: K, a, b, m: rows, n: K, kp, alpha, beta, triangle, single });
  return out;
}

/** parallelGemmNT's copy of its input */
let gemmInput = shared(Float32Array, 0);

/** Below this many multiply-adds a product stays on the calling thread: waking the workers costs ~0.1 ms. */
const PARALLEL_MACS = 1 << 22;

/** w itself when it is in shared memory, else a shared copy. */
export function toShared(w: Float32Array): Float32Array {
  if (w.buffer instanceof SharedArrayBuffer) return w;
  const copy = shared(Float32Array, w.length);
  copy.set(w);
  return copy;
}

/**
 * x W^T (x rows x K, w N x K in shared memory) with the output columns split over the thread pool, or
 * undefined when the product is too small to share or there is one thread.
 */
export function parallelGemmNT(
  x: Float32Array,
  rows: number,
  w: Float32Array,
  N: number,
  K: number,
): Float32Array | undefined {
  if (rows * K * N < PARALLEL_MACS || !wasmGemm()) return undefined;
  const pool = threadPool();
  if (pool.threads === 1 || !(w.buffer instanceof SharedArrayBuffer)) return undefined;
  let xs = x.subarray(0, rows * K);
  if (!(xs.buffer instanceof SharedArrayBuffer)) {
    // a copy the workers can read, in memory kept from call to call (a fresh array costs page faults)
    if (gemmInput.length < rows * K) gemmInput = shared(Float32Array, rows * K);
    gemmInput.set(xs);
    xs = gemmInput.subarray(0, rows * K);
  }
  const out = shared(Float32Array, rows * N);
  const cols = Math.max(8, Math.ceil(N / (8 * pool.threads)) * 2);
  pool.run("dense", { x: xs, w, out, rows, K, N, cols }, Math.ceil(N / cols));
  return out;
}

/** Whether the parallel kernels can run here (they need WebAssembly SIMD). */
export function parallelDenseAvailable(): boolean {
  return wasmGemm() !== null;
}
