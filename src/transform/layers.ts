/** Reading the quantized layers of an open checkpoint through the format registry. */
import { Checkpoint, QuantizedLayerInfo } from "../io/checkpoint.js";
import { TensorStore } from "../io/store.js";
import { firstWeightDifference } from "../formats/dequantize.js";
import { LayerShape } from "../formats/gptq.js";
import { FORMATS } from "../formats/registry.js";
import { CheckpointFormat, QuantizedLinear } from "../formats/types.js";
import { GptqError } from "../util/errors.js";
import { Tensor } from "../tensor/tensor.js";

export function layerShape(ckpt: Checkpoint, layer: QuantizedLayerInfo): LayerShape {
  return {
    inFeatures: layer.inFeatures,
    outFeatures: layer.outFeatures,
    bits: layer.bits,
    groupSize: ckpt.config?.groupSize ?? layer.groupSize,
  };
}

export function tensorsOf(store: TensorStore, prefix: string): (suffix: string) => Tensor | undefined {
  return (suffix) => (store.has(`${prefix}.${suffix}`) ? store.read(`${prefix}.${suffix}`) : undefined);
}

/** One layer unpacked, read through its format's traits (bias not included). */
export function readLayer(
  store: TensorStore,
  format: CheckpointFormat,
  name: string,
  shape: LayerShape,
): QuantizedLinear {
  try {
    return FORMATS[format].read(tensorsOf(store, name), shape);
  } catch (e) {
    if (e instanceof GptqError) throw new GptqError(`layer ${name}: ${e.message}`);
    throw e;
  }
}

/** The source tensor names a layer occupies in its format (including auxiliary buffers). */
export function layerTensorNames(store: TensorStore, format: CheckpointFormat, name: string): string[] {
  const t = FORMATS[format];
  return [...t.suffixes, ...t.optionalSuffixes, ...t.auxiliarySuffixes]
    .map((s) => `${name}.${s}`)
    .filter((n) => store.has(n));
}

/** Throws unless the two layers dequantize to the same weights, bit for bit. */
export function assertSameWeights(a: QuantizedLinear, b: QuantizedLinear, what: string): void {
  const d = firstWeightDifference(a, b);
  if (!d) return;
  if ("shape" in d) throw new GptqError(`verification failed: ${what}: shapes differ (${d.shape})`);
  throw new GptqError(
    `verification failed: ${what}: weight [${d.out}, ${d.in}] is ${d.b}, the source's is ${d.a}`,
  );
}
