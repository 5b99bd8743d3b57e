/**
 * Writes a quantized checkpoint: the source checkpoint's tensors with every quantized projection's
 * `<prefix>.weight` replaced by the chosen format's tensors, MLP tensors padded when the intermediate was
 * padded, config.json with the quantization config (and the new intermediate_size), every other file
 * copied. Built in a temporary directory and renamed into place.
 */
import { copyFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { writeTextAtomic } from "../io/atomic.js";
import { tensorFileBytes } from "../io/output.js";
import { QuantConfig, writeQuantConfig } from "../io/quant-config.js";
import { TensorSpec } from "../io/safetensors.js";
import { StreamingCheckpointWriter, TensorStore } from "../io/store.js";
import { FORMATS, LayerTensor } from "../formats/registry.js";
import { LayerShape, qzerosV2ToV1 } from "../formats/gptq.js";
import { Bits, CheckpointFormat, QuantizedLinear } from "../formats/types.js";
import { readModelConfig } from "../model/config.js";
import { PadPlan } from "../model/pad-plan.js";
import { padMlpTensor, paddedMlpShape } from "../transform/pad.js";
import { GptqError } from "../util/errors.js";

/** "auto": GPTQ v1 (what most loaders expect) unless a zero point of 0 needs v2. */
export type FormatChoice = CheckpointFormat | "auto";

/**
 * The format to write: `auto` picks gptq (v1) unless some layer has an asymmetric zero point of 0, which
 * v1 cannot store (it keeps zero - 1), and then gptq_v2. Explicit formats are checked layer by layer.
 */
export function chooseFormat(
  choice: FormatChoice,
  layers: ReadonlyMap<string, QuantizedLinear>,
): { format: CheckpointFormat; why?: string } {
  if (choice === "auto") {
    for (const [name, l] of layers)
      if (l.zeros.includes(0))
        return {
          format: "gptq_v2",
          why: `${name} has zero points of 0, which GPTQ v1 cannot store; wrote gptq_v2`,
        };
    return { format: "gptq" };
  }
  const traits = FORMATS[choice];
  for (const [name, l] of layers) {
    const p = traits.layerProblem(l);
    if (p)
      throw new GptqError(
        `cannot write ${name} as ${choice}: ${p}${choice === "gptq" && /zero point of 0/.test(p) ? "; pass --format gptq_v2, or leave --format out to have it chosen when needed" : ""}`,
      );
  }
  return { format: choice };
}

/**
 * Quantized layers packed as the pipeline hands them over, so the codes (a byte each) are dropped layer by
 * layer: `auto` packs as GPTQ v2 (the packing v1 shares but for qzeros) and keeps only whether a zero point
 * of 0 was seen; an explicit format checks and packs each layer in it at once, so a layer it cannot hold
 * fails before the rest is quantized. With a `sink`, every packed tensor goes to it at once but `auto`'s
 * qzeros, which wait (a few kB a layer) until the format is known.
 */
export class PackedLayers {
  private readonly packed = new Map<string, { tensors: LayerTensor[]; groups: number; shape: LayerShape }>();
  private zeroOfZero?: string;

  constructor(
    private readonly choice: FormatChoice,
    private readonly sink?: (name: string, t: LayerTensor) => void,
  ) {}

  add(prefix: string, layer: QuantizedLinear): void {
    const format = this.choice === "auto" ? "gptq_v2" : this.choice;
    if (this.choice === "auto") {
      if (this.zeroOfZero === undefined && layer.zeros.includes(0)) this.zeroOfZero = prefix;
    } else chooseFormat(this.choice, new Map([[prefix, layer]]));
    const { inFeatures, outFeatures, bits, groupSize } = layer;
    let tensors = FORMATS[format].write(layer);
    if (this.sink) {
      const waits = (t: LayerTensor) => this.choice === "auto" && t.suffix === "qzeros";
      for (const t of tensors) if (!waits(t)) this.sink(`${prefix}.${t.suffix}`, t);
      tensors = tensors.filter(waits);
    }
    this.packed.set(prefix, {
      tensors,
      groups: layer.scales.length / outFeatures,
      shape: { inFeatures, outFeatures, bits, groupSize },
    });
  }

  /** The format written: as `chooseFormat` decides it. */
  format(): { format: CheckpointFormat; why?: string } {
    if (this.choice !== "auto") return { format: this.choice };
    if (this.zeroOfZero !== undefined)
      return {
        format: "gptq_v2",
        why: `${this.zeroOfZero} has zero points of 0, which GPTQ v1 cannot store; wrote gptq_v2`,
      };
    return { format: "gptq" };
  }

  get size(): number {
    return this.packed.size;
  }

  prefixes(): string[] {
    return [...this.packed.keys()];
  }

  /** A layer's tensors not yet given to the sink, in the chosen format, handed over once (v2-packed qzeros shifted for v1). */
  take(prefix: string): LayerTensor[] | undefined {
    const p = this.packed.get(prefix);
    if (!p) return undefined;
    this.packed.delete(prefix);
    if (this.choice !== "auto" || this.format().format !== "gptq") return p.tensors;
    return p.tensors.map((t) =>
      t.suffix === "qzeros"
        ? {
            ...t,
            data: qzerosV2ToV1(t.data as Int32Array, p.groups, p.shape.outFeatures, p.shape.bits as Bits),
          }
        : t,
    );
  }
}

/** Files of the source carried over as they are (tensors and config files are written anew). */
function carriedFiles(sourceDir: string): string[] {
  return readdirSync(sourceDir).filter((f) => {
    if (f === "config.json" || f.endsWith(".safetensors") || f.endsWith(".safetensors.index.json"))
      return false;
    if (f === "quantize_config.json" || f === "quant_config.json") return false;
    return statSync(join(sourceDir, f)).isFile();
  });
}

/** A tensor of the quantized checkpoint: one of a quantized layer's (`layer` its prefix), or the source's. */
type PlannedTensor = TensorSpec & { layer?: string };

/**
 * Every tensor of the quantized checkpoint, in the source's order: the format's tensors for each layer
 * of `layers` (by prefix), every other tensor of the source (its MLP ones padded from `from` to `to`).
 */
function plannedTensors(
  store: TensorStore,
  layers: ReadonlyMap<string, LayerShape>,
  format: CheckpointFormat,
  from: number,
  to: number,
): PlannedTensor[] {
  const tensors: PlannedTensor[] = [];
  for (const name of store.names()) {
    const prefix = name.endsWith(".weight") ? name.slice(0, -".weight".length) : undefined;
    const shape = prefix !== undefined ? layers.get(prefix) : undefined;
    if (prefix !== undefined && shape) {
      for (const t of FORMATS[format].layout(shape))
        tensors.push({ name: `${prefix}.${t.suffix}`, dtype: t.dtype, shape: t.shape, layer: prefix });
      continue;
    }
    const info = store.info(name);
    tensors.push({
      name,
      dtype: info.dtype,
      shape: paddedMlpShape(name, info.shape, from, to) ?? info.shape,
    });
  }
  return tensors;
}

/**
 * Bytes a quantized checkpoint of these layers (shapes by tensor prefix) takes, known before quantizing:
 * the format's tensors for each of them, every other tensor (padded), the carried files and the configs.
 */
export function quantizedCheckpointBytes(
  sourceDir: string,
  layers: ReadonlyMap<string, LayerShape>,
  format: CheckpointFormat,
  pad?: PadPlan,
): number {
  const config = readModelConfig(sourceDir);
  const store = TensorStore.open(sourceDir);
  try {
    const tensors = plannedTensors(
      store,
      layers,
      format,
      pad?.from ?? config.intermediateSize,
      pad?.to ?? config.intermediateSize,
    );
    const carried = carriedFiles(sourceDir).reduce((s, f) => s + statSync(join(sourceDir, f)).size, 0);
    const configs = statSync(join(sourceDir, "config.json")).size + 8192; // plus the quantization config
    return tensorFileBytes(tensors) + carried + configs;
  } finally {
    store.close();
  }
}

/**
 * A quantized checkpoint written into `dir` (a directory renamed into place when done: see
 * buildDirAtomic) while the layers are quantized: `layers` takes each one as the pipeline hands it over
 * and its tensors go to their place in the shards at once, so neither codes nor packed layers pile up in
 * memory. `finish` writes the rest: the source's other tensors (MLP ones padded), the zero points `auto`
 * held back, config.json with the quantization config, and the source's other files.
 */
export class QuantizedCheckpointWriter {
  readonly layers: PackedLayers;
  private readonly store: TensorStore;
  private readonly planned: PlannedTensor[];
  private readonly writer: StreamingCheckpointWriter;
  private readonly from: number;
  private readonly to: number;

  constructor(
    private readonly dir: string,
    private readonly sourceDir: string,
    /** the shapes of the layers to be quantized, by tensor prefix */
    shapes: ReadonlyMap<string, LayerShape>,
    choice: FormatChoice,
    pad?: PadPlan,
  ) {
    const config = readModelConfig(sourceDir);
    this.from = pad?.from ?? config.intermediateSize;
    this.to = pad?.to ?? config.intermediateSize;
    this.store = TensorStore.open(sourceDir);
    try {
      // GPTQ v1 and v2 store the same tensors: `auto` plans as v2 and decides at the end
      const packing = choice === "auto" ? "gptq_v2" : choice;
      this.planned = plannedTensors(this.store, shapes, packing, this.from, this.to);
      this.writer = new StreamingCheckpointWriter(dir, this.planned, { metadata: this.store.metadata() });
    } catch (e) {
      this.store.close();
      throw e;
    }
    this.layers = new PackedLayers(choice, (name, t) => this.writer.write(name, t.data));
  }

  /** Writes what is left and the configs; the shard files. */
  finish(quantConfig: QuantConfig): string[] {
    const { store, from, to } = this;
    for (const t of this.planned)
      if (t.layer === undefined)
        this.writer.write(t.name, padMlpTensor(t.name, store.read(t.name), from, to).data);
    for (const prefix of this.layers.prefixes())
      for (const t of this.layers.take(prefix)!) this.writer.write(`${prefix}.${t.suffix}`, t.data);
    const files = this.writer.finish();
    for (const f of carriedFiles(this.sourceDir)) copyFileSync(join(this.sourceDir, f), join(this.dir, f));
    const config = readModelConfig(this.sourceDir);
    const raw: Record<string, unknown> = { ...config.raw, ...(to !== from ? { intermediate_size: to } : {}) };
    delete raw.quantization_config;
    writeTextAtomic(join(this.dir, "config.json"), JSON.stringify(raw, null, 2) + "\n");
    writeQuantConfig(this.dir, quantConfig);
    return files;
  }

  close(): void {
    this.writer.close();
    this.store.close();
  }
}
