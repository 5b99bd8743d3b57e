/**
 * The parts of parallel jobs, run on any thread of a ThreadPool: each part copies what it needs into its
 * thread's WebAssembly memory, runs a kernel there and writes its own slice of a shared output.
 */
import { RowSearch, searchRows } from "../../tensor/quant-grid.js";
import { gemmNT } from "./gemm.js";
import { WasmGemm, wasmGemm } from "./wasm-gemm.js";

/** Rows of output per part: small enough to balance two to a few dozen threads, large enough to amortise. */
export const UPDATE_STRIP = 16;
/** bytes of `b` one kernel call reads: well inside a core's L2 */
const CHUNK_BYTES = 128 * 1024;

function kernels(): WasmGemm {
  const k = wasmGemm();
  if (!k) throw new Error("WebAssembly SIMD is unavailable on this thread");
  return k;
}

/** Makes the module's memory at least `bytes` long. */
function reserve(k: WasmGemm, bytes: number): void {
  const have = k.memory.buffer.byteLength;
  if (have < bytes) k.memory.grow(Math.ceil((bytes - have) / 65536));
}

/** the job whose `b` operand this thread last copied into its memory */
let copiedJob = -1;

/**
 * C = beta C + alpha A B^T over a triangle or all of C: the one dense step of the Hessian (a symmetric
 * rank-k update), the blocked Cholesky factorisation and triangular inverse, and GPTQ's lazy updates.
 * Products are float64, or float32 where `single` (2.5x the speed: the Hessian's and the lazy updates'
 * float32 products are what AutoGPTQ computes); entries outside the triangle are not touched.
 */
export interface UpdateArgs {
  /** C[i, j] at c[cOff + i * cStride + j], i < m, j < n */
  c: Float32Array | Float64Array;
  cOff: number;
  cStride: number;
  /** m x kp and n x kp row-major, kp a multiple of 4 (zero padding) */
  a: Float64Array;
  b: Float64Array;
  m: number;
  n: number;
  kp: number;
  alpha: number;
  beta: number;
  /** which entries: all, j >= i (upper) or j <= i (lower) */
  triangle: "all" | "upper" | "lower";
  single: boolean;
  /** distinct per job, so each thread copies `b` once per job */
  job: number;
}

/** Part s: rows i0 = s * UPDATE_STRIP .. of C. */
function updatePart(u: UpdateArgs, s: number): void {
  const { c, cOff, cStride, a, b, m, n, kp, alpha, beta, triangle, single } = u;
  const k = kernels();
  const i0 = s * UPDATE_STRIP;
  const rows = Math.min(UPDATE_STRIP, m - i0);
  const rowsPad = Math.ceil(rows / 4) * 4;
  // columns this strip needs: the kernel works in pairs of columns
  const j0 = triangle === "upper" ? i0 & ~1 : 0;
  const j1 = triangle === "lower" ? Math.min(n, i0 + rows) : n;
  if (j1 <= j0) return;
  const cols = Math.ceil((j1 - j0) / 2) * 2;
  const nPad = Math.ceil(n / 2) * 2;
  const B = single ? 4 : 8;
  const aAt = nPad * kp;
  const outAt = aAt + rowsPad * kp;
  // float32 products subtracted from (or added to a float64) C run in place on a copy of C's strip, and
  // C = A B^T is copied back where C has the products' type; other alpha and beta take a JavaScript pass
  const wide = c instanceof Float64Array;
  const sameType = wide === !single;
  const into = beta === 1 && single && (alpha === -1 || (alpha === 1 && wide));
  const copyBack = into || (beta === 0 && alpha === 1 && sameType);
  const outBytes = into || copyBack ? c.BYTES_PER_ELEMENT : B;
  reserve(k, B * outAt + outBytes * rowsPad * cols);
  const heap = single ? new Float32Array(k.memory.buffer) : new Float64Array(k.memory.buffer);
  if (copiedJob !== u.job) {
    heap.set(b.subarray(0, n * kp));
    heap.fill(0, n * kp, nPad * kp);
    copiedJob = u.job;
  }
  heap.set(a.subarray(i0 * kp, (i0 + rows) * kp), aAt);
  heap.fill(0, aAt + rows * kp, outAt);
  const outAtC = (B * outAt) / outBytes;
  const out = outBytes === 8 ? new Float64Array(k.memory.buffer) : new Float32Array(k.memory.buffer);
  if (into)
    for (let i = i0; i < i0 + rows; i++) {
      const r = cOff + i * cStride;
      out.set(c.subarray(r + j0, r + Math.min(n, j0 + cols)), outAtC + (i - i0) * cols);
    }
  let kernel = single ? k.gemm : k.gemm64;
  if (into && wide) kernel = alpha === -1 ? k.gemmSubInto64 : k.gemmAddInto64;
  else if (into) kernel = k.gemmSub;
  // a few columns at a time, so the part of `b` they read stays in cache across the strip's rows
  const chunk = Math.max(2, Math.floor(CHUNK_BYTES / (B * kp)) & ~1);
  for (let jc = 0; jc < cols; jc += chunk) {
    const w = Math.min(chunk, cols - jc);
    const o = outBytes * (outAtC + jc);
    kernel(B * aAt, B * kp, rowsPad, B * (j0 + jc) * kp, B * kp, w, B * kp, o, outBytes * cols);
  }
  for (let i = i0; i < i0 + rows; i++) {
    const from = triangle === "upper" ? i : 0;
    const to = triangle === "lower" ? i + 1 : n;
    const r = cOff + i * cStride;
    const o = outAtC + (i - i0) * cols - j0;
    if (copyBack) c.set(out.subarray(o + from, o + to), r + from);
    else if (beta === 1) for (let j = from; j < to; j++) c[r + j] += alpha * out[o + j];
    else for (let j = from; j < to; j++) c[r + j] = beta * c[r + j] + alpha * out[o + j];
  }
}

export interface DenseArgs {
  /** rows x K, N x K and rows x N */
  x: Float32Array;
  w: Float32Array;
  out: Float32Array;
  rows: number;
  K: number;
  N: number;
  /** output columns per part */
  cols: number;
}

/** Part s: output columns s * cols .. of x W^T. */
function densePart(a: DenseArgs, s: number): void {
  const { x, w, out, rows, K, N, cols } = a;
  const n0 = s * cols;
  const nc = Math.min(cols, N - n0);
  const tile = new Float32Array(rows * nc);
  gemmNT(x, 0, K, rows, w.subarray(n0 * K, (n0 + nc) * K), K, nc, K, tile, false);
  for (let r = 0; r < rows; r++) out.set(tile.subarray(r * nc, (r + 1) * nc), r * N + n0);
}

/** Rows of a group's range search per part: each row's search is independent (about 10^4 candidates' work). */
export const SEARCH_ROWS = 32;

export interface SearchArgs {
  s: RowSearch;
  /** the group's cols x N values, shared */
  src: Float32Array;
  cols: number;
  N: number;
  xmin: Float64Array;
  xmax: Float64Array;
  /** shared: the min-max parameters on entry, each row's best on return */
  scale: Float32Array;
  zero: Float32Array;
  weights: Float64Array | undefined;
}

/** Part p: rows p * SEARCH_ROWS .. of a group's range search. */
function searchPart(a: SearchArgs, p: number): void {
  const n0 = p * SEARCH_ROWS;
  const { s, src, cols, N, xmin, xmax, scale, zero, weights } = a;
  searchRows(s, src, 0, cols, N, xmin, xmax, scale, zero, weights, n0, Math.min(N, n0 + SEARCH_ROWS));
}

export const TASKS = { update: updatePart, dense: densePart, search: searchPart };
export type TaskName = keyof typeof TASKS;
export type TaskArgs<T extends TaskName> = Parameters<(typeof TASKS)[T]>[0];
