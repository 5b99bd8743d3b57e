/**
 * A layer's GPTQ problem on the device: the Hessian (K x K fp32) and the working weight (K x N fp32,
 * processing order), prepared there (dead inputs, act-order permutation, damping) so neither makes a round
 * trip through the host; only the diagonal (K values) comes back, for the damping mean and the order.
 */
import { QuantizedLinear } from "../../../formats/types.js";
import { GptqError } from "../../../util/errors.js";
import { Cublas } from "../cublas.js";
import { CudaDevice, DeviceBuffer, i32, f32, ptr, u64 } from "../device.js";
import { RefitArrays } from "../../../tensor/refit-input.js";
import { refitOnDevice } from "./refit.js";
import { CudaGptqFactor, gptqKernel } from "./sweep.js";

const THREADS = 256;
const blocks = (n: number) => Math.ceil(n / THREADS);

export class CudaGptqData {
  private constructor(
    private readonly dev: CudaDevice,
    /** K x K fp32 */
    private h: DeviceBuffer,
    /** K x N fp32, the working weight */
    private w: DeviceBuffer,
    readonly N: number,
    readonly K: number,
  ) {}

  /** From host arrays: W (N x K, nn.Linear layout) and H (K x K). */
  static fromHost(dev: CudaDevice, W: Float32Array, H: Float64Array, N: number, K: number): CudaGptqData {
    const raw = dev.upload(W);
    try {
      return new CudaGptqData(dev, dev.upload(new Float32Array(H)), transposed(dev, raw, "f32", N, K), N, K);
    } finally {
      dev.free(raw);
    }
  }

  /**
   * From device buffers: `h` (K x K fp32, owned from here on) and the weight (N x K, fp16 or fp32, left as
   * it is).
   */
  static fromDevice(
    dev: CudaDevice,
    h: DeviceBuffer,
    weight: DeviceBuffer,
    dtype: "f16" | "f32",
    N: number,
    K: number,
  ): CudaGptqData {
    if (h.bytes < K * K * 4) throw new GptqError(`GPTQ: a Hessian of ${h.bytes} bytes for K = ${K}`);
    return new CudaGptqData(dev, h, transposed(dev, weight, dtype, N, K), N, K);
  }

  /** the working weight (K x N fp32), updated in place by a sweep */
  get weight(): DeviceBuffer {
    return this.w;
  }

  diagonal(): Float64Array {
    return hessianDiagonal(this.dev, this.h, this.K);
  }

  clearDead(dead: readonly number[]): void {
    const { dev, N, K } = this;
    const list = dev.upload(Int32Array.from(dead));
    dev.launch(gptqKernel(dev, "gptq_set_diagonal"), [blocks(dead.length), 1, 1], THREADS, 0, [
      ptr(this.h),
      i32(K),
      ptr(list),
      i32(dead.length),
      f32(1),
      i32(1),
    ]);
    dev.free(list);
    for (const k of dead) dev.fill32({ ...this.w, ptr: this.w.ptr + k * N * 4 }, 0, N);
  }

  permute(perm: Int32Array): void {
    const { dev, N, K } = this;
    const p = dev.upload(perm);
    const h = dev.alloc(K * K * 4);
    const w = dev.alloc(K * N * 4);
    dev.launch(gptqKernel(dev, "gptq_permute_square"), [blocks(K), K, 1], THREADS, 0, [
      ptr(this.h),
      ptr(p),
      i32(K),
      ptr(h),
    ]);
    dev.launch(gptqKernel(dev, "gptq_permute_rows"), [blocks(N), K, 1], THREADS, 0, [
      ptr(this.w),
      ptr(p),
      i32(N),
      ptr(w),
    ]);
    for (const b of [p, this.h, this.w]) dev.free(b);
    this.h = h;
    this.w = w;
  }

  weights(): Float32Array {
    return this.dev.download(this.w, new Float32Array(this.K * this.N));
  }

  /** H with `add` on its diagonal, on the host (float64): a view of the prepared problem for checks. */
  damped(add: number): Float64Array {
    const { K } = this;
    const h = Float64Array.from(this.dev.download(this.h, new Float32Array(K * K)));
    for (let k = 0; k < K; k++) h[k * K + k] += add;
    return h;
  }

  /** Refits r.scales against H + add I on the device (see refit.ts); the error after the refit. */
  refit(add: number, r: RefitArrays): number {
    return refitOnDevice(this.dev, this.h, add, r);
  }

  /** The factor of H + add I; null when that is not positive definite. */
  tryFactor(add: number): CudaGptqFactor | null {
    const { dev, K } = this;
    const u = dev.alloc(K * K * 4);
    dev.copy(u, this.h, K * K * 4);
    dev.launch(gptqKernel(dev, "gptq_set_diagonal"), [blocks(K), 1, 1], THREADS, 0, [
      ptr(u),
      i32(K),
      ptr(0),
      i32(K),
      f32(add),
      i32(0),
    ]);
    return CudaGptqFactor.factorise(dev, u, K);
  }

  dispose(): void {
    this.dev.free(this.h);
    this.dev.free(this.w);
  }
}

/** The diagonal of a K x K fp32 matrix on the device, on the host. */
export function hessianDiagonal(dev: CudaDevice, H: DeviceBuffer, K: number): Float64Array {
  const out = dev.alloc(K * 4);
  dev.launch(gptqKernel(dev, "gptq_diagonal"), [blocks(K), 1, 1], THREADS, 0, [ptr(H), i32(K), ptr(out)]);
  const d = Float64Array.from(dev.download(out, new Float32Array(K)));
  dev.free(out);
  return d;
}

function transposed(
  dev: CudaDevice,
  W: DeviceBuffer,
  dtype: "f16" | "f32",
  N: number,
  K: number,
): DeviceBuffer {
  const out = dev.alloc(K * N * 4);
  dev.launch(
    gptqKernel(dev, dtype === "f16" ? "gptq_weight_f16" : "gptq_weight_f32"),
    [Math.ceil(K / 32), Math.ceil(N / 32), 1],
    256,
    0,
    [ptr(W), i32(N), i32(K), ptr(out)],
  );
  return out;
}

/** A quantized layer's weight dequantized on the device: fp16, nn.Linear layout (N x K). */
export function dequantizeOnDevice(dev: CudaDevice, layer: QuantizedLinear): DeviceBuffer {
  const { inFeatures: K, outFeatures: N } = layer;
  const codes = dev.upload(layer.codes);
  const scales = dev.upload(layer.scales);
  const zeros = dev.upload(Float32Array.from(layer.zeros));
  const gIdx = dev.upload(layer.gIdx);
  const out = dev.alloc(N * K * 2);
  dev.launch(gptqKernel(dev, "gptq_dequantize"), [blocks(N), K, 1], THREADS, 0, [
    ptr(codes),
    ptr(scales),
    ptr(zeros),
    ptr(gIdx),
    i32(N),
    i32(K),
    ptr(out),
  ]);
  for (const b of [codes, scales, zeros, gIdx]) dev.free(b);
  return out;
}

/**
 * ||(W - Q) X^T||^2 / ||W X^T||^2 from the Hessian (proportional to X^T X), over every output row:
 * sum_n d_n^T H d_n / sum_n w_n^T H w_n, d = w - q; W (fp16 or fp32) and Q (fp16) N x K, H fp32 K x K,
 * all on the device. Two fp32 GEMMs of N x K x K.
 */
export function outputErrorOnDevice(
  dev: CudaDevice,
  W: DeviceBuffer,
  wType: "f16" | "f32",
  Q: DeviceBuffer,
  H: DeviceBuffer,
  N: number,
  K: number,
): number {
  const count = N * K;
  const wf = dev.alloc(count * 4);
  const d = dev.alloc(count * 4);
  const wh = dev.alloc(count * 4);
  const dh = dev.alloc(count * 4);
  const sums = dev.alloc(16);
  dev.fill32(sums, 0);
  dev.launch(gptqKernel(dev, `gptq_error_inputs_${wType}`), [blocks(count), 1, 1], THREADS, 0, [
    ptr(W),
    ptr(Q),
    u64(count),
    ptr(wf),
    ptr(d),
  ]);
  // row-major X (N x K) is column-major K x N: (X H)^T = H X^T, H symmetric
  const blas = Cublas.get(dev);
  blas.gemmEx(false, false, K, N, K, 1, H.ptr, K, d.ptr, K, 0, dh.ptr, K, "f32", "f32");
  blas.gemmEx(false, false, K, N, K, 1, H.ptr, K, wf.ptr, K, 0, wh.ptr, K, "f32", "f32");
  dev.launch(gptqKernel(dev, "gptq_quadratic_forms"), [Math.min(blocks(count), 1024), 1, 1], THREADS, 0, [
    ptr(dh),
    ptr(d),
    ptr(wh),
    ptr(wf),
    u64(count),
    ptr(sums),
  ]);
  const [num, den] = dev.download(sums, new Float64Array(2));
  for (const b of [wf, d, wh, dh, sums]) dev.free(b);
  return den > 0 ? num / den : 0;
}
