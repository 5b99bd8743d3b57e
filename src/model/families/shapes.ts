/** The shape of each projection role, from the normalised config: the same for every family. */
import { FusedSpec, ModelConfig, Role, Segment } from "./types.js";

/** [out_features, in_features] of a projection with this role; `intermediate` overrides the MLP width (padding). */
export function roleShape(c: ModelConfig, role: Role, intermediate = c.intermediateSize): [number, number] {
  const D = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  switch (role) {
    case "q":
      return [q, D];
    case "k":
    case "v":
      return [kv, D];
    case "o":
      return [D, q];
    case "gate":
    case "up":
      return [intermediate, D];
    case "down":
      return [D, intermediate];
  }
}

/** A fused projection whose parts are concatenated along out_features in this order (Phi-3, `gptq merge`). */
export function concatenated(name: string, module: string, parts: readonly Role[]): FusedSpec {
  return {
    name,
    module,
    parts,
    segments: (c: ModelConfig): Segment[] =>
      parts.map((part) => ({ part, from: 0, count: roleShape(c, part)[0] })),
  };
}

/** [out_features, in_features] of a fused projection: its parts' rows stacked. */
export function fusedShape(
  c: ModelConfig,
  f: FusedSpec,
  intermediate = c.intermediateSize,
): [number, number] {
  const rows = f.parts.reduce((n, p) => n + roleShape(c, p, intermediate)[0], 0);
  return [rows, roleShape(c, f.parts[0], intermediate)[1]];
}
