/**
 * Tensor parallelism as vLLM and Megatron shard linears: column-parallel layers split out_features,
 * row-parallel layers (the projections back to the hidden size) split in_features.
 */

/** Last name components of row-parallel linears across Llama, Falcon, GPT-NeoX, GPT-2, OPT, T5, Mixtral, ... */
const ROW_PARALLEL = new Set([
  "o_proj",
  "down_proj",
  "dense",
  "dense_4h_to_h",
  "out_proj",
  "wo",
  "w2",
  "c_proj",
  "fc2",
]);

export function isRowParallel(layerName: string): boolean {
  const last = layerName.split(".").pop() ?? layerName;
  return ROW_PARALLEL.has(last);
}

export interface Shard {
  inFeatures: number;
  outFeatures: number;
  kSplitAcrossRanks: boolean;
  tpRanks: number;
  /** set when the split dimension does not divide evenly: no kernel can run the layer then */
  problem?: { reason: string; fix: string; pad: { side: "in" | "out"; to: number } };
}

/** One rank's shape of a layer split over `tp` ranks; `row` (split in_features) defaults to the name's guess. */
export function shardShape(
  name: string,
  inFeatures: number,
  outFeatures: number,
  tp: number,
  row = isRowParallel(name),
): Shard {
  if (tp === 1) return { inFeatures, outFeatures, kSplitAcrossRanks: false, tpRanks: 1 };
  const dim = row ? "in" : "out";
  const size = row ? inFeatures : outFeatures;
  const shard: Shard = row
    ? { inFeatures: Math.floor(inFeatures / tp), outFeatures, kSplitAcrossRanks: true, tpRanks: tp }
    : { inFeatures, outFeatures: Math.floor(outFeatures / tp), kSplitAcrossRanks: false, tpRanks: tp };
  if (size % tp !== 0)
    shard.problem = {
      reason: `${dim}_features ${size} cannot be split evenly across ${tp} tensor-parallel ranks`,
      fix: `pad ${dim}_features to ${Math.ceil(size / tp) * tp}`,
      pad: { side: dim, to: Math.ceil(size / tp) * tp },
    };
  return shard;
}
