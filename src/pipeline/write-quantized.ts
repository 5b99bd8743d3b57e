/**
 * Writes a quantized checkpoint: the source checkpoint's tensors with every quantized projection's
 * `<prefix>.weight` replaced by the chosen format's tensors, MLP tensors padded when the intermediate was
 * padded, config.json with the quantization config (and the new intermediate_size), every other file
 * copied. Built in a temporary directory and renamed into place.
 */
import { copyFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { buildDirAtomic, writeTextAtomic } from "../io/atomic.js";
import { tensorFileBytes } from "../io/output.js";
import { QuantConfig, writeQuantConfig } from "../io/quant-config.js";
import { TensorEntry } from "../io/safetensors.js";
import { TensorStore, writeCheckpointTensors } from "../io/store.js";
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
 * fails before the rest is quantized.
 */
export class PackedLayers {
  private readonly packed = new Map<string, { tensors: LayerTensor[]; groups: number; shape: LayerShape }>();
  private zeroOfZero?: string;

  constructor(private readonly choice: FormatChoice) {}

  add(prefix: string, layer: QuantizedLinear): void {
    const format = this.choice === "auto" ? "gptq_v2" : this.choice;
    if (this.choice === "auto") {
      if (this.zeroOfZero === undefined && layer.zeros.includes(0)) this.zeroOfZero = prefix;
    } else chooseFormat(this.choice, new Map([[prefix, layer]]));
    const { inFeatures, outFeatures, bits, groupSize } = layer;
    this.packed.set(prefix, {
      tensors: FORMATS[format].write(layer),
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

  /** A layer's tensors in the chosen format, handed over once (v2-packed qzeros shifted for v1). */
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

export interface WriteRequest {
  sourceDir: string;
  outDir: string;
  /** quantized layers by tensor prefix, packed in the format they are written in; emptied as they are */
  layers: PackedLayers;
  quantConfig: QuantConfig;
  /** the MLP padding applied before quantizing, if any */
  pad?: PadPlan;
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

/**
 * Bytes `writeQuantizedCheckpoint` will write for layers of these shapes (by tensor prefix), known
 * before quantizing: the format's tensors for each of them, every other tensor (padded), the carried
 * files and the config files.
 */
export function quantizedCheckpointBytes(
  sourceDir: string,
  layers: ReadonlyMap<string, LayerShape>,
  format: CheckpointFormat,
  pad?: PadPlan,
): number {
  const config = readModelConfig(sourceDir);
  const from = pad?.from ?? config.intermediateSize;
  const to = pad?.to ?? config.intermediateSize;
  const store = TensorStore.open(sourceDir);
  try {
    const tensors: { name: string; dtype: TensorEntry["dtype"]; shape: number[] }[] = [];
    for (const name of store.names()) {
      const prefix = name.endsWith(".weight") ? name.slice(0, -".weight".length) : undefined;
      const shape = prefix !== undefined ? layers.get(prefix) : undefined;
      if (prefix !== undefined && shape) {
        for (const t of FORMATS[format].layout(shape)) tensors.push({ ...t, name: `${prefix}.${t.suffix}` });
        continue;
      }
      const info = store.info(name);
      tensors.push({
        name,
        dtype: info.dtype,
        shape: paddedMlpShape(name, info.shape, from, to) ?? info.shape,
      });
    }
    const carried = carriedFiles(sourceDir).reduce((s, f) => s + statSync(join(sourceDir, f)).size, 0);
    const configs = statSync(join(sourceDir, "config.json")).size + 8192; // plus the quantization config
    return tensorFileBytes(tensors) + carried + configs;
  } finally {
    store.close();
  }
}

export async function writeQuantizedCheckpoint(req: WriteRequest): Promise<{ files: string[] }> {
  const { layers } = req;
  const config = readModelConfig(req.sourceDir);
  const from = req.pad?.from ?? config.intermediateSize;
  const to = req.pad?.to ?? config.intermediateSize;
  const store = TensorStore.open(req.sourceDir);
  try {
    const entries: TensorEntry[] = [];
    for (const name of store.names()) {
      const prefix = name.endsWith(".weight") ? name.slice(0, -".weight".length) : undefined;
      const packed = prefix !== undefined ? layers.take(prefix) : undefined;
      if (prefix !== undefined && packed) {
        for (const t of packed)
          entries.push({ name: `${prefix}.${t.suffix}`, dtype: t.dtype, shape: t.shape, data: t.data });
        continue;
      }
      const info = store.info(name);
      entries.push({
        name,
        dtype: info.dtype,
        shape: paddedMlpShape(name, info.shape, from, to) ?? info.shape,
        data: () => padMlpTensor(name, store.read(name), from, to).data,
      });
    }
    if (layers.size)
      throw new GptqError(
        `quantized layer ${layers.prefixes()[0]} has no ${layers.prefixes()[0]}.weight in ${req.sourceDir}`,
      );
    let files: string[] = [];
    await buildDirAtomic(req.outDir, (tmp) => {
      for (const f of carriedFiles(req.sourceDir)) copyFileSync(join(req.sourceDir, f), join(tmp, f));
      files = writeCheckpointTensors(tmp, entries, { metadata: store.metadata() });
      const raw: Record<string, unknown> = {
        ...config.raw,
        ...(to !== from ? { intermediate_size: to } : {}),
      };
      delete raw.quantization_config;
      writeTextAtomic(join(tmp, "config.json"), JSON.stringify(raw, null, 2) + "\n");
      writeQuantConfig(tmp, req.quantConfig);
    });
    return { files };
  } finally {
    store.close();
  }
}
