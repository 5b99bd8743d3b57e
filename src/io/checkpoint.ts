/**
 * A checkpoint directory: its tensors (any sharding), its quantization config, and what the tensors
 * actually are. The stored tensors are the truth; the config is checked against them, and every
 * disagreement names the layer, what the config says, what the tensors are, and the fix.
 * What a format's tensors are, how its layers are found and inspected, is the format registry's
 * (`formats/registry.ts`): this file loops over it and names no format's tensors.
 * Opening and listing read headers only, plus each layer's group index (GPTQ `g_idx`, K int32) and one
 * layer's stored zero points (GPTQ `qzeros`); only `inferQuantConfig` (the repair) reads every layer's.
 */
import {
  DETECTABLE_FORMATS,
  FORMATS,
  FormatTraits,
  detectLayers,
  packedText,
  resolveFormat,
} from "../formats/registry.js";
import { HeaderLookup } from "../formats/headers.js";
import { Bits, CheckpointFormat, StoredFormat, groupSizeFor, numGroups } from "../formats/types.js";
import { TensorInfo } from "./safetensors.js";
import { TensorStore } from "./store.js";
import { toInt32 } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import {
  QuantConfig,
  readQuantConfigDetailed,
  readRawQuantSections,
  parseQuantSection,
} from "./quant-config.js";

export * from "./quant-config.js";

export { groupSizeFor };

export interface QuantizedLayerInfo {
  /** tensor prefix, e.g. "model.layers.0.self_attn.q_proj" */
  name: string;
  inFeatures: number; // K
  outFeatures: number; // N
  bits: Bits;
  groups: number; // G
  /** group size the tensors imply (-1 when one group spans K) */
  groupSize: number;
  /** the group index (`g_idx`) is not k // group (always false for Marlin, whose files carry none) */
  actOrder: boolean;
  /** the format the tensors show: GPTQ v1 and v2 store the same tensors, both show as "gptq" */
  format: CheckpointFormat;
  hasBias: boolean;
}

/** An unquantized linear layer's weight, `<name>.weight` [N, K]. */
export interface LinearWeightInfo {
  name: string;
  inFeatures: number;
  outFeatures: number;
  dtype: string;
}

const FLOAT_DTYPES = ["F16", "BF16", "F32"];

/** Natural order, so layer 2 comes before layer 10. */
function byName(a: { name: string }, b: { name: string }): number {
  return a.name.localeCompare(b.name, "en", { numeric: true });
}

/**
 * The format the stored tensors show ("gptq" for v1 and v2 alike), "fp" when nothing is quantized;
 * a mix of formats is refused.
 */
export function detectFormat(store: TensorStore): StoredFormat {
  return detectLayers(store.names(), store.dir).format;
}

function headersOf(store: TensorStore, prefix: string): HeaderLookup {
  return (suffix) => {
    const name = `${prefix}.${suffix}`;
    return store.has(name) ? store.info(name) : undefined;
  };
}

function int32sOf(store: TensorStore, prefix: string): (suffix: string) => Int32Array {
  return (suffix) => toInt32(store.read(`${prefix}.${suffix}`));
}

function quantizedLayer(store: TensorStore, traits: FormatTraits, p: string): QuantizedLayerInfo {
  const header = headersOf(store, p);
  const dims = traits.inspect(p, header);
  const { groupSize, actOrder } = traits.grouping(p, dims, header, int32sOf(store, p));
  return {
    name: p,
    inFeatures: dims.inFeatures,
    outFeatures: dims.outFeatures,
    bits: dims.bits,
    groups: dims.groups,
    groupSize,
    actOrder,
    format: traits.name,
    hasBias: store.has(`${p}.bias`),
  };
}

/** Every quantized linear with its shape and grouping, in natural name order. */
export function listQuantizedLayers(store: TensorStore): QuantizedLayerInfo[] {
  const { format, prefixes } = detectLayers(store.names(), store.dir);
  if (format === "fp") return [];
  return prefixes.map((p) => quantizedLayer(store, FORMATS[format], p)).sort(byName);
}

/** Embeddings, norms and output heads are not the linears a GPTQ quantizer replaces. */
const EMBEDDING =
  /(^|\.)(embed_tokens|embed_in|embeddings?|word_embeddings|position_embeddings|wte|wpe|tok_embeddings)(\.|$)/;
const NORM = /norm|(^|\.)ln_|(^|\.)ln\d*(\.|$)|rotary/i;
/** Output heads: lm_head anywhere, other head names only at the top level ("output" is also BERT's attention.output). */
const HEAD = /(^|\.)(lm_head|embed_out)$|^(output|score|classifier)$/;

/** The 2-D `.weight` tensors of linear layers (in natural order), without embeddings, norms and lm_head. */
export function listLinearWeights(store: TensorStore): LinearWeightInfo[] {
  const out: LinearWeightInfo[] = [];
  for (const n of store.names()) {
    if (!n.endsWith(".weight")) continue;
    const t: TensorInfo = store.info(n);
    if (t.shape.length !== 2 || !FLOAT_DTYPES.includes(t.dtype)) continue;
    const name = n.slice(0, -".weight".length);
    if (EMBEDDING.test(name) || NORM.test(name) || HEAD.test(name)) continue;
    out.push({ name, inFeatures: t.shape[1], outFeatures: t.shape[0], dtype: t.dtype });
  }
  return out.sort(byName);
}

/**
 * The zero points of one layer as stored (GPTQ v1: zero − 1), undefined for a format whose zero point
 * is implicit (Marlin's 8).
 */
function readStoredZeros(store: TensorStore, layer: QuantizedLayerInfo): Uint8Array | undefined {
  return FORMATS[layer.format].storedZeros?.(layer, int32sOf(store, layer.name));
}

/**
 * What one layer's stored zero points say about the scheme: symmetric as v1, as v2, or neither. An
 * implicit zero point (2^(bits−1), nothing stored) is symmetric as v2.
 */
export function zeroPointEvidence(
  store: TensorStore,
  layer: QuantizedLayerInfo,
): "sym-v1" | "sym-v2" | "asym" {
  const z = readStoredZeros(store, layer);
  if (!z) return "sym-v2";
  const half = 1 << (layer.bits - 1);
  if (z.every((v) => v === half)) return "sym-v2";
  if (z.every((v) => v === half - 1)) return "sym-v1";
  return "asym";
}

export interface Checkpoint {
  dir: string;
  store: TensorStore;
  /** the config files' view, undefined for an unquantized checkpoint */
  config?: QuantConfig;
  configSources: string[];
  /** of bits, group_size, sym, desc_act, those no file spells out (vLLM needs all four) */
  missingKeys: string[];
  /** the same per config source ("quantize_config.json", "config.json#quantization_config") */
  missingKeysBySource: Record<string, string[]>;
  /** the format of the stored tensors, v1 or v2 as the config says */
  format: StoredFormat;
  /** quantized layers; empty for "fp" */
  layers: QuantizedLayerInfo[];
  /** unquantized linear weights (all linears of an "fp" checkpoint, or those a quantized one left unquantized) */
  linears: LinearWeightInfo[];
  /** doubts that are not errors (e.g. v1 zero points that look corrupted) */
  warnings: string[];
  close(): void;
}

const FIX = (dir: string) => `run \`gptq fix-config ${dir}\` to rewrite the config from the stored tensors`;

function mismatch(dir: string, layer: string, says: string, tensors: string): GptqError {
  return new GptqError(
    `${dir}: layer ${layer}: the config says ${says}, but the tensors are ${tensors}; ${FIX(dir)}`,
  );
}

function describeGroups(K: number, G: number, groupSize: number): string {
  return `${G} group${G === 1 ? "" : "s"} over in_features ${K} (group size ${groupSize})`;
}

/**
 * Checks the config against the tensors; throws at the first disagreement. Reads one layer's stored
 * zero points to tell v1 from v2 when the config says symmetric.
 */
export function verifyConfig(
  dir: string,
  store: TensorStore,
  config: QuantConfig | undefined,
  layers: QuantizedLayerInfo[],
): string[] {
  const warnings: string[] = [];
  if (!layers.length) {
    if (config)
      throw new GptqError(
        `${dir}: the config says ${config.bits}-bit ${config.checkpointFormat}, but no quantized tensors are stored (${DETECTABLE_FORMATS.map((f) => `no ${f.words.markerName}`).join(", ")}); ${FIX(dir)}`,
      );
    return warnings;
  }
  const first = layers[0];
  const stored = FORMATS[first.format];
  if (!config)
    throw new GptqError(
      `${dir}: ${stored.words.label} tensors are stored (e.g. ${first.name}) but there is no quantize_config.json and no quantization_config in config.json; ${FIX(dir)}`,
    );
  const configured = FORMATS[config.checkpointFormat];
  if (configured.detectedAs !== stored.name)
    throw mismatch(dir, first.name, `checkpoint_format "${config.checkpointFormat}"`, packedText(stored));
  const cannot = configured.configProblem?.(config);
  if (cannot) throw mismatch(dir, first.name, cannot.says, cannot.tensors);
  for (const l of layers) {
    if (l.bits !== config.bits) throw mismatch(dir, l.name, `bits ${config.bits}`, stored.words.bits(l));
    const G = numGroups(l.inFeatures, config.groupSize);
    if (G !== l.groups)
      throw mismatch(
        dir,
        l.name,
        `group_size ${config.groupSize} (${G} groups over in_features ${l.inFeatures})`,
        describeGroups(l.inFeatures, l.groups, l.groupSize),
      );
    if (l.actOrder && !config.descAct)
      throw mismatch(dir, l.name, "desc_act false", `act-order: ${stored.groupIndex} is not k // group_size`);
  }
  // Stored zero points (GPTQ's) must agree with sym; v1 and v2 store the same tensors and differ by them.
  if (stored.storedZeros) {
    const z = zeroPointEvidence(store, first);
    const half = 1 << (first.bits - 1);
    if (config.sym && z === "asym")
      throw mismatch(dir, first.name, "sym true", `asymmetric: its zero points are not all ${half}`);
    if (z === "sym-v2" && config.checkpointFormat === "gptq")
      throw mismatch(
        dir,
        first.name,
        `checkpoint_format "gptq" (v1, which stores zero − 1 = ${half - 1})`,
        `v2: every stored zero point is ${half}`,
      );
    if (z === "sym-v1" && config.checkpointFormat === "gptq_v2")
      throw mismatch(
        dir,
        first.name,
        `checkpoint_format "gptq_v2" (stores the zero point ${half})`,
        `v1: every stored zero point is ${half - 1} (zero − 1)`,
      );
    if (
      !config.sym &&
      config.checkpointFormat === "gptq" &&
      readStoredZeros(store, first)!.includes((1 << first.bits) - 1)
    )
      warnings.push(
        `layer ${first.name}: a stored v1 zero point of ${(1 << first.bits) - 1} means a zero of 0 overflowed when packed (or the file is really gptq_v2); its dequantized weights may be wrong`,
      );
  }
  return warnings;
}

export interface OpenOptions {
  /** check config against tensors (default true); false for tools that repair the config */
  verify?: boolean;
}

/** Opens a checkpoint directory (headers, configs, group indexes) and checks that config and tensors agree. */
export function openCheckpoint(dir: string, opts: OpenOptions = {}): Checkpoint {
  const store = TensorStore.open(dir);
  try {
    const read = readQuantConfigDetailed(dir);
    const layers = listQuantizedLayers(store);
    const warnings = opts.verify === false ? [] : verifyConfig(dir, store, read?.config, layers);
    const stored = layers[0]?.format;
    const format: StoredFormat =
      stored === undefined ? "fp" : resolveFormat(stored, read?.config.checkpointFormat);
    const quantized = new Set(layers.map((l) => l.name));
    return {
      dir,
      store,
      config: read?.config,
      configSources: read?.sources ?? [],
      missingKeys: read?.missing ?? [],
      missingKeysBySource: read?.missingBySource ?? {},
      format,
      layers,
      linears: listLinearWeights(store).filter((l) => !quantized.has(l.name)),
      warnings,
      close: () => store.close(),
    };
  } catch (e) {
    store.close();
    throw e;
  }
}

/**
 * The config that describes the stored tensors (what `fix-config` writes): bits, group size, act-order,
 * symmetry and v1/v2 from the tensors (zero points of every layer), the rest (damp, true_sequential,
 * meta, ...) kept from the existing files. Undefined for an unquantized checkpoint.
 */
export function inferQuantConfig(dir: string): QuantConfig | undefined {
  const store = TensorStore.open(dir);
  try {
    const layers = listQuantizedLayers(store);
    if (!layers.length) return undefined;
    const raw = readRawQuantSections(dir);
    // A broken config is exactly what this repairs: take from it only what parses.
    let prior: QuantConfig | undefined;
    for (const s of [raw.fromQuantizeConfig, raw.fromConfigJson])
      if (s && !prior)
        try {
          prior = parseQuantSection(s, dir).config;
        } catch {
          prior = undefined;
        }
    const bits = layers[0].bits;
    const odd = layers.find((l) => l.bits !== bits);
    if (odd)
      throw new GptqError(
        `${dir}: layers ${layers[0].name} (${bits}-bit) and ${odd.name} (${odd.bits}-bit) differ; one config cannot describe both`,
      );
    const split = layers.filter((l) => l.groups > 1);
    let groupSize = split.length ? split[0].groupSize : -1;
    // A prior group size that every layer's group count agrees with wins over our guess among several.
    if (prior && layers.every((l) => numGroups(l.inFeatures, prior!.groupSize) === l.groups))
      groupSize = prior.groupSize;
    const bad = layers.find((l) => numGroups(l.inFeatures, groupSize) !== l.groups);
    if (bad)
      throw new GptqError(
        `${dir}: no single group size fits every layer: ${split[0]?.name ?? layers[0].name} implies ${groupSize}, ${bad.name} holds ${describeGroups(bad.inFeatures, bad.groups, bad.groupSize)}`,
      );
    const actOrder = layers.some((l) => l.actOrder);
    const traits = FORMATS[layers[0].format];
    // a format without stored zero points is symmetric (its zero point is implicit)
    let sym = true;
    let checkpointFormat: CheckpointFormat = traits.name;
    if (traits.storedZeros) {
      const evidence = layers.map((l) => zeroPointEvidence(store, l));
      const v1 = evidence.indexOf("sym-v1");
      const v2 = evidence.indexOf("sym-v2");
      if (v1 >= 0 && v2 >= 0 && !evidence.includes("asym"))
        throw new GptqError(
          `${dir}: layer ${layers[v1].name} stores symmetric zero points as v1 (zero − 1) but ${layers[v2].name} as v2; one config cannot describe both: re-convert one of them`,
        );
      const ev = new Set(evidence);
      sym = !ev.has("asym");
      if (sym) checkpointFormat = ev.has("sym-v2") ? "gptq_v2" : "gptq";
      else checkpointFormat = prior?.checkpointFormat === "gptq_v2" ? "gptq_v2" : "gptq";
    }
    const staticGroups = prior?.staticGroups ?? false;
    const config: QuantConfig = {
      bits,
      groupSize,
      sym,
      // static groups + act-order leave g_idx trivial: keep a prior desc_act true in that case
      // (a format without a group index holds no act-order)
      descAct: actOrder || (traits.groupIndex !== undefined && staticGroups && (prior?.descAct ?? false)),
      staticGroups,
      trueSequential: prior?.trueSequential ?? true,
      quantMethod: "gptq",
      checkpointFormat,
    };
    if (prior?.dampPercent !== undefined) config.dampPercent = prior.dampPercent;
    if (prior?.meta) config.meta = prior.meta;
    return config;
  } finally {
    store.close();
  }
}
