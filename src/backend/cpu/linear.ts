/**
 * Linear layers on the CPU: y = x W^T + b with x [rows, K], W [N, K], y [rows, N].
 * Every variant shares one contract so a model can swap an fp layer for a quantized one.
 */
import { GptqError } from "../../util/errors.js";
import { addBias, checkInput, gemmNT } from "./gemm.js";
import { parallelGemmNT, toShared } from "./dense.js";
import { shared } from "./pool.js";
import { Tensor } from "../../tensor/tensor.js";
import { bf16sToFloats, halfsToFloats } from "../../tensor/dtype.js";

export interface Linear {
  readonly inFeatures: number; // K
  readonly outFeatures: number; // N
  /** x is rows x K row-major; returns a new rows x N array */
  forward(x: Float32Array, rows: number): Float32Array;
}

function checkBias(bias: Float32Array | undefined, N: number): void {
  if (bias && bias.length !== N) throw new GptqError(`bias has ${bias.length} values, expected ${N}`);
}

/**
 * An fp32 linear layer: weight N x K row-major (the nn.Linear orientation), optional bias [N]. It may be
 * built from the weight as a checkpoint stores it (fp16, bf16 or fp32): that is widened to fp32 only when
 * the CPU first needs it, so a GPU can take the stored values without a conversion here.
 */
export class DenseLinear implements Linear {
  private widened?: Float32Array;
  private source?: Tensor;

  constructor(
    weight: Float32Array | Tensor,
    readonly outFeatures: number,
    readonly inFeatures: number,
    readonly bias?: Float32Array,
  ) {
    const values = weight instanceof Float32Array ? weight.length : weight.data.length;
    if (values !== outFeatures * inFeatures)
      throw new GptqError(`weight has ${values} values, expected ${outFeatures} x ${inFeatures}`);
    checkBias(bias, outFeatures);
    if (weight instanceof Float32Array) this.widened = toShared(weight);
    else this.source = weight;
  }

  /** the weight in fp32, in shared memory so every thread of the pool can read it */
  get weight(): Float32Array {
    if (!this.widened) {
      const t = this.source!;
      const out = shared(Float32Array, t.data.length);
      if (t.dtype === "F32") out.set(t.data as Float32Array);
      else if (t.dtype === "F16") halfsToFloats(t.data as Uint16Array, out);
      else if (t.dtype === "BF16") bf16sToFloats(t.data as Uint16Array, out);
      else throw new GptqError(`a dense weight stored as ${t.dtype}; expected F32, F16 or BF16`);
      this.widened = out;
      this.source = undefined;
    }
    return this.widened;
  }

  /** the weight as the checkpoint stores it, until the fp32 one has been asked for */
  get stored(): Tensor | undefined {
    return this.source;
  }

  forward(x: Float32Array, rows: number): Float32Array {
    checkInput(this, x, rows);
    const parallel = parallelGemmNT(x, rows, this.weight, this.outFeatures, this.inFeatures);
    if (parallel) {
      addBias(parallel, rows, this.bias);
      return parallel;
    }
    const out = new Float32Array(rows * this.outFeatures);
    gemmNT(
      x,
      0,
      this.inFeatures,
      rows,
      this.weight,
      this.inFeatures,
      this.outFeatures,
      this.inFeatures,
      out,
      false,
    );
    addBias(out, rows, this.bias);
    return out;
  }
}

export { QuantLinear } from "./quant-linear.js";
export { A8W4Linear } from "./a8w4.js";
