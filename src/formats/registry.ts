/**
 * One table of every stored format: which tensors a layer keeps and which mark it, how a checkpoint's
 * layers are found and inspected from tensor headers, what the format can hold, and how a layer is read
 * from and written to named tensors. Everything that opens, converts, splits or checks goes through it.
 * A layer's `<prefix>.bias` is the same in every format and is not part of these traits.
 */
import { DType } from "../tensor/dtype.js";
import { nonFiniteProblem } from "../tensor/finite.js";
import { Tensor, TypedArray, fromFloat32, toFloat32, toInt32 } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import { packUnit } from "./bitpack.js";
import {
  GptqVersion,
  LayerShape,
  gptqGrouping,
  gptqShapeProblem,
  inspectGptq,
  packGptq,
  sequentialGroupIndex,
  storedGptqZeros,
  unpackGptq,
} from "./gptq.js";
import { HeaderLookup, LayerDims, LayerGrouping, markedPrefixes } from "./headers.js";
import {
  inspectMarlin,
  marlinGrouping,
  marlinLayerProblem,
  marlinShapeProblem,
  packMarlin,
  unpackMarlin,
} from "./marlin.js";
import { CheckpointFormat, QuantScheme, QuantizedLinear, StoredFormat, numGroups } from "./types.js";

/** One stored tensor of a layer, named by its suffix (`<prefix>.<suffix>`). */
export interface LayerTensor {
  suffix: string;
  dtype: DType;
  shape: number[];
  data: TypedArray;
}

export interface WriteOptions {
  /** dtype of stored scales where the format allows a choice (GPTQ: F16, BF16 or F32); default F16 */
  scaleDtype?: DType;
}

/** How messages name a format and its tensors. */
export interface FormatWords {
  /** "GPTQ", "Marlin" */
  label: string;
  /** its marker tensors where a message lists what is not stored ("no qweight, no Marlin B/s") */
  markerName: string;
  /** a layer's bit width and what shows it: "4-bit (qzeros hold 64 zero points in 8 words)" */
  bits(dims: LayerDims): string;
}

/** Where a config's scheme cannot describe a format's tensors: what the config says, what they are. */
export interface ConfigMismatch {
  says: string;
  tensors: string;
}

export interface FormatTraits {
  readonly name: CheckpointFormat;
  readonly summary: string;
  /**
   * The format a layer's tensors show: formats that store the same tensors share the first of them
   * (gptq_v2 shows as gptq; the config, or the zero points, tell them apart).
   */
  readonly detectedAs: CheckpointFormat;
  /** suffixes that mark a layer as stored in this format: all of them on one prefix */
  readonly marker: readonly string[];
  readonly words: FormatWords;
  /** suffix of the stored group index (one per input row); absent when there is none (no act-order) */
  readonly groupIndex?: string;
  /** tensors every layer stores */
  readonly suffixes: readonly string[];
  /** tensors a layer may also store; read when present */
  readonly optionalSuffixes: readonly string[];
  /** buffers some writers save that carry no weights; dropped when a layer is rewritten */
  readonly auxiliarySuffixes: readonly string[];
  /** out_features granularity of the packing: split points must be multiples of this */
  outAlignment(bits: number): number;
  /** why a scheme and shape cannot be stored in this format, or undefined (the layer may still fail) */
  schemeProblem(scheme: QuantScheme, shape: { inFeatures: number; outFeatures: number }): string | undefined;
  /** why this very layer cannot be stored (zero points, g_idx, shape), or undefined */
  layerProblem(layer: QuantizedLinear): string | undefined;
  read(get: (suffix: string) => Tensor | undefined, shape: LayerShape): QuantizedLinear;
  write(layer: QuantizedLinear, opts?: WriteOptions): LayerTensor[];
  /** the tensors `write` produces for a layer of this shape, without packing anything */
  layout(shape: LayerShape, opts?: WriteOptions): Omit<LayerTensor, "data">[];
  /** of a checkpoint's tensor names, the prefixes of the layers stored in this format, in the names' order */
  detect(names: readonly string[]): string[];
  /**
   * A stored layer's shape, bits and groups from its tensors' headers (dtype and shape, no data); a
   * GptqError naming the layer, the tensor, what was expected and, where there is one, the fix.
   */
  inspect(prefix: string, header: HeaderLookup): LayerDims;
  /** group size and act-order of an inspected layer; reads the group index (K int32) when one is stored */
  grouping(
    prefix: string,
    dims: LayerDims,
    header: HeaderLookup,
    readInt32: (suffix: string) => Int32Array,
  ): LayerGrouping;
  /** zero points as stored, G x N (GPTQ v1: zero − 1); absent where it is implicit, 2^(bits−1) */
  storedZeros?(dims: LayerDims, readInt32: (suffix: string) => Int32Array): Uint8Array;
  /** why a config's scheme cannot describe tensors stored in this format, or undefined */
  configProblem?(scheme: QuantScheme): ConfigMismatch | undefined;
}

function need(get: (suffix: string) => Tensor | undefined, suffix: string, format: string): Tensor {
  const t = get(suffix);
  if (!t) throw new GptqError(`${format} layer has no "${suffix}" tensor`);
  return t;
}

function expectShape(t: Tensor, want: number[], what: string): void {
  if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i]))
    throw new GptqError(`${what} is ${JSON.stringify(t.shape)}, expected ${JSON.stringify(want)}`);
}

/** Refuses stored float data holding NaN or ±Inf, naming the tensor and the first bad index. */
function requireFinite(t: Tensor, suffix: string): void {
  const problem = nonFiniteProblem(suffix, t.dtype, t.shape, t.data);
  if (problem) throw new GptqError(problem);
}

function storedScales(scales: Float32Array, dtype: DType): TypedArray {
  if (dtype !== "BF16" && dtype !== "F32") throw new GptqError(`scales cannot be stored as ${dtype}`);
  return fromFloat32(scales, dtype, [scales.length]).data;
}

const GPTQ_MARKER = ["qweight"];
const MARLIN_MARKER = ["B", "s"];

function gptqTraits(name: "gptq" | "gptq_v2", version: GptqVersion): FormatTraits {
  const traits: FormatTraits = {
    name,
    summary:
      version === "v1"
        ? "GPTQ v1 (AutoGPTQ): qweight/qzeros/scales/g_idx, zero points stored minus one"
        : "GPTQ v2 (GPTQModel): qweight/qzeros/scales/g_idx, zero points stored as is",
    detectedAs: "gptq",
    suffixes: ["qweight", "qzeros", "scales"],
    optionalSuffixes: ["g_idx"],
    auxiliarySuffixes: [],
    marker: GPTQ_MARKER,
    groupIndex: "g_idx",
    words: {
      label: "GPTQ",
      markerName: "qweight",
      bits: ({ bits, outFeatures: N }) =>
        `${bits}-bit (qzeros hold ${N} zero points in ${(N * bits) / 32} words)`,
    },
    detect: (names) => markedPrefixes(names, GPTQ_MARKER),
    inspect: inspectGptq,
    grouping: gptqGrouping,
    storedZeros: storedGptqZeros,
    outAlignment: (bits) => packUnit(bits),
    schemeProblem: (scheme, shape) =>
      gptqShapeProblem({ ...shape, bits: scheme.bits, groupSize: scheme.groupSize }),
    layerProblem(layer) {
      const p = gptqShapeProblem(layer);
      if (p) return p;
      if (version === "v1" && layer.zeros.includes(0))
        return "GPTQ v1 cannot store a zero point of 0 (it stores zero - 1); use gptq_v2";
      return undefined;
    },
    read(get, shape) {
      const problem = gptqShapeProblem(shape);
      if (problem) throw new GptqError(`cannot read ${name} layer: ${problem}`);
      const { inFeatures: K, outFeatures: N, bits, groupSize } = shape;
      const G = numGroups(K, groupSize);
      const qweight = need(get, "qweight", name);
      const qzeros = need(get, "qzeros", name);
      const scales = need(get, "scales", name);
      expectShape(qweight, [(K * bits) / 32, N], "qweight");
      expectShape(qzeros, [G, (N * bits) / 32], "qzeros");
      expectShape(scales, [G, N], "scales");
      requireFinite(scales, "scales");
      const gIdxT = get("g_idx");
      if (gIdxT) expectShape(gIdxT, [K], "g_idx");
      const fp16 = scales.dtype === "F16";
      const layer = unpackGptq(
        {
          qweight: toInt32(qweight),
          qzeros: toInt32(qzeros),
          // bf16 and fp32 scales are taken as they are below, not through fp16
          scales: fp16 ? (scales.data as Uint16Array) : new Uint16Array(G * N),
          gIdx: gIdxT ? toInt32(gIdxT) : sequentialGroupIndex(K, groupSize),
        },
        shape,
        version,
      );
      if (!fp16) layer.scales = Float32Array.from(toFloat32(scales));
      return layer;
    },
    layout({ inFeatures: K, outFeatures: N, bits, groupSize }, opts = {}) {
      const G = numGroups(K, groupSize);
      return [
        { suffix: "qweight", dtype: "I32", shape: [(K * bits) / 32, N] },
        { suffix: "qzeros", dtype: "I32", shape: [G, (N * bits) / 32] },
        { suffix: "scales", dtype: opts.scaleDtype ?? "F16", shape: [G, N] },
        { suffix: "g_idx", dtype: "I32", shape: [K] },
      ];
    },
    write(layer, opts = {}) {
      const t = packGptq(layer, version);
      const dtype = opts.scaleDtype ?? "F16";
      const data: Record<string, TypedArray> = {
        qweight: t.qweight,
        qzeros: t.qzeros,
        scales: dtype === "F16" ? t.scales : storedScales(layer.scales, dtype),
        g_idx: t.gIdx,
      };
      return traits.layout(layer, opts).map((spec) => ({ ...spec, data: data[spec.suffix] }));
    },
  };
  return traits;
}

const marlinTraits: FormatTraits = {
  name: "marlin",
  summary: "Marlin (AutoGPTQ serialised form): B int32 [K/16, 2N] tiled and shuffled, s fp16 [G, N]",
  detectedAs: "marlin",
  suffixes: ["B", "s"],
  optionalSuffixes: [],
  auxiliarySuffixes: ["workspace"],
  marker: MARLIN_MARKER,
  words: {
    label: "Marlin",
    markerName: "Marlin B/s",
    bits: ({ bits }) => `${bits}-bit (Marlin B holds 4-bit codes only)`,
  },
  detect: (names) => markedPrefixes(names, MARLIN_MARKER),
  inspect: inspectMarlin,
  grouping: marlinGrouping,
  configProblem(s) {
    if (s.bits === 4 && s.sym && !s.descAct) return undefined;
    return {
      says: `${s.bits}-bit, ${s.sym ? "sym" : "asym"}, desc_act ${s.descAct} in Marlin format`,
      tensors: "Marlin-packed, which holds only 4-bit symmetric weights without act-order",
    };
  },
  outAlignment: () => 64,
  schemeProblem(scheme, shape) {
    if (!scheme.sym) return "Marlin is symmetric only; this model is asymmetric";
    return marlinShapeProblem({ ...shape, bits: scheme.bits, groupSize: scheme.groupSize });
  },
  layerProblem: marlinLayerProblem,
  read(get, shape) {
    const { inFeatures: K, outFeatures: N, groupSize } = shape;
    if (shape.bits !== 4) throw new GptqError(`Marlin stores 4-bit weights only, not ${shape.bits}-bit`);
    const problem = marlinShapeProblem(shape);
    if (problem) throw new GptqError(`cannot read marlin layer: ${problem}`);
    const G = numGroups(K, groupSize);
    const B = need(get, "B", "marlin");
    const s = need(get, "s", "marlin");
    expectShape(B, [K / 16, 2 * N], "B");
    expectShape(s, [G, N], "s");
    if (s.dtype !== "F16") throw new GptqError(`Marlin s must be F16, not ${s.dtype}`);
    requireFinite(s, "s");
    return unpackMarlin({ B: toInt32(B), s: s.data as Uint16Array }, shape);
  },
  layout({ inFeatures: K, outFeatures: N, groupSize }) {
    return [
      { suffix: "B", dtype: "I32", shape: [K / 16, 2 * N] },
      { suffix: "s", dtype: "F16", shape: [numGroups(K, groupSize), N] },
    ];
  },
  write(layer) {
    const { B, s } = packMarlin(layer);
    const [b, sc] = marlinTraits.layout(layer);
    return [
      { ...b, data: B },
      { ...sc, data: s },
    ];
  },
};

export const FORMATS: Readonly<Record<CheckpointFormat, FormatTraits>> = {
  gptq: gptqTraits("gptq", "v1"),
  gptq_v2: gptqTraits("gptq_v2", "v2"),
  marlin: marlinTraits,
};

export function isCheckpointFormat(name: string): name is CheckpointFormat {
  return Object.prototype.hasOwnProperty.call(FORMATS, name);
}

export function formatTraits(name: string): FormatTraits {
  if (!isCheckpointFormat(name))
    throw new GptqError(`unknown format "${name}"; known: ${Object.keys(FORMATS).join(", ")}`);
  return FORMATS[name];
}

/** The formats detection tells apart: one per set of tensors (gptq stands for gptq and gptq_v2). */
export const DETECTABLE_FORMATS: readonly FormatTraits[] = Object.values(FORMATS).filter(
  (f) => f.detectedAs === f.name,
);

/** A format's tensors as messages name them: "GPTQ-packed (qweight, qzeros, scales, g_idx)". */
export function packedText(traits: FormatTraits): string {
  return `${traits.words.label}-packed (${[...traits.suffixes, ...traits.optionalSuffixes].join(", ")})`;
}

export interface DetectedLayers {
  /** the format the tensors show (see `FormatTraits.detectedAs`), "fp" when no layer is quantized */
  format: StoredFormat;
  /** prefixes of the quantized layers, in the order of the names */
  prefixes: string[];
}

/**
 * Which format a checkpoint's quantized layers are stored in, from its tensor names alone; a mix of
 * formats is refused (gptq-ts reads one format per checkpoint). `where` (the directory) starts the message.
 */
export function detectLayers(names: readonly string[], where: string): DetectedLayers {
  const found = DETECTABLE_FORMATS.map((traits) => ({ traits, prefixes: traits.detect(names) })).filter(
    (f) => f.prefixes.length > 0,
  );
  if (found.length > 1) {
    const as = ({ traits, prefixes }: (typeof found)[number]) =>
      `${prefixes[0]} as ${traits.words.label} (${traits.marker.join(", ")})`;
    throw new GptqError(
      `${where}: layers stored in two formats: ${as(found[0])} and ${as(found[1])}; gptq-ts reads one format per checkpoint`,
    );
  }
  return found.length
    ? { format: found[0].traits.name, prefixes: found[0].prefixes }
    : { format: "fp", prefixes: [] };
}

/**
 * The format of a checkpoint whose layers show `detected`: the configured format when it stores the
 * same tensors (gptq_v2 for tensors that show as gptq), else `detected`.
 */
export function resolveFormat(detected: CheckpointFormat, configured?: CheckpointFormat): CheckpointFormat {
  return configured !== undefined && FORMATS[configured].detectedAs === detected ? configured : detected;
}
