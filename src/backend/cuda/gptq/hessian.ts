/**
 * The GPTQ Hessian H = 2/n sum_x x x^T accumulated on the GPU, batch by batch with AutoGPTQ's running
 * rescale (H *= n / (n + rows), then + 2 / (n + rows) X^T X): one GEMM per batch (cuBLAS), fp32 from
 * host rows, or fp16 rows already on the device (the calibration forward's) on the tensor cores with fp32
 * accumulation.
 */
import { checkCalibrationRows } from "../../../tensor/tensor.js";
import { GptqError } from "../../../util/errors.js";
import { Cublas } from "../cublas.js";
import { CudaDevice, DeviceBuffer } from "../device.js";

export class CudaHessian {
  private readonly h: DeviceBuffer;
  private x?: DeviceBuffer;
  private n = 0;
  private taken = false;

  constructor(
    private readonly dev: CudaDevice,
    readonly inFeatures: number,
  ) {
    if (!(Number.isInteger(inFeatures) && inFeatures > 0))
      throw new GptqError(`in_features must be a positive integer, got ${inFeatures}`);
    this.h = dev.alloc(inFeatures * inFeatures * 4);
    dev.fill32(this.h, 0);
  }

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
    this.accumulate(this.x.ptr, rows, "f32");
  }

  /** Adds `rows` fp16 input rows already on the device (rows x K row-major, at `x`). */
  addDevice(x: DeviceBuffer | number, rows: number): void {
    if (rows > 0) this.accumulate(typeof x === "number" ? x : x.ptr, rows, "f16");
  }

  private accumulate(x: number, rows: number, type: "f16" | "f32"): void {
    const K = this.inFeatures;
    const total = this.n + rows;
    // row-major X (rows x K) is column-major K x rows: H = keep H + alpha X' X'^T (symmetric either way)
    Cublas.get(this.dev).gemmEx(
      false,
      true,
      K,
      K,
      rows,
      2 / total,
      x,
      K,
      x,
      K,
      this.n / total,
      this.h.ptr,
      K,
      type,
      "f32",
    );
    this.n = total;
  }

  /** H on the device (K x K fp32), handed over: the accumulator is spent afterwards. */
  take(): DeviceBuffer {
    if (this.x) this.dev.free(this.x);
    this.x = undefined;
    this.taken = true;
    return this.h;
  }

  /** K x K on the host, float64. */
  get H(): Float64Array {
    const K = this.inFeatures;
    return Float64Array.from(this.dev.download(this.h, new Float32Array(K * K)));
  }

  dispose(): void {
    if (!this.taken) this.dev.free(this.h);
    if (this.x) this.dev.free(this.x);
  }
}
