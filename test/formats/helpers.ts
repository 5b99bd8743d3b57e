// Random layers for property tests (a seeded generator, so failures reproduce).
import { Bits, QuantizedLinear, numGroups } from "../../src/formats/types.js";
import { halfToFloat, floatToHalf } from "../../src/tensor/dtype.js";

export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

export interface RandomLayerOptions {
  K: number;
  N: number;
  bits: Bits;
  groupSize: number;
  /** "sym": zero 2^(b-1); "asym": 1..2^b-1 (v1-storable); "asym0": 0..2^b-1 */
  zeros?: "sym" | "asym" | "asym0";
  actOrder?: boolean;
  seed?: number;
}

export function randomLayer(o: RandomLayerOptions): QuantizedLinear {
  const r = rng(o.seed ?? 1);
  const { K, N, bits, groupSize } = o;
  const G = numGroups(K, groupSize);
  const top = 1 << bits;
  const codes = Uint8Array.from({ length: K * N }, () => Math.floor(r() * top));
  const scales = Float32Array.from({ length: G * N }, () => halfToFloat(floatToHalf(0.001 + r() * 0.1)));
  const kind = o.zeros ?? "sym";
  const zeros = Uint8Array.from({ length: G * N }, () =>
    kind === "sym" ? top / 2 : kind === "asym" ? 1 + Math.floor(r() * (top - 1)) : Math.floor(r() * top),
  );
  const gIdx = Int32Array.from({ length: K }, (_, k) => (groupSize === -1 ? 0 : Math.floor(k / groupSize)));
  if (o.actOrder)
    for (let i = K - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [gIdx[i], gIdx[j]] = [gIdx[j], gIdx[i]];
    }
  return { inFeatures: K, outFeatures: N, bits, groupSize, codes, scales, zeros, gIdx };
}

/** Plain float64 reference of W = s * (q - z), N x K. */
export function referenceWeights(l: QuantizedLinear): Float64Array {
  const { inFeatures: K, outFeatures: N } = l;
  const W = new Float64Array(N * K);
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++) {
      const g = l.gIdx[k];
      W[n * K + k] = l.scales[g * N + n] * (l.codes[k * N + n] - l.zeros[g * N + n]);
    }
  return W;
}
