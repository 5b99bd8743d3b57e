/**
 * The in-memory forms every format converts through. K = in_features, N = out_features,
 * G = number of groups = ceil(K / groupSize) (groupSize -1: one group of K).
 */

export type Bits = 2 | 3 | 4 | 8;

/** Quantized checkpoint formats (`checkpoint_format` in the config), in registry order. */
export const CHECKPOINT_FORMATS = ["gptq", "gptq_v2", "marlin"] as const;
export type CheckpointFormat = (typeof CHECKPOINT_FORMATS)[number];

/** What a checkpoint's tensors are stored as: one quantized format, or "fp" when no layer is quantized. */
export type StoredFormat = CheckpointFormat | "fp";

export interface QuantScheme {
  bits: Bits;
  /** -1 = one group over all of K */
  groupSize: number;
  sym: boolean;
  descAct: boolean;
}

/**
 * One quantized linear layer, unpacked: the common currency between formats, quantizers and backends.
 * W[n, k] = scales[g, n] * (codes[k, n] - zeros[g, n]) with g = gIdx[k].
 */
export interface QuantizedLinear {
  inFeatures: number; // K
  outFeatures: number; // N
  bits: Bits;
  groupSize: number;
  /** integer codes in [0, 2^bits), K x N row-major (index k * N + n), the orientation of `qweight` */
  codes: Uint8Array;
  /** G x N row-major; values are fp16-representable when the layer came from or goes to a checkpoint */
  scales: Float32Array;
  /** true zero points (not v1's minus one), G x N row-major */
  zeros: Uint8Array;
  /** group of each input row, length K */
  gIdx: Int32Array;
  /** optional bias, length N */
  bias?: Float32Array;
}

/** GPTQ tensors as stored (`<prefix>.qweight` etc.); scales as raw fp16 bits. */
export interface GptqTensors {
  qweight: Int32Array; // [K * bits / 32, N]
  qzeros: Int32Array; // [G, N * bits / 32]
  scales: Uint16Array; // [G, N] fp16 bits
  gIdx: Int32Array; // [K]
}

/** Marlin tensors as AutoGPTQ serialises them (`<prefix>.B`, `<prefix>.s`). */
export interface MarlinTensors {
  B: Int32Array; // [K / 16, 2 * N]
  s: Uint16Array; // [G, N] fp16 bits, column-permuted
}

export function numGroups(inFeatures: number, groupSize: number): number {
  return groupSize === -1 ? 1 : Math.ceil(inFeatures / groupSize);
}

/**
 * The group size that ceil(K / g) = G implies, preferring powers of two, then multiples of 32
 * (several values fit when the last group is partial); -1 for one group.
 */
export function groupSizeFor(K: number, G: number): number | undefined {
  if (G === 1) return -1;
  if (G < 1 || G > K) return undefined;
  // ceil(K / g) = G  <=>  K / G <= g < K / (G - 1)
  const lo = Math.ceil(K / G);
  const hi = Math.floor((K - 1) / (G - 1));
  const fits = (g: number) => g >= lo && g <= hi && Math.ceil(K / g) === G;
  for (let p = 1; p <= hi; p *= 2) if (fits(p)) return p;
  for (let g = Math.ceil(lo / 32) * 32; g <= hi; g += 32) if (fits(g)) return g;
  for (let g = lo; g <= hi; g++) if (fits(g)) return g;
  return undefined;
}
