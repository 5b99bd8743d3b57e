/**
 * The GPTQ Hessian H = 2/n sum_x x x^T accumulated on the GPU, batch by batch with AutoGPTQ's running
 * rescale (H *= n / (n + rows), then + 2 / (n + rows) X^T X): one fp32 GEMM per batch (cuBLAS).
 */
import { checkCalibrationRows } from "../../../tensor/tensor.js";
import { GptqError } from "../../../util/errors.js";
import { Cublas } from "../cublas.js";
import { CudaDevice, DeviceBuffer } from "../device.js";

export class CudaHessian {
  private readonly h: DeviceBuffer;
  private x?: DeviceBuffer;
  private n = 0;

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
    const total = this.n + rows;
    // row-major X (rows x K) is column-major K x rows: H = keep H + alpha X' X'^T (symmetric either way)
    Cublas.get(this.dev).gemmF32(
      false,
      true,
      K,
      K,
      rows,
      2 / total,
      this.x.ptr,
      K,
      this.x.ptr,
      K,
      this.n / total,
      this.h.ptr,
      K,
    );
    this.n = total;
  }

  /** K x K on the host, float64. */
  get H(): Float64Array {
    const K = this.inFeatures;
    return Float64Array.from(this.dev.download(this.h, new Float32Array(K * K)));
  }

  dispose(): void {
    this.dev.free(this.h);
    if (this.x) this.dev.free(this.x);
  }
}
