/**
 * GPTQ's dense work on the GPU: the upper Cholesky factor of the damped inverse Hessian (cuSOLVER), the
 * column sweep of each lazy-update block (gptq.cu), and the updates of the columns after it (a cuBLAS fp32
 * GEMM). The weights stay on the device for the whole sweep; rows come back only where group parameters
 * are found (on the host, by the same code as the CPU path) and the codes at the end.
 */
import { GptqError } from "../../../util/errors.js";
import { Cublas } from "../cublas.js";
import { Cusolver } from "../cusolver.js";
import { CudaDevice, DeviceBuffer, Kernel, i32, ptr } from "../device.js";

const THREADS = 128;
const MAX_BLOCK = 128;

function sweepKernel(dev: CudaDevice): Kernel {
  return dev.kernel(import.meta.url, "gptq.cu", "gptq_block");
}

/** The factor U (row-major upper triangle, K x K fp32) of a damped Hessian, on the device. */
export class CudaGptqFactor {
  private hostRows?: Float64Array;

  private constructor(
    private readonly dev: CudaDevice,
    readonly U: DeviceBuffer,
    readonly K: number,
    /** U's diagonal */
    readonly diag: Float64Array,
  ) {}

  /** Factorises a damped K x K Hessian (fp32, processing order); null when it is not positive definite. */
  static of(dev: CudaDevice, damped: Float32Array, K: number): CudaGptqFactor | null {
    const U = dev.upload(damped);
    if (!Cusolver.get(dev).upperCholeskyOfInverse(U, K)) {
      dev.free(U);
      return null;
    }
    const full = dev.download(U, new Float32Array(K * K));
    const diag = new Float64Array(K);
    for (let k = 0; k < K; k++) diag[k] = full[k * K + k];
    if (!diag.every((d) => d > 0 && Number.isFinite(d))) {
      dev.free(U);
      return null;
    }
    return new CudaGptqFactor(dev, U, K, diag);
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
  }
}

/** One sweep's weights (K x N fp32, processing order), codes and block errors on the device. */
export class CudaGptqSweep {
  private readonly w: DeviceBuffer;
  private readonly codesBuf: DeviceBuffer;
  private readonly err: DeviceBuffer;
  private readonly groups: DeviceBuffer;
  private readonly params: { scales: DeviceBuffer; zeros: DeviceBuffer };
  private readonly loss: DeviceBuffer;
  private readonly kernel: Kernel;

  constructor(
    private readonly dev: CudaDevice,
    private readonly factor: CudaGptqFactor,
    w: Float32Array,
    private readonly N: number,
    G: number,
  ) {
    const { K } = factor;
    if (w.length !== K * N) throw new GptqError(`GPTQ sweep: ${w.length} weights, expected ${K} x ${N}`);
    this.kernel = sweepKernel(dev);
    this.w = dev.upload(w);
    this.codesBuf = dev.alloc(K * N);
    this.err = dev.alloc(MAX_BLOCK * N * 4);
    this.groups = dev.alloc(K * 4);
    this.params = { scales: dev.alloc(G * N * 4), zeros: dev.alloc(G * N * 4) };
    this.loss = dev.alloc(8);
  }

  rows(r0: number, r1: number): Float32Array {
    const { N } = this;
    return this.dev.download(this.w.ptr + r0 * N * 4, new Float32Array((r1 - r0) * N));
  }

  block(
    i1: number,
    i2: number,
    groupOf: Int32Array,
    scales: Float32Array,
    zeros: Float32Array,
    maxq: number,
  ): number {
    const { dev, N, factor } = this;
    const count = i2 - i1;
    if (count > MAX_BLOCK)
      throw new GptqError(`GPTQ sweep: blocks of up to ${MAX_BLOCK} columns, got ${count}`);
    // the groups this block uses, uploaded as a contiguous range of rows
    let g0 = Infinity;
    let g1 = -1;
    for (let c = i1; c < i2; c++) {
      g0 = Math.min(g0, groupOf[c]);
      g1 = Math.max(g1, groupOf[c]);
    }
    dev.upload(groupOf.subarray(i1, i2), { ...this.groups, ptr: this.groups.ptr + i1 * 4 });
    const span = (a: Float32Array, b: DeviceBuffer) =>
      dev.upload(a.subarray(g0 * N, (g1 + 1) * N), { ...b, ptr: b.ptr + g0 * N * 4 });
    span(scales, this.params.scales);
    span(zeros, this.params.zeros);
    dev.fill32(this.loss, 0);
    dev.launch(
      this.kernel,
      [Math.ceil(N / THREADS), 1, 1],
      THREADS,
      (MAX_BLOCK * MAX_BLOCK + count * THREADS) * 4,
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
    return dev.download(this.loss, new Float64Array(1))[0];
  }

  lazy(i1: number, i2: number): void {
    const { N, factor } = this;
    const { K } = factor;
    const count = i2 - i1;
    // row-major W[i2:, :] (K - i2 x N) is column-major N x (K - i2); Err (count x N) is N x count;
    // U[i1:i2, i2:] (row-major, ld K) is column-major (K - i2) x count: W' -= Err' U'^T
    Cublas.get(this.dev).gemmF32(
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
    );
  }

  codes(): Uint8Array {
    return this.dev.download(this.codesBuf, new Uint8Array(this.factor.K * this.N));
  }

  dispose(): void {
    for (const b of [
      this.w,
      this.codesBuf,
      this.err,
      this.groups,
      this.params.scales,
      this.params.zeros,
      this.loss,
    ])
      this.dev.free(b);
  }
}
