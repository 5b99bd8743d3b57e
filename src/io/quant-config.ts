/**
 * The quantization config of a checkpoint directory, as AutoGPTQ, GPTQModel, transformers and vLLM write
 * and read it: `quantize_config.json` and `config.json["quantization_config"]`. Reading accepts every
 * spelling those projects use; writing always spells out the fields vLLM needs before it picks a kernel.
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Bits, CHECKPOINT_FORMATS, CheckpointFormat, QuantScheme } from "../formats/types.js";
import { GptqError } from "../util/errors.js";
import { parseJsonStrict } from "../util/json.js";
import { writeTextAtomic } from "./atomic.js";

export const CONFIG_FILE = "config.json";
export const QUANTIZE_CONFIG_FILE = "quantize_config.json";
/** Older AutoGPTQ releases wrote this name; read, never written. */
export const LEGACY_QUANT_CONFIG_FILE = "quant_config.json";

export interface QuantConfig extends QuantScheme {
  staticGroups: boolean;
  trueSequential: boolean;
  /** damping as a fraction of the mean Hessian diagonal (0.01 = 1 %), when recorded */
  dampPercent?: number;
  quantMethod: "gptq";
  checkpointFormat: CheckpointFormat;
  /** GPTQModel's free-form `meta` (quantizer name and version, ...), carried over untouched */
  meta?: Record<string, unknown>;
}

/** A config as read, with where it came from and which of vLLM's four required keys were absent. */
export interface QuantConfigRead {
  config: QuantConfig;
  /** the files (and section) it was read from, e.g. ["quantize_config.json", "config.json#quantization_config"] */
  sources: string[];
  /** keys among group_size, sym, desc_act that no file spelled out (defaults were used) */
  missing: string[];
  /** the same per source (vLLM reads only config.json's section when there is one) */
  missingBySource: Record<string, string[]>;
}

const BITS: readonly number[] = [2, 3, 4, 8];
const FORMATS: readonly string[] = CHECKPOINT_FORMATS;

/** Each field and the names it goes by, first the one we write. */
const ALIASES = {
  bits: ["bits", "w_bit"],
  groupSize: ["group_size", "q_group_size", "groupsize"],
  descAct: ["desc_act", "act_order"],
  sym: ["sym", "is_sym"],
  staticGroups: ["static_groups"],
  trueSequential: ["true_sequential"],
  dampPercent: ["damp_percent"],
  quantMethod: ["quant_method", "method"],
  checkpointFormat: ["checkpoint_format", "format"],
} as const;

type Section = Record<string, unknown>;

function pick(section: Section, names: readonly string[]): { key: string; value: unknown } | undefined {
  for (const key of names) if (key in section && section[key] !== null) return { key, value: section[key] };
  return undefined;
}

function readJsonObject(path: string): Section {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new GptqError(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  // The strict parse refuses duplicate keys; JSON.parse then gives plain objects to hand on.
  parseJsonStrict(text, path);
  const v = JSON.parse(text) as unknown;
  if (typeof v !== "object" || v === null || Array.isArray(v))
    throw new GptqError(`${path}: not a JSON object`);
  return v as Section;
}

/** The raw sections found in a directory, unreconciled (what `fix-config` starts from). */
export interface RawQuantSections {
  /** config.json parsed, when present */
  configJson?: Section;
  /** config.json["quantization_config"], when present */
  fromConfigJson?: Section;
  /** quantize_config.json (or the legacy quant_config.json), when present */
  fromQuantizeConfig?: Section;
  quantizeConfigName?: string;
}

export function readRawQuantSections(dir: string): RawQuantSections {
  const out: RawQuantSections = {};
  const cfgPath = join(dir, CONFIG_FILE);
  if (existsSync(cfgPath)) {
    out.configJson = readJsonObject(cfgPath);
    const q = out.configJson.quantization_config;
    if (q !== undefined && q !== null) {
      if (typeof q !== "object" || Array.isArray(q))
        throw new GptqError(`${cfgPath}: "quantization_config" is not an object`);
      out.fromConfigJson = q as Section;
    }
  }
  for (const name of [QUANTIZE_CONFIG_FILE, LEGACY_QUANT_CONFIG_FILE]) {
    const p = join(dir, name);
    if (existsSync(p)) {
      out.fromQuantizeConfig = readJsonObject(p);
      out.quantizeConfigName = name;
      break;
    }
  }
  return out;
}

/**
 * Interprets one section. Missing fields take AutoGPTQ's defaults (group 128, sym, no act-order, v1);
 * `bits` has no default; a section of another quantization method is refused.
 */
export function parseQuantSection(
  section: Section,
  where: string,
): { config: QuantConfig; missing: string[] } {
  const bad = (msg: string): never => {
    throw new GptqError(`${where}: ${msg}`);
  };
  const method = pick(section, ALIASES.quantMethod);
  if (method && String(method.value).toLowerCase() !== "gptq")
    bad(`${method.key} is ${JSON.stringify(method.value)}; gptq-ts reads GPTQ checkpoints only`);
  const missing: string[] = [];
  const bitsV = pick(section, ALIASES.bits);
  if (!bitsV) return bad(`no "bits"`);
  if (typeof bitsV.value !== "number" || !BITS.includes(bitsV.value))
    bad(`${bitsV.key} is ${JSON.stringify(bitsV.value)}; expected one of 2, 3, 4, 8`);
  const bool = (names: readonly string[], fallback: boolean, required: boolean): boolean => {
    const v = pick(section, names);
    if (!v) {
      if (required) missing.push(names[0]);
      return fallback;
    }
    if (typeof v.value !== "boolean")
      return bad(`${v.key} is ${JSON.stringify(v.value)}; expected true or false`);
    return v.value;
  };
  let groupSize = 128;
  const g = pick(section, ALIASES.groupSize);
  if (!g) missing.push("group_size");
  else if (typeof g.value !== "number" || !Number.isInteger(g.value) || (g.value !== -1 && g.value <= 0))
    bad(`${g.key} is ${JSON.stringify(g.value)}; expected -1 or a positive integer`);
  else groupSize = g.value;
  const sym = bool(ALIASES.sym, true, true);
  const descAct = bool(ALIASES.descAct, false, true);
  const staticGroups = bool(ALIASES.staticGroups, false, false);
  const trueSequential = bool(ALIASES.trueSequential, true, false);
  let dampPercent: number | undefined;
  const d = pick(section, ALIASES.dampPercent);
  if (d) {
    if (typeof d.value !== "number" || !(d.value >= 0))
      bad(`${d.key} is ${JSON.stringify(d.value)}; expected a number`);
    dampPercent = d.value as number;
  }
  let checkpointFormat: CheckpointFormat = "gptq";
  const f = pick(section, ALIASES.checkpointFormat);
  if (f) {
    const name = String(f.value).toLowerCase();
    if (!FORMATS.includes(name))
      bad(`${f.key} is ${JSON.stringify(f.value)}; expected gptq, gptq_v2 or marlin`);
    checkpointFormat = name as CheckpointFormat;
  }
  if (section.is_marlin_format === true) {
    if (f && checkpointFormat !== "marlin")
      bad(`is_marlin_format is true but ${f.key} is "${checkpointFormat}"`);
    checkpointFormat = "marlin";
  }
  const meta = section.meta;
  const config: QuantConfig = {
    bits: bitsV.value as Bits,
    groupSize,
    sym,
    descAct,
    staticGroups,
    trueSequential,
    quantMethod: "gptq",
    checkpointFormat,
  };
  if (dampPercent !== undefined) config.dampPercent = dampPercent;
  if (typeof meta === "object" && meta !== null && !Array.isArray(meta))
    config.meta = meta as Record<string, unknown>;
  return { config, missing };
}

const COMPARED = ["bits", "groupSize", "sym", "descAct", "checkpointFormat"] as const;
const FILLED = ["groupSize", "sym", "descAct", "checkpointFormat", "staticGroups", "trueSequential"] as const;
const KEY_NAME: Record<(typeof COMPARED)[number], string> = {
  bits: "bits",
  groupSize: "group_size",
  sym: "sym",
  descAct: "desc_act",
  checkpointFormat: "checkpoint_format",
};

/**
 * The directory's quantization config, or undefined for an unquantized checkpoint. quantize_config.json
 * and config.json must agree on bits, group_size, sym, desc_act and checkpoint_format; a disagreement is
 * an error (loaders differ in which file wins).
 */
export function readQuantConfigDetailed(dir: string): QuantConfigRead | undefined {
  const raw = readRawQuantSections(dir);
  const parsed: { where: string; config: QuantConfig; missing: string[]; keys: Section }[] = [];
  if (raw.fromQuantizeConfig) {
    const where = raw.quantizeConfigName!;
    parsed.push({
      where,
      keys: raw.fromQuantizeConfig,
      ...parseQuantSection(raw.fromQuantizeConfig, join(dir, where)),
    });
  }
  if (raw.fromConfigJson) {
    const where = `${CONFIG_FILE}#quantization_config`;
    parsed.push({
      where,
      keys: raw.fromConfigJson,
      ...parseQuantSection(raw.fromConfigJson, join(dir, CONFIG_FILE)),
    });
  }
  if (!parsed.length) return undefined;
  const [first, second] = parsed;
  const spelled = (p: (typeof parsed)[0], k: keyof typeof ALIASES) =>
    pick(p.keys, ALIASES[k]) !== undefined || (k === "checkpointFormat" && p.keys.is_marlin_format === true);
  const config = { ...first.config };
  if (second) {
    for (const k of COMPARED)
      // A field only one file spells out is not a disagreement.
      if (spelled(first, k) && spelled(second, k) && first.config[k] !== second.config[k])
        throw new GptqError(
          `${dir}: ${first.where} says ${KEY_NAME[k]} ${JSON.stringify(first.config[k])} but ${second.where} says ${JSON.stringify(second.config[k])}; run \`gptq fix-config ${dir}\` to make them describe the stored tensors`,
        );
    // What the first file left to defaults, the second may spell out.
    for (const k of FILLED)
      if (!spelled(first, k) && spelled(second, k)) Object.assign(config, { [k]: second.config[k] });
    if (config.dampPercent === undefined && second.config.dampPercent !== undefined)
      config.dampPercent = second.config.dampPercent;
    if (config.meta === undefined && second.config.meta !== undefined) config.meta = second.config.meta;
  }
  const missing = first.missing.filter((m) => !second || second.missing.includes(m));
  const missingBySource = Object.fromEntries(parsed.map((p) => [p.where, p.missing]));
  return { config, sources: parsed.map((p) => p.where), missing, missingBySource };
}

export function readQuantConfig(dir: string): QuantConfig | undefined {
  return readQuantConfigDetailed(dir)?.config;
}

/** The section we write: the canonical keys first, then what an existing section held besides them. */
function sectionFor(cfg: QuantConfig, existing: Section | undefined): Section {
  const out: Section = {
    bits: cfg.bits,
    group_size: cfg.groupSize,
    desc_act: cfg.descAct,
    sym: cfg.sym,
    static_groups: cfg.staticGroups,
    true_sequential: cfg.trueSequential,
  };
  if (cfg.dampPercent !== undefined) out.damp_percent = cfg.dampPercent;
  out.quant_method = cfg.quantMethod;
  out.checkpoint_format = cfg.checkpointFormat;
  const replaced = new Set<string>(Object.values(ALIASES).flat());
  for (const [k, v] of Object.entries(existing ?? {})) {
    if (k in out || k === "meta" || k === "is_marlin_format") continue;
    // Aliases an older writer left: keep the key (its reader may look for it) but make it agree.
    if (k === "format") out.format = cfg.checkpointFormat;
    else if (k === "method") out.method = cfg.quantMethod;
    else if (!replaced.has(k)) out[k] = v;
  }
  // Legacy AutoGPTQ (< 0.8) recognises Marlin files only by this flag.
  if (cfg.checkpointFormat === "marlin" || existing?.is_marlin_format !== undefined)
    out.is_marlin_format = cfg.checkpointFormat === "marlin";
  if (cfg.meta) out.meta = cfg.meta;
  return out;
}

/**
 * Writes the config into both quantize_config.json and config.json["quantization_config"], each
 * atomically; every other key of config.json stays as it was (config.json is created if absent).
 */
export function writeQuantConfig(dir: string, cfg: QuantConfig): void {
  if (!BITS.includes(cfg.bits)) throw new GptqError(`cannot write a config with bits ${cfg.bits}`);
  if (!FORMATS.includes(cfg.checkpointFormat))
    throw new GptqError(
      `cannot write a config with checkpoint_format ${JSON.stringify(cfg.checkpointFormat)}`,
    );
  const raw = readRawQuantSections(dir);
  const configJson: Section = raw.configJson ? { ...raw.configJson } : {};
  configJson.quantization_config = sectionFor(cfg, raw.fromConfigJson ?? raw.fromQuantizeConfig);
  writeTextAtomic(
    join(dir, QUANTIZE_CONFIG_FILE),
    JSON.stringify(sectionFor(cfg, raw.fromQuantizeConfig), null, 2) + "\n",
  );
  writeTextAtomic(join(dir, CONFIG_FILE), JSON.stringify(configJson, null, 2) + "\n");
}

/** Removes the quantization config (after dequantizing): drops the config.json section and quantize_config.json. */
export function clearQuantConfig(dir: string): void {
  const raw = readRawQuantSections(dir);
  if (raw.configJson && "quantization_config" in raw.configJson) {
    const rest = { ...raw.configJson };
    delete rest.quantization_config;
    writeTextAtomic(join(dir, CONFIG_FILE), JSON.stringify(rest, null, 2) + "\n");
  }
  for (const name of [QUANTIZE_CONFIG_FILE, LEGACY_QUANT_CONFIG_FILE]) {
    const p = join(dir, name);
    rmSync(p, { force: true });
  }
}
