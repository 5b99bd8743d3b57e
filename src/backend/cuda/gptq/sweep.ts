/**
 * GPTQ's dense work on the GPU: the upper Cholesky factor of the damped inverse Hessian (cuSOLVER), the
 * column sweep of each lazy-update block (gptq.cu), and the updates of the columns after it (a cuBLAS fp32
 * GEMM). The weights stay on the device for the whole sweep; group parameters are found there too (min-max
 * and the "mse" and "hessian" clip searches, as the host's findParams finds them); codes come back at the
 * end.
 */
import { GptqError } from "../../../util/errors.js";
import { Cublas } from "../cublas.js";
import { Cusolver } from "../cusolver.js";
import { CudaDevice, DeviceBuffer, Kernel, f64, i32, ptr } from "../device.js";

/** One of gptq.cu's kernels. */
export function gptqKernel(dev: CudaDevice, name: string): Kernel {
  return dev.kernel(import.meta.url, "gptq.cu", name);
}

const MAX_BLOCK = 128;
/** gptq_search_params' threads: 32 rows x 16 lanes (SEARCH_ROWS x SEARCH_LANES in gptq.cu) */
const SEARCH_ROWS = 32;
const SEARCH_THREADS = SEARCH_ROWS * 16;

/**
 * A group's clip search as findParams runs it (clip "mse": sum |w - q|^norm; "hessian": squared errors
 * weighed by 1 / U[k, k]^2): candidates scale the range's ends by 1 - i / grid (i < shrinks), then by
 * 1 + i / grid (1 <= i <= widens), then, asymmetric with splitRange, two rounds of each end alone.
 */
export interface ClipSearch {
  maxq: number;
  sym: boolean;
  clip: "mse" | "hessian";
  norm: number;
  grid: number;
  shrinks: number;
  widens: number;
  splitRange: boolean;
}

/** Rows a thread block: the most (up to 128) that still give two waves of blocks over the SMs. */
function rowsPerBlock(dev: CudaDevice, N: number): number {
  let t = 128;
  while (t > 32 && Math.ceil(N / t) < 2 * dev.info.smCount) t /= 2;
  return t;
}

/** The factor U (row-major upper triangle, K x K fp32) of a damped Hessian, on the device. */
export class CudaGptqFactor {
  private hostRows?: Float64Array;
  /** 1 / U[k, k]^2: the weight GPTQ's loss gives column k's error (processing order) */
  readonly colWeight: Float64Array;
  private colWeightBuf?: DeviceBuffer;

  private constructor(
    private readonly dev: CudaDevice,
    readonly U: DeviceBuffer,
    readonly K: number,
    /** U's diagonal */
    readonly diag: Float64Array,
  ) {
    this.colWeight = Float64Array.from(diag, (x) => 1 / (x * x));
  }

  /** colWeight on the device (float64), for the Hessian-weighted searches */
  colWeightOnDevice(): DeviceBuffer {
    return (this.colWeightBuf ??= this.dev.upload(this.colWeight));
  }

  /**
   * Factorises a damped K x K Hessian (fp32, processing order) in place, taking ownership of the buffer;
   * null (the buffer freed) when it is not positive definite.
   */
  static factorise(dev: CudaDevice, h: DeviceBuffer, K: number): CudaGptqFactor | null {
    if (Cusolver.get(dev).upperCholeskyOfInverse(h, K)) {
      const d = dev.alloc(K * 4);
      dev.launch(gptqKernel(dev, "gptq_diagonal"), [Math.ceil(K / 256), 1, 1], 256, 0, [
        ptr(h),
        i32(K),
        ptr(d),
      ]);
      const diag = Float64Array.from(dev.download(d, new Float32Array(K)));
      dev.free(d);
      if (diag.every((x) => x > 0 && Number.isFinite(x))) return new CudaGptqFactor(dev, h, K, diag);
    }
    dev.free(h);
    return null;
  }

  /** U on the host (upper triangle; the lower one zero), for searches that score by GPTQ's own loss. */
  rows(): Float64Array {
    if (!this.hostRows) {
      const { K } = this;
      const full = this.dev.download(this.U, new Float32Array(K * K));
      const out = new Float64Array(K * K);
      for (let a = 0; a < K; a++) for (let b = a; b < K; b++) out[a * K + b] = full[a * K + b];
      this.hostRows = out;
    }
    return this.hostRows;
  }

  dispose(): void {
    this.dev.free(this.U);
    if (this.colWeightBuf) this.dev.free(this.colWeightBuf);
  }
}

/**
 * One sweep's weights (K x N fp32, processing order: its own upload, or a device buffer it borrows and
 * updates in place), codes, group parameters and block errors on the device.
 */
export class CudaGptqSweep {
  private readonly w: DeviceBuffer;
  private readonly ownsWeights: boolean;
  private readonly codesBuf: DeviceBuffer;
  private readonly err: DeviceBuffer;
  private readonly groups: DeviceBuffer;
  private readonly params: { scales: DeviceBuffer; zeros: DeviceBuffer };
  private readonly loss: DeviceBuffer;
  private readonly rows: number;

  constructor(
    private readonly dev: CudaDevice,
    private readonly factor: CudaGptqFactor,
    w: Float32Array | DeviceBuffer,
    private readonly N: number,
    private readonly G: number,
  ) {
    const { K } = factor;
    if (w instanceof Float32Array) {
      if (w.length !== K * N) throw new GptqError(`GPTQ sweep: ${w.length} weights, expected ${K} x ${N}`);
      this.w = dev.upload(w);
      this.ownsWeights = true;
    } else {
      this.w = w;
      this.ownsWeights = false;
    }
    this.rows = rowsPerBlock(dev, N);
    this.codesBuf = dev.alloc(K * N);
    this.err = dev.alloc(MAX_BLOCK * N * 4);
    this.groups = dev.alloc(K * 4);
    this.params = { scales: dev.alloc(G * N * 4), zeros: dev.alloc(G * N * 4) };
    this.loss = dev.alloc(8);
    dev.fill32(this.loss, 0);
  }

  rowsOf(r0: number, r1: number): Float32Array {
    const { N } = this;
    return this.dev.download(this.w.ptr + r0 * N * 4, new Float32Array((r1 - r0) * N));
  }

  setParams(scales: Float32Array, zeros: Float32Array, g0: number, g1: number): void {
    const { dev, N } = this;
    const span = (a: Float32Array, b: DeviceBuffer) =>
      dev.upload(a.subarray(g0 * N, (g1 + 1) * N), { ...b, ptr: b.ptr + g0 * N * 4 });
    span(scales, this.params.scales);
    span(zeros, this.params.zeros);
  }

  minmaxParams(c: number, cols: number, g: number, maxq: number, sym: boolean): void {
    const { dev, N } = this;
    dev.launch(gptqKernel(dev, "gptq_minmax_params"), [Math.ceil(N / 256), 1, 1], 256, 0, [
      ptr(this.w),
      i32(N),
      i32(c),
      i32(cols),
      i32(g),
      i32(maxq),
      i32(sym ? 1 : 0),
      ptr(this.params.scales),
      ptr(this.params.zeros),
    ]);
  }

  /**
   * Parameters of group g from rows [c, c + cols) as they stand, by a clip search (gptq_search_params,
   * one launch; column k's error weighs the factor's colWeight[k] for clip "hessian").
   */
  searchParams(c: number, cols: number, g: number, search: ClipSearch): void {
    const { dev, N, factor } = this;
    const hessian = search.clip === "hessian";
    dev.launch(gptqKernel(dev, "gptq_search_params"), [Math.ceil(N / SEARCH_ROWS), 1, 1], SEARCH_THREADS, 0, [
      ptr(this.w),
      i32(N),
      i32(c),
      i32(cols),
      i32(g),
      i32(search.maxq),
      i32(search.sym ? 1 : 0),
      ptr(hessian ? factor.colWeightOnDevice() : 0),
      i32(hessian ? 1 : 0),
      f64(search.norm),
      i32(search.grid),
      i32(search.shrinks),
      i32(search.widens),
      i32(search.splitRange ? 1 : 0),
      ptr(this.params.scales),
      ptr(this.params.zeros),
    ]);
  }

  /** groups g0 ..= g1 of the parameters into the host's arrays (G x N) */
  getParams(scales: Float32Array, zeros: Float32Array, g0: number, g1: number): void {
    const { dev, N } = this;
    const span = (b: DeviceBuffer, a: Float32Array) =>
      dev.download({ ...b, ptr: b.ptr + g0 * N * 4 }, a.subarray(g0 * N, (g1 + 1) * N));
    span(this.params.scales, scales);
    span(this.params.zeros, zeros);
  }

  block(i1: number, i2: number, groupOf: Int32Array, maxq: number): void {
    const { dev, N, factor, rows } = this;
    const count = i2 - i1;
    if (count > MAX_BLOCK)
      throw new GptqError(`GPTQ sweep: blocks of up to ${MAX_BLOCK} columns, got ${count}`);
    dev.upload(groupOf.subarray(i1, i2), { ...this.groups, ptr: this.groups.ptr + i1 * 4 });
    dev.launch(
      gptqKernel(dev, "gptq_block"),
      [Math.ceil(N / rows), 1, 1],
      rows,
      (MAX_BLOCK * MAX_BLOCK + count * rows) * 4,
      [
        ptr(this.w),
        ptr(factor.U),
        i32(factor.K),
        i32(N),
        i32(i1),
        i32(count),
        ptr(this.groups),
        ptr(this.params.scales),
        ptr(this.params.zeros),
        i32(maxq),
        ptr(this.codesBuf),
        ptr(this.err),
        ptr(this.loss),
      ],
    );
  }

  takeLoss(): number {
    const l = this.dev.download(this.loss, new Float64Array(1))[0];
    this.dev.fill32(this.loss, 0);
    return l;
  }
  lazy(i1: number, i2: number): void {
    const { N, factor } = this;
    const { K } = factor;
    const count = i2 - i1;
    // row-major W[i2:, :] (K - i2 x N) is column-major N x (K - i2); Err (count x N) is N x count;
    // U[i1:i2, i2:] (row-major, ld K) is column-major (K - i2) x count: W' -= Err' U'^T
    Cublas.get(this.dev).gemmEx(
      false,
      true,
      N,
      K - i2,
      count,
      -1,
      this.err.ptr,
      N,
      factor.U.ptr + (i1 * K + i2) * 4,
      K,
      1,
      this.w.ptr + i2 * N * 4,
      N,
      "f32",
      "f32",
    );
  }

  codes(): Uint8Array {
    return this.dev.download(this.codesBuf, new Uint8Array(this.factor.K * this.N));
  }

  dispose(): void {
    if (this.ownsWeights) this.dev.free(this.w);
    for (const b of [this.codesBuf, this.err, this.groups, this.params.scales, this.params.zeros, this.loss])
      this.dev.free(b);
  }
}
