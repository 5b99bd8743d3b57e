/**
 * Linear layers on the CPU: y = x W^T + b with x [rows, K], W [N, K], y [rows, N].
 * Every variant shares one contract so a model can swap an fp layer for a quantized one.
 */
import { GptqError } from "../../util/errors.js";
import { addBias, checkInput, gemmNT } from "./gemm.js";
import { parallelGemmNT, toShared } from "./dense.js";

export interface Linear {
  readonly inFeatures: number; // K
  readonly outFeatures: number; // N
  /** x is rows x K row-major; returns a new rows x N array */
  forward(x: Float32Array, rows: number): Float32Array;
}

function checkBias(bias: Float32Array | undefined, N: number): void {
  if (bias && bias.length !== N) throw new GptqError(`bias has ${bias.length} values, expected ${N}`);
}

/** An fp32 linear layer: weight N x K row-major (the nn.Linear orientation), optional bias [N]. */
export class DenseLinear implements Linear {
  /** the weight, in shared memory so every thread of the pool can read it */
  readonly weight: Float32Array;

  constructor(
    weight: Float32Array,
    readonly outFeatures: number,
    readonly inFeatures: number,
    readonly bias?: Float32Array,
  ) {
    if (weight.length !== outFeatures * inFeatures)
      throw new GptqError(`weight has ${weight.length} values, expected ${outFeatures} x ${inFeatures}`);
    checkBias(bias, outFeatures);
    this.weight = toShared(weight);
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
