/**
 * The GPTQ Hessian H = 2/n sum_x x x^T accumulated on the GPU, batch by batch with AutoGPTQ's running
 * rescale (H *= n / (n + rows), then + 2 / (n + rows) X^T X): one GEMM per batch (cuBLAS), fp32 from
 * host rows, or fp16 rows already on the device (the calibration forward's) on the tensor cores with fp32
 * accumulation. The same running mean of products of two row-aligned inputs serves fp-target's cross term.
 */
import { checkCalibrationRows } from "../../../tensor/tensor.js";
import { GptqError } from "../../../util/errors.js";
import { Cublas } from "../cublas.js";
import { CudaDevice, DeviceBuffer } from "../device.js";

/** M = 2/n sum_r a_r b_r^T (K x K fp32 on the device) over the n rows added so far, rescaled as the Hessian is. */
export class CudaRowProducts {
  private readonly m: DeviceBuffer;
  private n = 0;
  private taken = false;

  constructor(
    protected readonly dev: CudaDevice,
    readonly inFeatures: number,
  ) {
    if (!(Number.isInteger(inFeatures) && inFeatures > 0))
      throw new GptqError(`in_features must be a positive integer, got ${inFeatures}`);
    this.m = dev.alloc(inFeatures * inFeatures * 4);
    dev.fill32(this.m, 0);
  }

  /** Adds `rows` rows of a and b (rows x K row-major each, device addresses). */
  protected accumulate(a: number, b: number, rows: number, type: "f16" | "f32"): void {
    const K = this.inFeatures;
    const total = this.n + rows;
    // row-major X (rows x K) is column-major K x rows: M^T = keep M^T + alpha B' A'^T, i.e. row-major M
    Cublas.get(this.dev).gemmEx(
      false,
      true,
      K,
      K,
      rows,
      2 / total,
      b,
      K,
      a,
      K,
      this.n / total,
      this.m.ptr,
      K,
      type,
      "f32",
    );
    this.n = total;
  }

  /** M on the device (K x K fp32), handed over: the accumulator is spent afterwards. */
  take(): DeviceBuffer {
    this.taken = true;
    return this.m;
  }

  /** M on the host, float64. */
  protected download(): Float64Array {
    const K = this.inFeatures;
    return Float64Array.from(this.dev.download(this.m, new Float32Array(K * K)));
  }

  dispose(): void {
    if (!this.taken) this.dev.free(this.m);
  }
}

export class CudaHessian extends CudaRowProducts {
  private x?: DeviceBuffer;

  /** Adds `rows` input rows (x is rows x K row-major). */
  add(x: Float32Array, rows: number): void {
    const K = this.inFeatures;
    checkCalibrationRows(x, rows, K);
    if (rows === 0) return;
    if (!this.x || this.x.bytes < x.byteLength) {
      if (this.x) this.dev.free(this.x);
      this.x = this.dev.alloc(x.byteLength);
    }
    this.dev.upload(x, this.x);
    this.accumulate(this.x.ptr, this.x.ptr, rows, "f32");
  }

  /** Adds `rows` fp16 input rows already on the device (rows x K row-major, at `x`). */
  addDevice(x: DeviceBuffer | number, rows: number): void {
    const p = typeof x === "number" ? x : x.ptr;
    if (rows > 0) this.accumulate(p, p, rows, "f16");
  }

  override take(): DeviceBuffer {
    this.freeRows();
    return super.take();
  }

  /** K x K on the host, float64. */
  get H(): Float64Array {
    return this.download();
  }

  override dispose(): void {
    this.freeRows();
    super.dispose();
  }

  /** the staging buffer of host rows */
  private freeRows(): void {
    if (this.x) this.dev.free(this.x);
    this.x = undefined;
  }
}
