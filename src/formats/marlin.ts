/**
 * Marlin as AutoGPTQ serialises it (`checkpoint_format: "marlin"`): `B` int32 [K/16, 2N] holds the 4-bit
 * codes in 16x16 tiles, shuffled within every 1024 values so one warp's loads land in mma fragment order;
 * `s` fp16 [G, N] holds the scales with their columns shuffled to match. Zero point implicitly 8.
 */
import { floatsToHalfs, halfsToFloats } from "../tensor/dtype.js";
import { GptqError } from "../util/errors.js";
import { hasActOrder, sequentialGroupIndex, validateLayer } from "./gptq.js";
import { FLOAT_DTYPES, HeaderLookup, LayerDims, LayerGrouping, matrixHeader } from "./headers.js";
import { MarlinTensors, QuantizedLinear, groupSizeFor, numGroups } from "./types.js";

export const MARLIN_ZERO = 8;
export const MARLIN_GROUP_SIZES: readonly number[] = [128, -1];

/** Position in the tiled row of the value that lands at each of the 1024 slots of a chunk. */
export const PERM: Int32Array = (() => {
  const perm: number[] = [];
  for (let i = 0; i < 32; i++) {
    const lane: number[] = [];
    const col = i >> 2;
    for (const block of [0, 1])
      for (const row of [2 * (i % 4), 2 * (i % 4) + 1, 2 * ((i % 4) + 4), 2 * ((i % 4) + 4) + 1])
        lane.push(16 * row + col + 8 * block);
    for (let j = 0; j < 4; j++) for (const p of lane) perm.push(p + 256 * j);
  }
  const interleave = [0, 2, 4, 6, 1, 3, 5, 7];
  const out = new Int32Array(1024);
  for (let i = 0; i < 1024; i++) out[i] = perm[(i & ~7) + interleave[i & 7]];
  return out;
})();

/** Column order of grouped scales, per 64 columns, and of per-channel scales, per 32 columns. */
export const SCALE_PERM: Int32Array = Int32Array.from({ length: 64 }, (_, x) => (x >> 3) + 8 * (x & 7));
export const SCALE_PERM_SINGLE: Int32Array = Int32Array.from(
  { length: 32 },
  (_, x) => 2 * (x >> 3) + [0, 1, 8, 9, 16, 17, 24, 25][x & 7],
);

export interface MarlinShape {
  inFeatures: number;
  outFeatures: number;
  groupSize: number;
}

/** Why Marlin cannot hold a layer of this shape and scheme, or undefined when it can. */
export function marlinShapeProblem(s: MarlinShape & { bits?: number }): string | undefined {
  if (s.bits !== undefined && s.bits !== 4) return `Marlin stores 4-bit weights only, not ${s.bits}-bit`;
  if (!MARLIN_GROUP_SIZES.includes(s.groupSize))
    return `Marlin files use group size 128 or -1, not ${s.groupSize}`;
  if (!(s.inFeatures > 0) || s.inFeatures % 16)
    return `in_features ${s.inFeatures} is not a multiple of 16 (Marlin's 16x16 tiles)`;
  if (!(s.outFeatures > 0) || s.outFeatures % 64)
    return `out_features ${s.outFeatures} is not a multiple of 64 (Marlin's 1024-value shuffle)`;
  return undefined;
}

/** Why this layer cannot be stored as Marlin (scheme, zero points, act-order, shape), or undefined. */
export function marlinLayerProblem(layer: QuantizedLinear): string | undefined {
  const shape = marlinShapeProblem(layer);
  if (shape) return shape;
  const z = layer.zeros.findIndex((v) => v !== MARLIN_ZERO);
  if (z >= 0)
    return `Marlin is symmetric only (zero point 8) but group ${Math.floor(z / layer.outFeatures)}, output ${z % layer.outFeatures} has zero point ${layer.zeros[z]}`;
  if (hasActOrder(layer.gIdx, layer.groupSize))
    return "Marlin files cannot hold act-order (g_idx that reorders rows); requantize without desc_act or with static_groups";
  return undefined;
}

export function packMarlin(layer: QuantizedLinear): MarlinTensors {
  validateLayer(layer);
  const problem = marlinLayerProblem(layer);
  if (problem) throw new GptqError(`cannot pack as Marlin: ${problem}`);
  const { inFeatures: K, outFeatures: N, codes } = layer;
  const rel = relativeOffsets(N);
  const B = new Int32Array((K / 16) * 2 * N);
  const chunks = N / 64;
  for (let kt = 0; kt < K / 16; kt++) {
    for (let q = 0; q < chunks; q++) {
      const src = kt * 16 * N + q * 64;
      const dst = kt * 2 * N + q * 128;
      for (let j = 0; j < 128; j++) {
        const r = j * 8;
        B[dst + j] =
          codes[src + rel[r]] |
          (codes[src + rel[r + 1]] << 4) |
          (codes[src + rel[r + 2]] << 8) |
          (codes[src + rel[r + 3]] << 12) |
          (codes[src + rel[r + 4]] << 16) |
          (codes[src + rel[r + 5]] << 20) |
          (codes[src + rel[r + 6]] << 24) |
          (codes[src + rel[r + 7]] << 28);
      }
    }
  }
  const G = numGroups(K, layer.groupSize);
  return { B, s: floatsToHalfs(permuteScales(layer.scales, G, false)) };
}

export function unpackMarlin(t: MarlinTensors, shape: MarlinShape): QuantizedLinear {
  const problem = marlinShapeProblem(shape);
  if (problem) throw new GptqError(`cannot unpack Marlin: ${problem}`);
  const { inFeatures: K, outFeatures: N, groupSize } = shape;
  const G = numGroups(K, groupSize);
  if (t.B.length !== (K / 16) * 2 * N)
    throw new GptqError(`Marlin B has ${t.B.length} elements, expected [${K / 16}, ${2 * N}]`);
  if (t.s.length !== G * N) throw new GptqError(`Marlin s has ${t.s.length} elements, expected [${G}, ${N}]`);
  const rel = relativeOffsets(N);
  const codes = new Uint8Array(K * N);
  const chunks = N / 64;
  const { B } = t;
  for (let kt = 0; kt < K / 16; kt++) {
    for (let q = 0; q < chunks; q++) {
      const dst = kt * 16 * N + q * 64;
      const src = kt * 2 * N + q * 128;
      for (let j = 0; j < 128; j++) {
        const x = B[src + j];
        const r = j * 8;
        codes[dst + rel[r]] = x & 15;
        codes[dst + rel[r + 1]] = (x >>> 4) & 15;
        codes[dst + rel[r + 2]] = (x >>> 8) & 15;
        codes[dst + rel[r + 3]] = (x >>> 12) & 15;
        codes[dst + rel[r + 4]] = (x >>> 16) & 15;
        codes[dst + rel[r + 5]] = (x >>> 20) & 15;
        codes[dst + rel[r + 6]] = (x >>> 24) & 15;
        codes[dst + rel[r + 7]] = x >>> 28;
      }
    }
  }
  return {
    inFeatures: K,
    outFeatures: N,
    bits: 4,
    groupSize,
    codes,
    scales: permuteScales(halfsToFloats(t.s), G, true),
    zeros: new Uint8Array(G * N).fill(MARLIN_ZERO),
    gIdx: sequentialGroupIndex(K, groupSize),
  };
}

/**
 * For slot i of a 1024-value chunk, the offset of its code in the K x N code matrix relative to the
 * chunk's first code: the chunk covers 16 rows and 64 columns (four 16x16 tiles side by side).
 */
function relativeOffsets(N: number): Int32Array {
  const rel = new Int32Array(1024);
  for (let i = 0; i < 1024; i++) {
    const p = PERM[i];
    const tile = p >> 8;
    const row = (p >> 4) & 15;
    const col = p & 15;
    rel[i] = row * N + tile * 16 + col;
  }
  return rel;
}

/** Marlin's scale column shuffle (per 64 columns when grouped, per 32 when G = 1), or its inverse. */
function permuteScales(scales: Float32Array, G: number, inverse: boolean): Float32Array {
  const perm = G === 1 ? SCALE_PERM_SINGLE : SCALE_PERM;
  const w = perm.length;
  const out = new Float32Array(scales.length);
  for (let b = 0; b < scales.length; b += w)
    for (let i = 0; i < w; i++) {
      if (inverse) out[b + perm[i]] = scales[b + i];
      else out[b + i] = scales[b + perm[i]];
    }
  return out;
}

// ---- a stored layer, from its tensors' headers ----

/** `B` and `s` of layer `prefix`: K, N and G (4 bits), or an error naming the layer. */
export function inspectMarlin(prefix: string, header: HeaderLookup): LayerDims {
  const p = prefix;
  const [R, C] = matrixHeader(header, p, "B", ["I32"]);
  const [G, N] = matrixHeader(header, p, "s", FLOAT_DTYPES);
  if (C !== 2 * N)
    throw new GptqError(
      `layer ${p}: Marlin B is [${R}, ${C}] but s has ${N} outputs: expected [${R}, ${2 * N}]`,
    );
  if (R === 0 || N === 0) throw new GptqError(`layer ${p}: Marlin B is [${R}, ${C}], an empty matrix`);
  return { inFeatures: R * 16, outFeatures: N, bits: 4, groups: G };
}

/** Group size of an inspected Marlin layer, from its group count (Marlin files hold no act-order). */
export function marlinGrouping(prefix: string, dims: LayerDims): LayerGrouping {
  const { inFeatures: K, groups: G } = dims;
  const groupSize = groupSizeFor(K, G);
  if (groupSize === undefined)
    throw new GptqError(`layer ${prefix}: Marlin s holds ${G} groups for ${K} input rows`);
  return { groupSize, actOrder: false };
}
