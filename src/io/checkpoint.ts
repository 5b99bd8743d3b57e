/**
 * A checkpoint directory: its tensors (any sharding), its quantization config, and what the tensors
 * actually are. The stored tensors are the truth; the config is checked against them, and every
 * disagreement names the layer, what the config says, what the tensors are, and the fix.
 * Opening and listing read headers only, plus `g_idx` (K int32 per layer) and one layer's `qzeros`;
 * only `inferQuantConfig` (the repair) reads every layer's `qzeros`.
 */
import { Bits, CheckpointFormat, StoredFormat, groupSizeFor, numGroups } from "../formats/types.js";
import { unpackCols } from "../formats/bitpack.js";
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
  /** `g_idx` is not k // group (always false for Marlin, whose files carry no g_idx) */
  actOrder: boolean;
  /** the format the tensors show: GPTQ v1 and v2 store the same tensors and show as "gptq" (the config tells) */
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

const BITS: readonly Bits[] = [2, 3, 4, 8];
const FLOAT_DTYPES = ["F16", "BF16", "F32"];

/** Natural order, so layer 2 comes before layer 10. */
function byName(a: { name: string }, b: { name: string }): number {
  return a.name.localeCompare(b.name, "en", { numeric: true });
}

function prefixesWith(store: TensorStore, suffix: string): string[] {
  return store
    .names()
    .filter((n) => n.endsWith(suffix))
    .map((n) => n.slice(0, -suffix.length));
}

function gptqPrefixes(store: TensorStore): string[] {
  return prefixesWith(store, ".qweight");
}

function marlinPrefixes(store: TensorStore): string[] {
  const names = new Set(store.names());
  return prefixesWith(store, ".B").filter((p) => names.has(`${p}.s`));
}

/** The format of the stored tensors, "fp" when nothing is quantized; a mix of formats is refused. */
export function detectFormat(store: TensorStore): StoredFormat {
  const g = gptqPrefixes(store);
  const m = marlinPrefixes(store);
  if (g.length && m.length)
    throw new GptqError(
      `${store.dir}: layers stored in two formats: ${g[0]} as GPTQ (qweight) and ${m[0]} as Marlin (B, s); gptq-ts reads one format per checkpoint`,
    );
  return g.length ? "gptq" : m.length ? "marlin" : "fp";
}

function shape2(store: TensorStore, name: string, layer: string, dtypes: string[]): [number, number] {
  if (!store.has(name)) throw new GptqError(`layer ${layer}: ${name} is missing`);
  const t = store.info(name);
  if (!dtypes.includes(t.dtype) || t.shape.length !== 2)
    throw new GptqError(
      `layer ${layer}: ${name} is ${t.dtype}${JSON.stringify(t.shape)}, expected a 2-D ${dtypes.join("/")} tensor`,
    );
  return [t.shape[0], t.shape[1]];
}

/** Act-order and group size from `g_idx`: trivial when g_idx[k] = k // g for the g of its first run. */
function readGIdx(store: TensorStore, name: string, layer: string, K: number, G: number) {
  const info = store.info(name);
  if (info.shape.length !== 1 || info.shape[0] !== K || (info.dtype !== "I32" && info.dtype !== "I64"))
    throw new GptqError(
      `layer ${layer}: ${name} is ${info.dtype}${JSON.stringify(info.shape)}, expected int32[${K}] (one group index per input row)`,
    );
  const g = toInt32(store.read(name));
  const counts = new Int32Array(G);
  for (let k = 0; k < K; k++) {
    const v = g[k];
    if (v < 0 || v >= G)
      throw new GptqError(`layer ${layer}: g_idx[${k}] is ${v}, outside the ${G} groups that scales hold`);
    counts[v]++;
  }
  let run = 0;
  while (run < K && g[run] === 0) run++;
  let trivial = run > 0;
  for (let k = 0; trivial && k < K; k++) if (g[k] !== Math.floor(k / run)) trivial = false;
  const biggest = counts.reduce((a, b) => Math.max(a, b), 0);
  return { actOrder: !trivial, groupSize: G === 1 ? -1 : trivial ? run : biggest };
}

function gptqLayer(store: TensorStore, p: string): QuantizedLayerInfo {
  const [R, N] = shape2(store, `${p}.qweight`, p, ["I32"]);
  const [G, C] = shape2(store, `${p}.qzeros`, p, ["I32"]);
  const [Gs, Ns] = shape2(store, `${p}.scales`, p, FLOAT_DTYPES);
  if (Ns !== N || Gs !== G)
    throw new GptqError(
      `layer ${p}: scales are [${Gs}, ${Ns}] but qweight has ${N} outputs and qzeros ${G} groups: expected [${G}, ${N}]`,
    );
  if (R === 0 || N === 0) throw new GptqError(`layer ${p}: qweight is [${R}, ${N}], an empty matrix`);
  const bits = BITS.find((b) => C * 32 === N * b);
  if (!bits)
    throw new GptqError(
      `layer ${p}: qzeros [${G}, ${C}] do not hold ${N} zero points at 2, 3, 4 or 8 bits (N * bits / 32 words per group)`,
    );
  if ((R * 32) % bits !== 0)
    throw new GptqError(`layer ${p}: qweight has ${R} rows, not a whole number of ${bits}-bit codes`);
  const K = (R * 32) / bits;
  if (G < 1 || G > K) throw new GptqError(`layer ${p}: ${G} groups for ${K} input rows`);
  let actOrder = false;
  let groupSize = groupSizeFor(K, G);
  if (store.has(`${p}.g_idx`)) {
    const gInfo = store.info(`${p}.g_idx`);
    if (gInfo.shape.length === 1 && gInfo.shape[0] !== K)
      throw new GptqError(
        `layer ${p}: g_idx has ${gInfo.shape[0]} rows but qweight holds ${K} (${R} words of ${32 / bits} codes); the packing dropped or added rows: re-pack from the unquantized weights`,
      );
    ({ actOrder, groupSize } = readGIdx(store, `${p}.g_idx`, p, K, G));
  }
  if (groupSize === undefined)
    throw new GptqError(`layer ${p}: no group size gives ${G} groups over ${K} rows`);
  return {
    name: p,
    inFeatures: K,
    outFeatures: N,
    bits,
    groups: G,
    groupSize,
    actOrder,
    format: "gptq",
    hasBias: store.has(`${p}.bias`),
  };
}

function marlinLayer(store: TensorStore, p: string): QuantizedLayerInfo {
  const [R, C] = shape2(store, `${p}.B`, p, ["I32"]);
  const [G, N] = shape2(store, `${p}.s`, p, FLOAT_DTYPES);
  if (C !== 2 * N)
    throw new GptqError(
      `layer ${p}: Marlin B is [${R}, ${C}] but s has ${N} outputs: expected [${R}, ${2 * N}]`,
    );
  if (R === 0 || N === 0) throw new GptqError(`layer ${p}: Marlin B is [${R}, ${C}], an empty matrix`);
  const K = R * 16;
  const groupSize = groupSizeFor(K, G);
  if (groupSize === undefined)
    throw new GptqError(`layer ${p}: Marlin s holds ${G} groups for ${K} input rows`);
  return {
    name: p,
    inFeatures: K,
    outFeatures: N,
    bits: 4,
    groups: G,
    groupSize,
    actOrder: false,
    format: "marlin",
    hasBias: store.has(`${p}.bias`),
  };
}

/** Every quantized linear with its shape and grouping, in natural name order. */
export function listQuantizedLayers(store: TensorStore): QuantizedLayerInfo[] {
  const format = detectFormat(store);
  if (format === "fp") return [];
  const layers =
    format === "gptq"
      ? gptqPrefixes(store).map((p) => gptqLayer(store, p))
      : marlinPrefixes(store).map((p) => marlinLayer(store, p));
  return layers.sort(byName);
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

/** The zero points of one GPTQ layer, unpacked (v1 values as stored, i.e. zero − 1). */
function readStoredZeros(store: TensorStore, layer: QuantizedLayerInfo): Uint8Array {
  const words = toInt32(store.read(`${layer.name}.qzeros`));
  return unpackCols(words, layer.groups, layer.outFeatures, layer.bits);
}

/** What one layer's stored zero points say about the scheme: symmetric as v1, as v2, or neither. */
export function zeroPointEvidence(
  store: TensorStore,
  layer: QuantizedLayerInfo,
): "sym-v1" | "sym-v2" | "asym" {
  const z = readStoredZeros(store, layer);
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
 * Checks the config against the tensors; throws at the first disagreement. Reads one layer's qzeros
 * to tell v1 from v2 when the config says symmetric.
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
        `${dir}: the config says ${config.bits}-bit ${config.checkpointFormat}, but no quantized tensors are stored (no qweight, no Marlin B/s); ${FIX(dir)}`,
      );
    return warnings;
  }
  const first = layers[0];
  if (!config)
    throw new GptqError(
      `${dir}: ${first.format === "marlin" ? "Marlin" : "GPTQ"} tensors are stored (e.g. ${first.name}) but there is no quantize_config.json and no quantization_config in config.json; ${FIX(dir)}`,
    );
  const cfgMarlin = config.checkpointFormat === "marlin";
  if (cfgMarlin !== (first.format === "marlin"))
    throw mismatch(
      dir,
      first.name,
      `checkpoint_format "${config.checkpointFormat}"`,
      first.format === "marlin" ? "Marlin-packed (B, s)" : "GPTQ-packed (qweight, qzeros, scales, g_idx)",
    );
  if (cfgMarlin) {
    if (config.bits !== 4 || !config.sym || config.descAct)
      throw mismatch(
        dir,
        first.name,
        `${config.bits}-bit, ${config.sym ? "sym" : "asym"}, desc_act ${config.descAct} in Marlin format`,
        "Marlin-packed, which holds only 4-bit symmetric weights without act-order",
      );
  }
  for (const l of layers) {
    if (l.bits !== config.bits)
      throw mismatch(
        dir,
        l.name,
        `bits ${config.bits}`,
        `${l.bits}-bit (qzeros hold ${l.outFeatures} zero points in ${(l.outFeatures * l.bits) / 32} words)`,
      );
    const G = numGroups(l.inFeatures, config.groupSize);
    if (G !== l.groups)
      throw mismatch(
        dir,
        l.name,
        `group_size ${config.groupSize} (${G} groups over in_features ${l.inFeatures})`,
        describeGroups(l.inFeatures, l.groups, l.groupSize),
      );
    if (l.actOrder && !config.descAct)
      throw mismatch(dir, l.name, "desc_act false", "act-order: g_idx is not k // group_size");
  }
  if (first.format === "gptq") {
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
      readStoredZeros(store, first).includes((1 << first.bits) - 1)
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

/** Opens a checkpoint directory (headers, configs, g_idx) and checks that config and tensors agree. */
export function openCheckpoint(dir: string, opts: OpenOptions = {}): Checkpoint {
  const store = TensorStore.open(dir);
  try {
    const read = readQuantConfigDetailed(dir);
    const layers = listQuantizedLayers(store);
    const warnings = opts.verify === false ? [] : verifyConfig(dir, store, read?.config, layers);
    const stored = layers[0]?.format;
    const format: StoredFormat =
      stored === undefined
        ? "fp"
        : stored === "marlin"
          ? "marlin"
          : read?.config.checkpointFormat === "gptq_v2"
            ? "gptq_v2"
            : "gptq";
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
    let sym = true;
    let checkpointFormat: CheckpointFormat = "marlin";
    if (layers[0].format === "gptq") {
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
      descAct: actOrder || (checkpointFormat !== "marlin" && staticGroups && (prior?.descAct ?? false)),
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
