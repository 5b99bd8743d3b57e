/**
 * Running a loaded model's quantized projections on the GPU: each CPU `QuantLinear` is replaced by a
 * `Linear` that converts its fp32 input to fp16, runs our kernel (the one `check` lists for the layer)
 * and returns fp32. Layers no CUDA kernel takes stay on the CPU, and say why. And a whole decoder layer
 * on the GPU (`cudaDecoderLayer`), built from a CPU one, for calibration.
 */
import { packGptq } from "../formats/gptq.js";
import { QuantizedLinear } from "../formats/types.js";
import { DecoderLayer, DecoderModel } from "./decoder.js";
import { FamilySpec, ModelConfig, Role } from "./families/types.js";
import { floatsToHalfs, halfsToFloats } from "../tensor/dtype.js";
import { GptqError } from "../util/errors.js";
import { DenseLinear, Linear, QuantLinear } from "../backend/cpu/linear.js";
import { CudaDevice } from "../backend/cuda/device.js";
import { uploadGptq } from "../backend/cuda/dequant/dequant.js";
import { CudaLinear, cudaLinear } from "../backend/cuda/linear.js";
import {
  CudaDecoderLayer,
  CudaDecoderSpec,
  DecoderLinearName,
  DecoderLinearSpec,
} from "../backend/cuda/decoder/decoder.js";

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

/** The GPU decoder's projections by the role each computes. */
export const DECODER_LINEARS: Record<DecoderLinearName, Role> = {
  q_proj: "q",
  k_proj: "k",
  v_proj: "v",
  o_proj: "o",
  gate_proj: "gate",
  up_proj: "up",
  down_proj: "down",
};

/**
 * Why the GPU decoder layer cannot compute a family's layers (undefined when it can): it runs the Llama
 * block (RMSNorm before each half, rotary, grouped-query attention with a sliding window, SwiGLU, biases).
 */
export function cudaDecoderUnsupported(f: FamilySpec, c: ModelConfig): string | undefined {
  const norms = f.norms(c).map((n) => n.role);
  const unsupported = [
    f.layout(c) !== "sequential" && "parallel attention and MLP",
    f.norm !== "rms" && (f.norm === "layer" ? "LayerNorm" : "(1 + w) RMSNorm"),
    f.mlp !== "gated" && (f.mlp === "experts" ? "a mixture of experts" : "a plain MLP"),
    c.hiddenAct !== "silu" && `${c.hiddenAct} activation`,
    f.positions !== "rope" && "learned positions",
    c.ropeScaling.type === "longrope" && "long-rope scaling",
    c.localRopeTheta !== undefined && "per-layer rotary bases",
    (norms.includes("q") || norms.includes("k")) && "q/k norms",
    (norms.includes("attentionOut") || norms.includes("mlpOut")) && "norms after the blocks",
    c.attentionSoftcap !== undefined && "attention soft-capping",
    c.embedScale !== undefined && "scaled embeddings",
    Math.abs(c.attentionScale * Math.sqrt(c.headDim) - 1) > 1e-6 && "a non-standard attention scale",
  ].filter(Boolean);
  return unsupported.length
    ? `the GPU decoder layer runs Llama-style blocks; ${f.name} has ${unsupported.join(", ")}`
    : undefined;
}

/** The first projection of `layer` stored fused (several roles in one weight), by tensor prefix. */
export function fusedProjection(layer: DecoderLayer): string | undefined {
  for (const role of Object.values(DECODER_LINEARS)) {
    const names = layer.linearsFor([role]);
    const fused = names.find((n) => layer.segmentsOf(n).length !== 1) ?? names[1];
    if (fused) return layer.linearPrefix(fused);
  }
  return undefined;
}

/**
 * What a GPU decoder layer needs of a CPU one whose projections are all dense (before quantization):
 * weights and biases, norms, config, and the rotary tables for sequences of up to `positions` tokens.
 * The arrays are the layer's own, not copies.
 */
export function decoderSpec(layer: DecoderLayer, positions: number): CudaDecoderSpec {
  if (!(Number.isInteger(positions) && positions > 0))
    throw new GptqError(`decoder layer on the GPU: positions must be a positive integer, got ${positions}`);
  const why = cudaDecoderUnsupported(layer.family, layer.config);
  if (why) throw new GptqError(why);
  const fused = fusedProjection(layer);
  if (fused) throw new GptqError(`${fused} is fused: the GPU decoder layer takes one projection per role`);
  const linears = {} as Record<DecoderLinearName, DecoderLinearSpec>;
  for (const [name, role] of Object.entries(DECODER_LINEARS) as [DecoderLinearName, Role][]) {
    const stored = layer.linearsFor([role])[0];
    const l = layer.linears[stored];
    if (!(l instanceof DenseLinear))
      throw new GptqError(
        `${layer.linearPrefix(stored)} is not a dense projection: build the GPU layer before quantizing, then setWeight`,
      );
    // a weight still as stored goes to the device without a widening here
    linears[name] = { weight: l.stored ?? l.weight, bias: l.bias, N: l.outFeatures, K: l.inFeatures };
  }
  const c = layer.config;
  const rope = layer.rotary!.tables(positions);
  return {
    hidden: c.hiddenSize,
    heads: c.numHeads,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    rotaryDim: c.rotaryDim,
    eps: c.normEps,
    slidingWindow: layer.window < positions ? layer.window : undefined,
    ropeCos: rope.cos,
    ropeSin: rope.sin,
    ropeStride: rope.stride,
    inputNorm: layer.norms.attentionIn!.weight,
    postAttentionNorm: layer.norms.mlpIn!.weight,
    linears,
  };
}

/** The CPU layer on the GPU (weights in fp16) for chunks of sequences of up to `positions` tokens. */
export function cudaDecoderLayer(dev: CudaDevice, layer: DecoderLayer, positions: number): CudaDecoderLayer {
  return new CudaDecoderLayer(dev, decoderSpec(layer, positions));
}
