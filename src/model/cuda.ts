/**
 * Running a loaded model's quantized projections on the GPU: each CPU `QuantLinear` is replaced by a
 * `Linear` that converts its fp32 input to fp16, runs our kernel (the one `check` lists for the layer)
 * and returns fp32. Layers no CUDA kernel takes stay on the CPU, and say why.
 */
import { packGptq } from "../formats/gptq.js";
import { QuantizedLinear } from "../formats/types.js";
import { DecoderModel } from "./decoder.js";
import { floatsToHalfs, halfsToFloats } from "../tensor/dtype.js";
import { GptqError } from "../util/errors.js";
import { Linear, QuantLinear } from "../backend/cpu/linear.js";
import { CudaDevice } from "../backend/cuda/device.js";
import { uploadGptq } from "../backend/cuda/dequant/dequant.js";
import { CudaLinear, cudaLinear } from "../backend/cuda/linear.js";

export class CudaModelLinear implements Linear {
  readonly inFeatures: number;
  readonly outFeatures: number;
  private readonly lin: CudaLinear;
  private readonly bias?: Float32Array;

  constructor(
    private readonly dev: CudaDevice,
    layer: QuantizedLinear,
  ) {
    this.inFeatures = layer.inFeatures;
    this.outFeatures = layer.outFeatures;
    // the bias is added here, in fp32, whichever kernel runs
    const bare: QuantizedLinear = { ...layer, bias: undefined };
    this.bias = layer.bias;
    const shape = {
      inFeatures: layer.inFeatures,
      outFeatures: layer.outFeatures,
      bits: layer.bits,
      groupSize: layer.groupSize,
    };
    this.lin = cudaLinear(dev, bare, () => uploadGptq(dev, packGptq(bare, "v2"), shape, "v2"));
  }

  get kernel(): string {
    return this.lin.kernel;
  }

  forward(x: Float32Array, rows: number): Float32Array {
    const N = this.outFeatures;
    const a = this.dev.upload(floatsToHalfs(x.subarray(0, rows * this.inFeatures)));
    const out = this.dev.alloc(rows * N * 2);
    this.lin.forward(a, rows, out);
    const y = halfsToFloats(this.dev.download(out, new Uint16Array(rows * N)));
    this.dev.free(a);
    this.dev.free(out);
    if (this.bias) for (let r = 0; r < rows; r++) for (let n = 0; n < N; n++) y[r * N + n] += this.bias[n];
    return y;
  }
}

export interface CudaPlacement {
  /** projections per kernel name */
  kernels: Record<string, number>;
  /** projections left on the CPU, with the reason */
  onCpu: { name: string; reason: string }[];
}

/** Moves every quantized projection of `model` to the GPU where one of our kernels takes it. */
export function moveToCuda(model: DecoderModel, dev = CudaDevice.get()): CudaPlacement {
  const placement: CudaPlacement = { kernels: {}, onCpu: [] };
  for (const layer of model.layers)
    for (const name of Object.keys(layer.linears)) {
      const lin = layer.linears[name];
      if (!(lin instanceof QuantLinear)) continue;
      try {
        const g = new CudaModelLinear(dev, lin.toQuantized());
        layer.linears[name] = g;
        placement.kernels[g.kernel] = (placement.kernels[g.kernel] ?? 0) + 1;
      } catch (e) {
        if (!(e instanceof GptqError)) throw e;
        placement.onCpu.push({ name: layer.linearPrefix(name), reason: e.message });
      }
    }
  return placement;
}
