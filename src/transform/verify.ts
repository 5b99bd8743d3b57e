/**
 * Reads every tensor of a checkpoint and reports what the headers alone (`inspect`) cannot show: the
 * shards against the index, every float value finite, every quantized layer unpackable (zero points in
 * range, g_idx a valid group map, Marlin tiles decodable), and the config against the tensors. Every
 * problem is collected, one per line; nothing is written. Memory: one layer, or a 64 MiB piece of a
 * float tensor, at a time.
 */
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { HeaderLookup } from "../formats/headers.js";
import { FORMATS, detectLayers } from "../formats/registry.js";
import { CheckpointFormat, numGroups } from "../formats/types.js";
import { QuantizedLayerInfo, verifyConfig } from "../io/checkpoint.js";
import { scanNonFinite } from "../io/finite-scan.js";
import { QuantConfig, readQuantConfigDetailed } from "../io/quant-config.js";
import { SafetensorsFile } from "../io/safetensors.js";
import { INDEX_FILE, SINGLE_FILE, TensorStore } from "../io/store.js";
import { FLOAT_TENSOR_DTYPES } from "../tensor/finite.js";
import { Tensor, toInt32 } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";
import { parseJsonStrict } from "../util/json.js";

export interface VerifyProblem {
  /** the tensor at fault, where one is */
  tensor?: string;
  /** the quantized layer at fault (its tensor prefix), where one is */
  layer?: string;
  problem: string;
}

export interface VerifyReport {
  ok: boolean;
  /** tensors read */
  tensors: number;
  /** shard files read */
  shards: number;
  problems: VerifyProblem[];
}

export interface VerifyOptions {
  /** bytes read so far of `total`, and what is being read */
  onProgress?(done: number, total: number, what: string): void;
}

/** A problem as one line of text: "layer X: ...", "tensor X: ..." or the problem alone. */
export function problemText(p: VerifyProblem): string {
  if (p.tensor && p.problem.startsWith(p.tensor)) return p.problem;
  if (p.layer) return `layer ${p.layer}: ${p.problem}`;
  if (p.tensor) return `tensor ${p.tensor}: ${p.problem}`;
  return p.problem;
}

function message(e: unknown): string {
  if (e instanceof GptqError) return e.message;
  throw e;
}

/** The shard files a directory names (index, single file, or every .safetensors), with index problems. */
function shardList(
  dir: string,
  problems: VerifyProblem[],
): { shards: string[]; weightMap?: Record<string, unknown> } {
  const indexPath = join(dir, INDEX_FILE);
  if (existsSync(indexPath)) {
    let index: unknown;
    try {
      index = parseJsonStrict(readFileSync(indexPath, "utf8"), indexPath);
    } catch (e) {
      problems.push({ problem: message(e) });
      return { shards: [] };
    }
    const map = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof map !== "object" || map === null || Array.isArray(map)) {
      problems.push({ problem: `${INDEX_FILE}: no "weight_map" object` });
      return { shards: [] };
    }
    const weightMap = map as Record<string, unknown>;
    const shards: string[] = [];
    for (const s of new Set(Object.values(weightMap))) {
      if (typeof s !== "string" || !s.endsWith(".safetensors") || s.includes("/") || s.includes("\\")) {
        problems.push({ problem: `${INDEX_FILE}: invalid shard name ${JSON.stringify(s)}` });
        continue;
      }
      if (!existsSync(join(dir, s))) {
        const n = Object.values(weightMap).filter((v) => v === s).length;
        problems.push({
          problem: `shard ${s} is missing: ${INDEX_FILE} places ${n} tensor${n === 1 ? "" : "s"} in it`,
        });
        continue;
      }
      shards.push(s);
    }
    const named = new Set(Object.values(weightMap));
    for (const f of readdirSync(dir).sort())
      if (f.endsWith(".safetensors") && !named.has(f))
        problems.push({
          problem: `shard ${f} is missing from ${INDEX_FILE}: none of its tensors are in "weight_map", so loaders never read it`,
        });
    if (!Object.keys(weightMap).length)
      problems.push({ problem: `${INDEX_FILE}: "weight_map" lists no tensors` });
    return { shards: shards.sort(), weightMap };
  }
  if (existsSync(join(dir, SINGLE_FILE))) return { shards: [SINGLE_FILE] };
  const shards = readdirSync(dir)
    .filter((n) => n.endsWith(".safetensors"))
    .sort();
  if (!shards.length) problems.push({ problem: `${dir}: no .safetensors files` });
  return { shards };
}

export function verifyCheckpoint(dir: string, opts: VerifyOptions = {}): VerifyReport {
  if (!existsSync(dir)) throw new GptqError(`${dir}: no such directory`);
  if (!statSync(dir).isDirectory())
    throw new GptqError(`${dir}: not a directory (expected a checkpoint directory)`);
  const problems: VerifyProblem[] = [];
  const { shards, weightMap } = shardList(dir, problems);

  // every shard's header, then which file holds each tensor
  const files: SafetensorsFile[] = [];
  try {
    for (const s of shards)
      try {
        files.push(SafetensorsFile.open(join(dir, s)));
      } catch (e) {
        problems.push({ problem: message(e) });
      }
    const owner = new Map<string, SafetensorsFile>();
    for (const f of files)
      for (const name of f.names()) {
        const prev = owner.get(name);
        if (prev)
          problems.push({
            tensor: name,
            problem: `stored in both ${basename(prev.path)} and ${basename(f.path)}`,
          });
        else owner.set(name, f);
      }
    if (weightMap) {
      const opened = new Set(files.map((f) => basename(f.path)));
      for (const [name, shard] of Object.entries(weightMap)) {
        if (typeof shard !== "string" || !opened.has(shard)) continue; // reported with its shard
        const f = owner.get(name);
        if (!f)
          problems.push({
            tensor: name,
            problem: `${INDEX_FILE} places it in ${shard}, which does not store it`,
          });
        else if (basename(f.path) !== shard)
          problems.push({
            tensor: name,
            problem: `${INDEX_FILE} places it in ${shard}, but it is stored in ${basename(f.path)}`,
          });
      }
      for (const name of owner.keys())
        if (!(name in weightMap))
          problems.push({
            tensor: name,
            problem: `stored in ${basename(owner.get(name)!.path)} but missing from ${INDEX_FILE}'s weight_map`,
          });
    }
    const structural = problems.length > 0;

    const names = [...owner.keys()];
    const total = names.reduce((s, n) => s + (owner.get(n)!.info(n).end - owner.get(n)!.info(n).start), 0);
    let done = 0;
    const progress = (bytes: number, what: string) => {
      done += bytes;
      opts.onProgress?.(done, total, what);
    };
    const read = (name: string): Tensor => owner.get(name)!.read(name);

    // every float tensor finite, a piece at a time, on several threads
    const nonFinite = new Set<string>();
    const source = {
      info: (n: string) => owner.get(n)!.info(n),
      readChunks: (n: string, bytes?: number) => owner.get(n)!.readChunks(n, bytes),
      pathOf: (n: string) => owner.get(n)!.path,
    };
    let checked = 0;
    const scanned = scanNonFinite(source, names, (n) => n, {
      onBytes: (d) => {
        progress(d - checked, "finite values");
        checked = d;
      },
    });
    names.forEach((name, i) => {
      const found = scanned[i];
      if (!found) return;
      if (!found.unreadable) nonFinite.add(name);
      problems.push({ tensor: name, problem: found.problem });
    });

    // the config, then every quantized layer unpacked through its format
    let config: QuantConfig | undefined;
    try {
      config = readQuantConfigDetailed(dir)?.config;
    } catch (e) {
      problems.push({ problem: message(e) });
    }
    let detected: ReturnType<typeof detectLayers> = { format: "fp", prefixes: [] };
    try {
      detected = detectLayers(names, dir);
    } catch (e) {
      problems.push({ problem: message(e) });
    }
    const infos: QuantizedLayerInfo[] = [];
    if (detected.format !== "fp") {
      const format = detected.format;
      const readAs: CheckpointFormat =
        config && FORMATS[config.checkpointFormat].detectedAs === format ? config.checkpointFormat : format;
      const traits = FORMATS[readAs];
      for (const p of detected.prefixes) {
        const info = verifyLayer(p, traits, owner, read, config, nonFinite, problems);
        if (info) infos.push(info);
        const layerBytes = [...traits.suffixes, ...traits.optionalSuffixes]
          .map((s) => `${p}.${s}`)
          .filter((n) => owner.has(n) && !FLOAT_TENSOR_DTYPES.includes(owner.get(n)!.info(n).dtype))
          .reduce((s, n) => s + owner.get(n)!.info(n).end - owner.get(n)!.info(n).start, 0);
        progress(layerBytes, p);
      }
    }
    // a tensor of a quantized layer (its scales, its bias) names the layer too
    const layerOf = new Map<string, string>();
    for (const p of detected.prefixes) for (const n of names) if (n.startsWith(`${p}.`)) layerOf.set(n, p);
    for (const p of problems)
      if (p.tensor && !p.layer && layerOf.has(p.tensor)) p.layer = layerOf.get(p.tensor);
    // the config against the tensors, as every command checks it on open (needs a sound store)
    if (!structural && infos.length === detected.prefixes.length) {
      const store = TensorStore.open(dir);
      try {
        verifyConfig(
          dir,
          store,
          config,
          infos.sort((a, b) => a.name.localeCompare(b.name, "en", { numeric: true })),
        );
      } catch (e) {
        problems.push({ problem: message(e) });
      } finally {
        store.close();
      }
    }
    return { ok: problems.length === 0, tensors: names.length, shards: files.length, problems };
  } finally {
    for (const f of files) f.close();
  }
}

/** One quantized layer: inspected, grouped, unpacked; its g_idx group sizes checked. */
function verifyLayer(
  p: string,
  traits: (typeof FORMATS)[CheckpointFormat],
  owner: Map<string, SafetensorsFile>,
  read: (name: string) => Tensor,
  config: QuantConfig | undefined,
  nonFinite: Set<string>,
  problems: VerifyProblem[],
): QuantizedLayerInfo | undefined {
  const strip = (m: string) => (m.startsWith(`layer ${p}: `) ? m.slice(`layer ${p}: `.length) : m);
  const fail = (e: unknown) => {
    problems.push({ layer: p, problem: strip(message(e)) });
    return undefined;
  };
  const header: HeaderLookup = (suffix) => {
    const f = owner.get(`${p}.${suffix}`);
    return f?.info(`${p}.${suffix}`);
  };
  const int32s = (suffix: string) => toInt32(read(`${p}.${suffix}`));
  let info: QuantizedLayerInfo;
  try {
    const dims = traits.inspect(p, header);
    const { groupSize, actOrder } = traits.grouping(p, dims, header, int32s);
    info = {
      name: p,
      ...dims,
      groupSize,
      actOrder,
      format: traits.detectedAs,
      hasBias: owner.has(`${p}.bias`),
    };
  } catch (e) {
    return fail(e);
  }
  const groupSize = config?.groupSize ?? info.groupSize;
  try {
    traits.read((suffix) => (owner.has(`${p}.${suffix}`) ? read(`${p}.${suffix}`) : undefined), {
      inFeatures: info.inFeatures,
      outFeatures: info.outFeatures,
      bits: info.bits,
      groupSize,
    });
  } catch (e) {
    // a non-finite scale is reported once, with its tensor
    const ours = [...traits.suffixes, ...traits.optionalSuffixes].some((s) => nonFinite.has(`${p}.${s}`));
    if (!(ours && /non-finite/.test(message(e)))) fail(e);
    return info;
  }
  // act-order permutes rows among groups but keeps each group's size: groupSize rows, the last the rest
  if (traits.groupIndex && owner.has(`${p}.${traits.groupIndex}`)) {
    const gIdx = int32s(traits.groupIndex);
    const G = numGroups(info.inFeatures, groupSize);
    const counts = new Int32Array(G);
    for (const g of gIdx) counts[g]++;
    const size = groupSize === -1 ? info.inFeatures : groupSize;
    for (let g = 0; g < G; g++) {
      const want = Math.min(size, info.inFeatures - g * size);
      if (counts[g] !== want) {
        fail(
          new GptqError(
            `${traits.groupIndex} puts ${counts[g]} rows in group ${g}, expected ${want} (group size ${groupSize}, in_features ${info.inFeatures}); the group map is corrupt: re-quantize or re-download it`,
          ),
        );
        break;
      }
    }
  }
  return info;
}
