/**
 * The one question `check` and our dispatch ask: can kernel K run this layer (on this GPU)? A layer is
 * a query (shape and scheme, what `check` knows from headers) or the unpacked layer itself, whose zero
 * points and g_idx some kernels need to see; the device is optional (`check` plans for any GPU).
 */
import { QuantizedLinear } from "../formats/types.js";
import { DeviceCapability, KernelQuery, KernelRule, KernelVerdict } from "./types.js";

export function isUnpackedLayer(layer: QuantizedLinear | KernelQuery): layer is QuantizedLinear {
  return "codes" in layer;
}

/**
 * An unpacked layer's query: symmetric when every zero point is 2^(bits−1), act-order when g_idx is
 * not k // group.
 */
export function layerQuery(layer: QuantizedLinear): KernelQuery {
  const half = 1 << (layer.bits - 1);
  let sym = true;
  for (let i = 0; i < layer.zeros.length && sym; i++) sym = layer.zeros[i] === half;
  const gs = layer.groupSize === -1 ? layer.inFeatures : layer.groupSize;
  let actOrder = false;
  for (let k = 0; k < layer.inFeatures && !actOrder; k++) actOrder = layer.gIdx[k] !== Math.floor(k / gs);
  return {
    inFeatures: layer.inFeatures,
    outFeatures: layer.outFeatures,
    bits: layer.bits,
    groupSize: layer.groupSize,
    sym,
    actOrder,
  };
}

/** The GPU's capability from the architecture name the driver reports ("sm_90a" -> 90). */
export function deviceCapability(arch: string): DeviceCapability {
  return { sm: Number(/sm_(\d+)/.exec(arch)?.[1] ?? 0), arch };
}

/**
 * Whether `rule` runs `layer`: its shape and scheme rules first, then the GPU's (when a device is
 * given), then the layer's own data (when the layer is unpacked). The first failing verdict, else ok.
 */
export function canRun(
  rule: KernelRule,
  layer: QuantizedLinear | KernelQuery,
  device?: DeviceCapability,
): KernelVerdict {
  const unpacked = isUnpackedLayer(layer);
  const v = rule.supports(unpacked ? layerQuery(layer) : layer);
  if (!v.ok) return v;
  if (device && rule.supportsDevice) {
    const d = rule.supportsDevice(device);
    if (!d.ok) return d;
  }
  if (unpacked && rule.supportsLayer) return rule.supportsLayer(layer);
  return v;
}
