/**
 * Quantized linear layers on the GPU. `cudaLinear` picks our kernel by the same rules `check` reports:
 * the W4A16 tensor-core GEMM on its prepared layout when it applies, else the GPTQ tensors stay as they
 * are and each call dequantizes them to an fp16 scratch that cuBLAS multiplies.
 */
import { QuantizedLinear } from "../../formats/types.js";
import { layerQuery } from "../../kernels/can-run.js";
import { GPTQ_TS_W4A16, pickKernel } from "../../kernels/gptq-ts.js";
import { GptqError } from "../../util/errors.js";
import { Cublas } from "./cublas.js";
import { CudaDevice, DeviceBuffer } from "./device.js";
import { DeviceGptq, dequantGptq } from "./dequant/dequant.js";
import { scratchOf } from "./scratch.js";
import { w4a16Unsupported } from "./w4a16/layout.js";
import { W4A16Linear, w4a16DeviceUnsupported } from "./w4a16/linear.js";

/** fp16 activations in, fp16 outputs out, all on the device. */
export interface CudaLinear {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly kernel: string;
  /** out[M, N] = a[M, K] · W (+ bias); both fp16 row-major device buffers */
  forward(a: DeviceBuffer, M: number, out: DeviceBuffer): void;
  /** weight (+scale) bytes one forward reads */
  readonly weightBytes: number;
  dispose(): void;
}

/** Any GPTQ layer: dequantize to fp16 (K x N) per call, then cuBLAS. No bias. */
export class DequantLinear implements CudaLinear {
  readonly kernel = "gptq-ts-dequant";
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weightBytes: number;
  constructor(
    private readonly dev: CudaDevice,
    private readonly g: DeviceGptq,
  ) {
    this.inFeatures = g.shape.inFeatures;
    this.outFeatures = g.shape.outFeatures;
    this.weightBytes = g.qweight.bytes + g.qzeros.bytes + g.scales.bytes;
  }

  forward(a: DeviceBuffer, M: number, out: DeviceBuffer): void {
    const K = this.inFeatures;
    const N = this.outFeatures;
    const w = scratchOf(this.dev).dense.get(K * N * 2);
    dequantGptq(this.dev, this.g, w);
    Cublas.get(this.dev).matmul(a, w, out, M, N, K);
  }

  dispose(): void {
    for (const b of [this.g.qweight, this.g.qzeros, this.g.scales, this.g.gIdx]) this.dev.free(b);
  }
}

/**
 * The layer on the GPU with the first of our kernels whose rules it passes (`kernel` forces one).
 * `gptq` gives the stored tensors for the generic path (it is only needed when W4A16 does not apply).
 */
export function cudaLinear(
  dev: CudaDevice,
  layer: QuantizedLinear,
  gptq: () => DeviceGptq,
  kernel?: string,
): CudaLinear {
  const q = layerQuery(layer);
  let rule;
  try {
    rule = pickKernel(q, kernel);
  } catch (e) {
    throw new GptqError(
      `no CUDA kernel runs ${layer.inFeatures}x${layer.outFeatures}: ${(e as Error).message}`,
    );
  }
  const why = w4a16DeviceUnsupported(dev) ?? w4a16Unsupported(layer);
  if (rule === GPTQ_TS_W4A16 && !why) return W4A16Linear.fromLayer(dev, layer);
  if (kernel === GPTQ_TS_W4A16.name) throw new GptqError(`W4A16 kernel: ${why}`);
  if (layer.bias)
    throw new GptqError(
      "the dequant + cuBLAS path takes no bias: add it to the output (as CudaModelLinear does)",
    );
  return new DequantLinear(dev, gptq());
}
