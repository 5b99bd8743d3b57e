/**
 * What a format can tell about a stored layer from its tensors' headers (dtype and shape, no data):
 * which prefixes it stores, and each layer's shape, bits and groups. Every message names the layer,
 * the tensor and what was expected.
 */
import { DType } from "../tensor/dtype.js";
import { GptqError } from "../util/errors.js";
import { Bits } from "./types.js";

/** A tensor's header: all that inspection looks at. */
export interface TensorHeader {
  dtype: DType;
  shape: readonly number[];
}

/** The header of `<prefix>.<suffix>` for one layer, undefined when that tensor is not stored. */
export type HeaderLookup = (suffix: string) => TensorHeader | undefined;

/** A stored layer's shape, bits and group count, as its headers give them. */
export interface LayerDims {
  inFeatures: number; // K
  outFeatures: number; // N
  bits: Bits;
  groups: number; // G
}

/** Group size and act-order, which a stored group index (g_idx) decides when a layer has one. */
export interface LayerGrouping {
  /** group size the tensors imply (-1 when one group spans K) */
  groupSize: number;
  /** the group index is not k // group */
  actOrder: boolean;
}

export const FLOAT_DTYPES: readonly DType[] = ["F16", "BF16", "F32"];

/**
 * The layer prefixes among `names` that store every marker suffix (`<prefix>.<marker>`), in the order
 * of their first marker's name.
 */
export function markedPrefixes(names: readonly string[], marker: readonly string[]): string[] {
  const first = `.${marker[0]}`;
  const all = new Set(names);
  return names
    .filter((n) => n.endsWith(first))
    .map((n) => n.slice(0, -first.length))
    .filter((p) => marker.every((m) => all.has(`${p}.${m}`)));
}

/** The [rows, columns] of a stored 2-D tensor of one of `dtypes`, or an error naming the layer. */
export function matrixHeader(
  header: HeaderLookup,
  prefix: string,
  suffix: string,
  dtypes: readonly DType[],
): [number, number] {
  const name = `${prefix}.${suffix}`;
  const t = header(suffix);
  if (!t) throw new GptqError(`layer ${prefix}: ${name} is missing`);
  if (!dtypes.includes(t.dtype) || t.shape.length !== 2)
    throw new GptqError(
      `layer ${prefix}: ${name} is ${t.dtype}${JSON.stringify(t.shape)}, expected a 2-D ${dtypes.join("/")} tensor`,
    );
  return [t.shape[0], t.shape[1]];
}
