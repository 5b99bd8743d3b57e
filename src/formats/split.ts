/**
 * Split and merge quantized linears along out_features (fused qkv into q, k, v; kv_b_proj into its
 * halves; and back). Codes, scales and zeros are moved, never recomputed, so the parts dequantize to
 * exactly the columns of the whole.
 */
import { Tensor } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import { LayerShape, validateLayer } from "./gptq.js";
import { FORMATS, LayerTensor, WriteOptions } from "./registry.js";
import { CheckpointFormat, QuantizedLinear, numGroups } from "./types.js";

/** Why these part sizes cannot split a layer of N outputs stored in `format`, or undefined. */
export function splitProblem(
  format: CheckpointFormat,
  bits: number,
  outFeatures: number,
  sizes: readonly number[],
): string | undefined {
  if (!sizes.length) return "no part sizes given";
  const bad = sizes.find((s) => !(Number.isSafeInteger(s) && s > 0));
  if (bad !== undefined) return `part size ${bad} is not a positive integer`;
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total !== outFeatures) return `part sizes add up to ${total}, but the layer has ${outFeatures} outputs`;
  const align = FORMATS[format].outAlignment(bits);
  let at = 0;
  for (const s of sizes.slice(0, -1)) {
    at += s;
    if (at % align)
      return `split point ${at} is not a multiple of ${align} (${
        format === "marlin"
          ? "Marlin stores columns in blocks of 64"
          : `${bits}-bit qzeros pack ${align} outputs per word`
      }); choose sizes at multiples of ${align}`;
  }
  return undefined;
}

/** Splits a layer into consecutive column ranges of the given sizes. */
export function splitLayer(layer: QuantizedLinear, sizes: readonly number[]): QuantizedLinear[] {
  validateLayer(layer);
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total !== layer.outFeatures || sizes.some((s) => !(Number.isSafeInteger(s) && s > 0)))
    throw new GptqError(
      `cannot split ${layer.outFeatures} outputs into parts of ${sizes.join(", ")}: sizes must be positive and add up to ${layer.outFeatures}`,
    );
  const K = layer.inFeatures;
  const G = numGroups(K, layer.groupSize);
  let at = 0;
  return sizes.map((n) => {
    const from = at;
    at += n;
    return {
      ...layer,
      outFeatures: n,
      codes: columns(layer.codes, K, layer.outFeatures, from, n, new Uint8Array(K * n)),
      scales: columns(layer.scales, G, layer.outFeatures, from, n, new Float32Array(G * n)),
      zeros: columns(layer.zeros, G, layer.outFeatures, from, n, new Uint8Array(G * n)),
      gIdx: Int32Array.from(layer.gIdx),
      bias: layer.bias?.slice(from, from + n),
    };
  });
}

/** Concatenates layers along out_features; they must share in_features, bits, group size and g_idx. */
export function mergeLayers(parts: readonly QuantizedLinear[]): QuantizedLinear {
  if (!parts.length) throw new GptqError("nothing to merge");
  const first = parts[0];
  parts.forEach((p, i) => {
    validateLayer(p, `part ${i + 1}`);
    const differ = (what: string, a: unknown, b: unknown) =>
      new GptqError(`cannot merge: part ${i + 1} has ${what} ${b}, part 1 has ${a}`);
    if (p.inFeatures !== first.inFeatures) throw differ("in_features", first.inFeatures, p.inFeatures);
    if (p.bits !== first.bits) throw differ("bits", first.bits, p.bits);
    if (p.groupSize !== first.groupSize) throw differ("group size", first.groupSize, p.groupSize);
    const k = p.gIdx.findIndex((g, j) => g !== first.gIdx[j]);
    if (k >= 0)
      throw new GptqError(
        `cannot merge: part ${i + 1} has g_idx[${k}] = ${p.gIdx[k]}, part 1 has ${first.gIdx[k]} (parts quantized with different act-order cannot share one g_idx)`,
      );
    if (!p.bias !== !first.bias)
      throw new GptqError(
        `cannot merge: part ${i + 1} ${p.bias ? "has" : "has no"} bias, part 1 does not match`,
      );
  });
  const K = first.inFeatures;
  const G = numGroups(K, first.groupSize);
  const N = parts.reduce((a, p) => a + p.outFeatures, 0);
  const merged: QuantizedLinear = {
    inFeatures: K,
    outFeatures: N,
    bits: first.bits,
    groupSize: first.groupSize,
    codes: new Uint8Array(K * N),
    scales: new Float32Array(G * N),
    zeros: new Uint8Array(G * N),
    gIdx: Int32Array.from(first.gIdx),
    bias: first.bias ? new Float32Array(N) : undefined,
  };
  let at = 0;
  for (const p of parts) {
    place(merged.codes, K, N, at, p.codes, p.outFeatures);
    place(merged.scales, G, N, at, p.scales, p.outFeatures);
    place(merged.zeros, G, N, at, p.zeros, p.outFeatures);
    if (merged.bias) merged.bias.set(p.bias!, at);
    at += p.outFeatures;
  }
  return merged;
}

/** A stored layer: its tensors by suffix and its shape. */
export interface StoredLayer {
  get: (suffix: string) => Tensor | undefined;
  shape: LayerShape;
}

/** Splits a stored layer into stored parts of the same format (checking the split points first). */
export function splitStored(
  format: CheckpointFormat,
  layer: StoredLayer,
  sizes: readonly number[],
  opts?: WriteOptions,
): LayerTensor[][] {
  const problem = splitProblem(format, layer.shape.bits, layer.shape.outFeatures, sizes);
  if (problem) throw new GptqError(`cannot split: ${problem}`);
  const traits = FORMATS[format];
  return splitLayer(traits.read(layer.get, layer.shape), sizes).map((p) => traits.write(p, opts));
}

/** Merges stored layers of one format into one stored layer of that format. */
export function mergeStored(
  format: CheckpointFormat,
  parts: readonly StoredLayer[],
  opts?: WriteOptions,
): LayerTensor[] {
  const traits = FORMATS[format];
  return traits.write(mergeLayers(parts.map((p) => traits.read(p.get, p.shape))), opts);
}

function columns<T extends Uint8Array | Float32Array>(
  src: T,
  rows: number,
  cols: number,
  from: number,
  n: number,
  out: T,
): T {
  for (let r = 0; r < rows; r++) out.set(src.subarray(r * cols + from, r * cols + from + n), r * n);
  return out;
}

function place<T extends Uint8Array | Float32Array>(
  dst: T,
  rows: number,
  cols: number,
  at: number,
  src: T,
  n: number,
): void {
  for (let r = 0; r < rows; r++) dst.set(src.subarray(r * n, (r + 1) * n), r * cols + at);
}
