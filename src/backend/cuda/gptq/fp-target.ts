/**
 * fp-target on the device (quant/fp-target.ts on the host): the cross term C = 2/n sum_r f_r q_r^T of the
 * unquantized model's inputs F and the quantized path's Q, from fp16 rows of the calibration forward (one
 * tensor-core GEMM per chunk, fp32 accumulation, rescaled as the Hessian is), and the target
 * W* = W (C + l I) (H + l I)^-1 solved in fp64 as the CPU does in float64: H + l I factorised once per
 * group (cuSOLVER potrf), then per projection R = W (C + l I) (one cuBLAS GEMM) and W*^T = (H + l I)^-1 R^T
 * (potrs). fp64 because the solve scales rounding by the condition number of H + l I, which the ridge
 * bounds only to about K / damp (4e5 at K = 4096, damp 0.01): fp32 would leave percent-level errors in W*.
 */
import { Cublas } from "../cublas.js";
import { Cusolver } from "../cusolver.js";
import { CudaDevice, DeviceBuffer, KernelArg, i32, ptr, u64 } from "../device.js";
import { CudaRowProducts } from "./hessian.js";
import { gptqKernel } from "./sweep.js";

const THREADS = 256;

/** C = 2/n sum_r f_r q_r^T (K x K fp32 on the device), rescaled batch by batch as the Hessian is. */
export class CudaCrossAccumulator extends CudaRowProducts {
  /** Adds `rows` row-aligned fp16 rows of the fp model's inputs f and the quantized path's q (rows x K each). */
  addDevice(f: DeviceBuffer | number, q: DeviceBuffer | number, rows: number): void {
    const at = (x: DeviceBuffer | number) => (typeof x === "number" ? x : x.ptr);
    if (rows > 0) this.accumulate(at(f), at(q), rows, "f16");
  }

  /** K x K on the host, float64. */
  get C(): Float64Array {
    return this.download();
  }
}

/** The ridge of the solve from H's diagonal: l, and what each diagonal entry of H gets (quant's fpTargetRidge). */
export type FpTargetRidge = (diagH: Float64Array) => { lambda: number; onH: Float64Array };

/** One group's fp target: the Cholesky factor of H + l I and C + l I (K x K fp64 each, on the device). */
export class CudaFpTarget {
  private constructor(
    private readonly dev: CudaDevice,
    private readonly factor: DeviceBuffer,
    private readonly right: DeviceBuffer,
    readonly K: number,
  ) {}

  /**
   * From the cross term C and the Hessian H (K x K fp32 on the device, left as they are); null when H + l I
   * is not positive definite (W is then its own target, as on the CPU).
   */
  static prepare(
    dev: CudaDevice,
    C: DeviceBuffer,
    H: DeviceBuffer,
    K: number,
    ridge: FpTargetRidge,
  ): CudaFpTarget | null {
    const d = dev.alloc(K * 4);
    dev.launch(gptqKernel(dev, "gptq_diagonal"), [Math.ceil(K / THREADS), 1, 1], THREADS, 0, [
      ptr(H),
      i32(K),
      ptr(d),
    ]);
    const diag = Float64Array.from(dev.download(d, new Float32Array(K)));
    dev.free(d);
    const { lambda, onH } = ridge(diag);
    const factor = widen(dev, H, K * K, K, onH);
    const right = widen(dev, C, K * K, K, new Float64Array(K).fill(lambda));
    if (Cusolver.get(dev).choleskyF64(factor, K)) return new CudaFpTarget(dev, factor, right, K);
    dev.free(factor);
    dev.free(right);
    return null;
  }

  /** W* for W (fp32 or fp16 N x K on the device, left as it is): a new fp32 N x K buffer. */
  weights(W: DeviceBuffer, N: number, type: "f16" | "f32" = "f32"): DeviceBuffer {
    const { dev, K } = this;
    let w: DeviceBuffer;
    if (type === "f32") w = widen(dev, W, N * K, K);
    else {
      w = dev.alloc(N * K * 8);
      launch(dev, "fp_target_widen_f16", N * K, [ptr(W), u64(N * K), ptr(w)]);
    }
    const r = dev.alloc(N * K * 8);
    // row-major W (N x K) is column-major W^T: R^T = (C + l I)^T W^T, (C + l I)^T being C + l I read column-major
    Cublas.get(dev).gemmEx(false, false, K, N, K, 1, this.right.ptr, K, w.ptr, K, 0, r.ptr, K, "f64", "f64");
    dev.free(w);
    // (H + l I) W*^T = R^T: column-major K x N right-hand sides, W* row-major in their place
    Cusolver.get(dev).solveCholeskyF64(this.factor, K, r, N);
    const out = dev.alloc(N * K * 4);
    launch(dev, "fp_target_narrow", N * K, [ptr(r), u64(N * K), ptr(out)]);
    dev.free(r);
    return out;
  }

  dispose(): void {
    this.dev.free(this.factor);
    this.dev.free(this.right);
  }
}

/** fp32 `count` values -> a new fp64 buffer, `onDiagonal` (K values) added to a K x K matrix's diagonal. */
function widen(
  dev: CudaDevice,
  src: DeviceBuffer,
  count: number,
  K: number,
  onDiagonal?: Float64Array,
): DeviceBuffer {
  const out = dev.alloc(count * 8);
  const diag = onDiagonal && dev.upload(onDiagonal);
  launch(dev, "fp_target_widen", count, [ptr(src), u64(count), i32(K), ptr(diag ?? 0), ptr(out)]);
  if (diag) dev.free(diag);
  return out;
}

function launch(dev: CudaDevice, name: string, count: number, args: KernelArg[]): void {
  const k = dev.kernel(import.meta.url, "fp-target.cu", name);
  dev.launch(k, [Math.ceil(count / THREADS), 1, 1], THREADS, 0, args);
}
