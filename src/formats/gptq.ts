/**
 * GPTQ v1 / v2 packing (`qweight`, `qzeros`, `scales`, `g_idx`). v1 stores every zero point minus one,
 * v2 stores it as is; everything else is identical.
 */
import { floatsToHalfs, halfsToFloats } from "../tensor/dtype.js";
import { GptqError } from "../util/errors.js";
import { firstOutOfRange, packCols, packRows, packUnit, unpackCols, unpackRows } from "./bitpack.js";
import { FLOAT_DTYPES, HeaderLookup, LayerDims, LayerGrouping, matrixHeader } from "./headers.js";
import { Bits, GptqTensors, QuantizedLinear, groupSizeFor, numGroups } from "./types.js";

export type GptqVersion = "v1" | "v2";

/** What unpacking needs beyond the tensors themselves. */
export interface LayerShape {
  inFeatures: number;
  outFeatures: number;
  bits: Bits;
  groupSize: number;
}

export const GPTQ_BITS: readonly Bits[] = [2, 3, 4, 8];

/** Why GPTQ cannot hold a layer of this shape, or undefined when it can. */
export function gptqShapeProblem(s: LayerShape): string | undefined {
  if (!GPTQ_BITS.includes(s.bits)) return `GPTQ packs 2, 3, 4 or 8 bits, not ${s.bits}`;
  if (!isGroupSize(s.groupSize)) return `group size ${s.groupSize} is not a positive integer or -1`;
  if (!(s.inFeatures > 0 && s.outFeatures > 0)) return `empty layer (${s.inFeatures} x ${s.outFeatures})`;
  const unit = packUnit(s.bits);
  if (s.inFeatures % unit)
    return `in_features ${s.inFeatures} is not a multiple of ${unit}, so ${s.bits}-bit qweight rows cannot hold it (pad in_features to ${roundUp(s.inFeatures, unit)})`;
  if (s.outFeatures % unit)
    return `out_features ${s.outFeatures} is not a multiple of ${unit}, so ${s.bits}-bit qzeros words cannot hold it (pad out_features to ${roundUp(s.outFeatures, unit)})`;
  return undefined;
}

export function isGroupSize(g: number): boolean {
  return g === -1 || (Number.isSafeInteger(g) && g > 0);
}

function roundUp(x: number, m: number): number {
  return Math.ceil(x / m) * m;
}

/** Checks that a layer's arrays agree with its shape and each other; throws GptqError naming what is off. */
export function validateLayer(layer: QuantizedLinear, what = "layer"): void {
  const { inFeatures: K, outFeatures: N, bits, groupSize } = layer;
  if (!isGroupSize(groupSize)) throw new GptqError(`${what}: invalid group size ${groupSize}`);
  if (!GPTQ_BITS.includes(bits)) throw new GptqError(`${what}: unsupported bit width ${bits}`);
  const G = numGroups(K, groupSize);
  const expect = (name: string, got: number, want: number) => {
    if (got !== want) throw new GptqError(`${what}: ${name} has ${got} elements, expected ${want}`);
  };
  expect("codes", layer.codes.length, K * N);
  expect("scales", layer.scales.length, G * N);
  expect("zeros", layer.zeros.length, G * N);
  expect("g_idx", layer.gIdx.length, K);
  if (layer.bias) expect("bias", layer.bias.length, N);
  const bad = firstOutOfRange(layer.codes, bits);
  if (bad >= 0)
    throw new GptqError(
      `${what}: code ${layer.codes[bad]} at row ${Math.floor(bad / N)}, column ${bad % N} does not fit in ${bits} bits`,
    );
  const badZ = firstOutOfRange(layer.zeros, bits);
  if (badZ >= 0) throw new GptqError(`${what}: zero point ${layer.zeros[badZ]} does not fit in ${bits} bits`);
  checkGroupIndex(layer.gIdx, G, what);
}

export function checkGroupIndex(gIdx: Int32Array, G: number, what: string): void {
  for (let k = 0; k < gIdx.length; k++)
    if (!(gIdx[k] >= 0 && gIdx[k] < G))
      throw new GptqError(`${what}: g_idx[${k}] = ${gIdx[k]} is outside the ${G} groups`);
}

/** `k // groupSize` for every row: the g_idx of a layer without act-order. */
export function sequentialGroupIndex(inFeatures: number, groupSize: number): Int32Array {
  const g = new Int32Array(inFeatures);
  if (groupSize !== -1) for (let k = 0; k < inFeatures; k++) g[k] = Math.floor(k / groupSize);
  return g;
}

/** True when g_idx reorders rows (act-order without static groups). */
export function hasActOrder(gIdx: Int32Array, groupSize: number): boolean {
  if (groupSize === -1) return false;
  for (let k = 0; k < gIdx.length; k++) if (gIdx[k] !== Math.floor(k / groupSize)) return true;
  return false;
}

export function packGptq(layer: QuantizedLinear, version: GptqVersion): GptqTensors {
  validateLayer(layer);
  const problem = gptqShapeProblem(layer);
  if (problem) throw new GptqError(`cannot pack as GPTQ: ${problem}`);
  const { inFeatures: K, outFeatures: N, bits } = layer;
  const G = numGroups(K, layer.groupSize);
  let zeros = layer.zeros;
  if (version === "v1") {
    const at = zeros.indexOf(0);
    if (at >= 0)
      throw new GptqError(
        `GPTQ v1 cannot store the zero point 0 of group ${Math.floor(at / N)}, output ${at % N} (v1 stores zero - 1, and -1 corrupts its neighbours); write gptq_v2 instead`,
      );
    zeros = zeros.map((z) => z - 1);
  }
  return {
    qweight: packRows(layer.codes, K, N, bits),
    qzeros: packCols(zeros, G, N, bits),
    scales: floatsToHalfs(layer.scales),
    gIdx: Int32Array.from(layer.gIdx),
  };
}

export function unpackGptq(t: GptqTensors, shape: LayerShape, version: GptqVersion): QuantizedLinear {
  const problem = gptqShapeProblem(shape);
  if (problem) throw new GptqError(`cannot unpack GPTQ: ${problem}`);
  const { inFeatures: K, outFeatures: N, bits, groupSize } = shape;
  const G = numGroups(K, groupSize);
  const expect = (name: string, got: number, want: string, n: number) => {
    if (got !== n) throw new GptqError(`GPTQ ${name} has ${got} elements, expected ${want} = ${n}`);
  };
  expect("qweight", t.qweight.length, `[${(K * bits) / 32}, ${N}]`, (K * bits * N) / 32);
  expect("qzeros", t.qzeros.length, `[${G}, ${(N * bits) / 32}]`, (G * N * bits) / 32);
  expect("scales", t.scales.length, `[${G}, ${N}]`, G * N);
  expect("g_idx", t.gIdx.length, `[${K}]`, K);
  checkGroupIndex(t.gIdx, G, "GPTQ g_idx");
  const zeros = unpackCols(t.qzeros, G, N, bits);
  if (version === "v1") {
    const top = (1 << bits) - 1;
    for (let i = 0; i < zeros.length; i++) {
      if (zeros[i] === top)
        throw new GptqError(
          `GPTQ v1 qzeros hold ${top} at group ${Math.floor(i / N)}, output ${i % N}: a zero point of ${top + 1} is impossible, so the file was written with a zero of 0 (corrupt) or is really gptq_v2`,
        );
      zeros[i] += 1;
    }
  }
  return {
    inFeatures: K,
    outFeatures: N,
    bits,
    groupSize,
    codes: unpackRows(t.qweight, K, N, bits),
    scales: halfsToFloats(t.scales),
    zeros,
    gIdx: Int32Array.from(t.gIdx),
  };
}

/** v1 -> v2 on packed `qzeros` [G, N·b/32]: every stored zero plus one. */
export function qzerosV1ToV2(
  qzeros: Int32Array,
  groups: number,
  outFeatures: number,
  bits: Bits,
): Int32Array {
  return shiftZeros(qzeros, groups, outFeatures, bits, +1);
}

/** v2 -> v1 on packed `qzeros`: every stored zero minus one; refuses a zero of 0. */
export function qzerosV2ToV1(
  qzeros: Int32Array,
  groups: number,
  outFeatures: number,
  bits: Bits,
): Int32Array {
  return shiftZeros(qzeros, groups, outFeatures, bits, -1);
}

// Field by field rather than by adding one constant per word: for 3 bits, a per-word constant loses the
// carry out of a zero that straddles two words.
function shiftZeros(qzeros: Int32Array, G: number, N: number, bits: Bits, delta: 1 | -1): Int32Array {
  const problem = gptqShapeProblem({ inFeatures: packUnit(bits), outFeatures: N, bits, groupSize: -1 });
  if (problem) throw new GptqError(`cannot convert qzeros: ${problem}`);
  if (qzeros.length !== (G * N * bits) / 32)
    throw new GptqError(`qzeros has ${qzeros.length} words, expected ${(G * N * bits) / 32}`);
  const z = unpackCols(qzeros, G, N, bits);
  const limit = delta > 0 ? (1 << bits) - 1 : 0;
  for (let i = 0; i < z.length; i++) {
    if (z[i] === limit)
      throw new GptqError(
        delta > 0
          ? `GPTQ v1 qzeros hold ${limit} at group ${Math.floor(i / N)}, output ${i % N}: not a valid v1 zero (the file is corrupt or already gptq_v2)`
          : `GPTQ v1 cannot store the zero point 0 of group ${Math.floor(i / N)}, output ${i % N}; keep gptq_v2`,
      );
    z[i] += delta;
  }
  return packCols(z, G, N, bits);
}

// ---- a stored layer, from its tensors' headers (and g_idx, when it has one) ----

/** `qweight`, `qzeros` and `scales` of layer `prefix`: K, N, bits and G, or an error naming the layer. */
export function inspectGptq(prefix: string, header: HeaderLookup): LayerDims {
  const p = prefix;
  const [R, N] = matrixHeader(header, p, "qweight", ["I32"]);
  const [G, C] = matrixHeader(header, p, "qzeros", ["I32"]);
  const [Gs, Ns] = matrixHeader(header, p, "scales", FLOAT_DTYPES);
  if (Ns !== N || Gs !== G)
    throw new GptqError(
      `layer ${p}: scales are [${Gs}, ${Ns}] but qweight has ${N} outputs and qzeros ${G} groups: expected [${G}, ${N}]`,
    );
  if (R === 0 || N === 0) throw new GptqError(`layer ${p}: qweight is [${R}, ${N}], an empty matrix`);
  const bits = GPTQ_BITS.find((b) => C * 32 === N * b);
  if (!bits)
    throw new GptqError(
      `layer ${p}: qzeros [${G}, ${C}] do not hold ${N} zero points at 2, 3, 4 or 8 bits (N * bits / 32 words per group)`,
    );
  if ((R * 32) % bits !== 0)
    throw new GptqError(`layer ${p}: qweight has ${R} rows, not a whole number of ${bits}-bit codes`);
  const K = (R * 32) / bits;
  if (G < 1 || G > K) throw new GptqError(`layer ${p}: ${G} groups for ${K} input rows`);
  const g = header("g_idx");
  if (g) {
    if (g.shape.length === 1 && g.shape[0] !== K)
      throw new GptqError(
        `layer ${p}: g_idx has ${g.shape[0]} rows but qweight holds ${K} (${R} words of ${32 / bits} codes); the packing dropped or added rows: re-pack from the unquantized weights`,
      );
    if (g.shape.length !== 1 || g.shape[0] !== K || (g.dtype !== "I32" && g.dtype !== "I64"))
      throw new GptqError(
        `layer ${p}: ${p}.g_idx is ${g.dtype}${JSON.stringify(g.shape)}, expected int32[${K}] (one group index per input row)`,
      );
  }
  return { inFeatures: K, outFeatures: N, bits, groups: G };
}

/**
 * Group size and act-order of an inspected GPTQ layer: from `g_idx` when stored (trivial when g_idx[k]
 * = k // g for the g of its first run), else from the group count.
 */
export function gptqGrouping(
  prefix: string,
  dims: LayerDims,
  header: HeaderLookup,
  readInt32: (suffix: string) => Int32Array,
): LayerGrouping {
  const { inFeatures: K, groups: G } = dims;
  if (!header("g_idx")) {
    const groupSize = groupSizeFor(K, G);
    if (groupSize === undefined)
      throw new GptqError(`layer ${prefix}: no group size gives ${G} groups over ${K} rows`);
    return { groupSize, actOrder: false };
  }
  const g = readInt32("g_idx");
  const counts = new Int32Array(G);
  for (let k = 0; k < K; k++) {
    const v = g[k];
    if (v < 0 || v >= G)
      throw new GptqError(`layer ${prefix}: g_idx[${k}] is ${v}, outside the ${G} groups that scales hold`);
    counts[v]++;
  }
  let run = 0;
  while (run < K && g[run] === 0) run++;
  let trivial = run > 0;
  for (let k = 0; trivial && k < K; k++) if (g[k] !== Math.floor(k / run)) trivial = false;
  const biggest = counts.reduce((a, b) => Math.max(a, b), 0);
  return { actOrder: !trivial, groupSize: G === 1 ? -1 : trivial ? run : biggest };
}

/** The zero points of an inspected GPTQ layer as `qzeros` stores them (v1: zero − 1), G x N. */
export function storedGptqZeros(dims: LayerDims, readInt32: (suffix: string) => Int32Array): Uint8Array {
  return unpackCols(readInt32("qzeros"), dims.groups, dims.outFeatures, dims.bits);
}
