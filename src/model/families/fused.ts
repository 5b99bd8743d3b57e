/**
 * How `gptq split` and `gptq merge` read the family table: the parts a fused projection splits into, and
 * the fused projection that parts merge into, when the user names only one side.
 */
import { GptqError } from "../../util/errors.js";
import { familyOf } from "./index.js";
import { ModelConfig } from "./types.js";

/** the prefix of layer `layer` up to (without) `module`, when `layer` ends with it inside the decoder */
function layerPrefixOf(c: ModelConfig, layer: string, module: string): string | undefined {
  const f = familyOf(c);
  if (!layer.startsWith(`${f.tensors.layers}.`) || !layer.endsWith(`.${module}`)) return undefined;
  return layer.slice(0, -module.length - 1);
}

/**
 * The separate projections a fused one splits into (tensor prefixes and out_features), by the family
 * table; undefined when `layer` is not a fused projection of the model's family.
 */
export function fusedParts(c: ModelConfig, layer: string): { names: string[]; sizes: number[] } | undefined {
  const family = familyOf(c);
  for (const f of family.fused) {
    const prefix = layerPrefixOf(c, layer, f.module);
    if (prefix === undefined) continue;
    const segments = f.segments(c);
    const parts = f.parts.map((role) => family.linears.find((l) => l.role === role));
    if (segments.length !== f.parts.length || parts.some((p) => !p))
      throw new GptqError(
        `${layer}: ${c.modelType} stores ${f.module} only${segments.length !== f.parts.length ? " and its rows interleave q, k and v" : ""}; give --sizes and --names to split it`,
      );
    return { names: parts.map((p) => `${prefix}.${p!.module}`), sizes: segments.map((s) => s.count) };
  }
  return undefined;
}

/** The fused projection that `layers` (in this order) are the parts of, by the family table. */
export function fusedNameOf(c: ModelConfig, layers: readonly string[]): string | undefined {
  const family = familyOf(c);
  for (const f of family.fused) {
    const parts = f.parts.map((role) => family.linears.find((l) => l.role === role));
    if (parts.some((p) => !p) || parts.length !== layers.length) continue;
    const prefix = layerPrefixOf(c, layers[0], parts[0]!.module);
    if (prefix !== undefined && parts.every((p, i) => layers[i] === `${prefix}.${p!.module}`))
      return `${prefix}.${f.module}`;
  }
  return undefined;
}
