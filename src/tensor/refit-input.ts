/**
 * The least-squares scale refit's operands and normal equations (quant/refit.ts computes them; the CPU
 * pool and the GPU build them too, so the types live below both). Everything is in the GPTQ sweep's
 * processing order: w, codes and H's rows and columns permuted alike.
 */
export interface RefitInput {
  /** the weight being approximated, K x N */
  w: Float32Array;
  /** K x K, the (damped) Hessian GPTQ minimised against */
  H: Float64Array;
  /** K x N codes */
  codes: Uint8Array;
  /** group of each column */
  groupOf: Int32Array;
  /** G x N, read and replaced by the refit values where they lower the error */
  scales: Float32Array;
  /** G x N integer zero points (kept) */
  zeros: Float32Array;
  N: number;
  K: number;
  G: number;
}

/** Every output row's normal equations: A[n][g][g'], b[n][g] and w_n^T H w_n. */
export interface RefitSystems {
  /** N x G x G */
  A: Float64Array;
  /** N x G */
  b: Float64Array;
  /** N */
  wHw: Float64Array;
}

/** A refit's arrays but the Hessian, which the factor (host or device) holds. */
export type RefitArrays = Omit<RefitInput, "H">;
