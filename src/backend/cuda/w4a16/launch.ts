/**
 * Launch geometry of a W4A16 block shape for one product: the grid, and how many k-splits share a tile
 * (the split model). Its constants are tuning data (tuning.ts `SplitModel`), fitted per device class.
 */
import { W4A16Config, blockThreads, maxCluster, sharedBytes, tilesPerBlock } from "./configs.js";

export interface W4A16Launch {
  grid: [number, number, number];
  block: number;
  sharedBytes: number;
  /** fp32 partial sums the k-splits need (0 when one split) */
  workspaceBytes: number;
  counters: number;
  /** 128-row chunks of K each split walks */
  chunksPerSplit: number;
  /** the split model's cost: waves x (chunks per split + a block's fixed cost), in chunks of work */
  cost: number;
  /**
   * blocks per thread block cluster along the splits: the splits of a tile then add their partial
   * sums in distributed shared memory instead of the workspace (1: no cluster)
   */
  cluster: number;
}

/**
 * The split model's constants: a block's fixed cost (start-up and its partial sums' round trip) in
 * chunks of work, and the fewest chunks a split keeps.
 */
export interface SplitModel {
  /** fixed cost of an mma.sync block */
  mmaBlock: number;
  /** of a warpgroup block: at least `wgmmaBlock`, and `wgmmaBase` + rows x `wgmmaPerRow` (its fp32 partials) */
  wgmmaBlock: number;
  wgmmaBase: number;
  wgmmaPerRow: number;
  /** fewest chunks an mma.sync split walks */
  mmaMinChunks: number;
  /** the same for 8-row blocks without k-slices at 5 rows or more, which add up more rows' partials */
  mmaMinChunks8Rows: number;
}

/**
 * Fit to `gptq bench --sweep` on an H200 (2026-12-01): 2 chunks for an mma.sync block; for a warpgroup
 * block max(11, 4 + rows / 8), so 11 up to 56 rows, 12 at 64 and 20 at 128 rows, whose 32 KB of fp32
 * partials per tile outweigh their share of the weights; mma.sync splits keep 4 chunks, 8 for 8-row
 * blocks at 5-8 rows (`bench/tune.ts`).
 */
export const DEFAULT_SPLIT_MODEL: SplitModel = {
  mmaBlock: 2,
  wgmmaBlock: 11,
  wgmmaBase: 4,
  wgmmaPerRow: 1 / 8,
  mmaMinChunks: 4,
  mmaMinChunks8Rows: 8,
};

/**
 * Grid and k-splits for an M x Kpad x N product. `blocksPerSm` is the occupancy the driver reports for
 * the kernel. Splits: the count that minimizes waves x (chunks per split + a block's fixed cost); ties
 * go to more splits, whose extra blocks hide more latency (8192x57344 at batch 1: 8 splits 2-3 % faster
 * than 5). A k-sliced block's chunks count as steps of one chunk per slice.
 */
export function geometry(
  c: W4A16Config,
  M: number,
  N: number,
  Kpad: number,
  groupSize: number,
  smCount: number,
  blocksPerSm: number,
  model: SplitModel = DEFAULT_SPLIT_MODEL,
): W4A16Launch {
  const ntiles = Math.ceil(N / 64);
  const chunks = Kpad / 128;
  const mblocks = Math.ceil(M / c.rows);
  const perBlock = tilesPerBlock(c);
  const perSplit = mblocks * Math.ceil(ntiles / perBlock);
  const slots = smCount * Math.max(1, blocksPerSm);
  const balanced = (s: number) => {
    const cps = Math.ceil(chunks / s);
    return { cps, splits: Math.ceil(chunks / cps) };
  };
  const fixed =
    c.kind === "wgmma"
      ? Math.max(model.wgmmaBlock, model.wgmmaBase + c.rows * model.wgmmaPerRow)
      : model.mmaBlock;
  // a block's k-slices walk its chunks side by side
  const steps = (cps: number) => Math.ceil(cps / (c.kind === "mma" ? (c.kslices ?? 1) : 1));
  const cost = (b: { cps: number; splits: number }) =>
    Math.ceil((perSplit * b.splits) / slots) * (steps(b.cps) + fixed);
  // shorter mma.sync splits cost more in partial sums than they gain
  const minChunks =
    c.kind === "mma"
      ? c.rows === 8 && !c.kslices && M > 4
        ? model.mmaMinChunks8Rows
        : model.mmaMinChunks
      : 1;
  let best = balanced(Math.min(chunks, c.splits || 1));
  if (!c.splits)
    for (let s = 2; s <= chunks; s++) {
      const b = balanced(s);
      if (b.cps >= minChunks && cost(b) <= cost(best)) best = b;
    }
  // fp32 partials: a tile's outputs (mma: 8-row blocks keep 16 rows' worth); a counter per warp of a tile
  const partialRows = c.kind === "mma" ? Math.max(16, c.rows) : c.rows;
  // a few splits of mma.sync blocks meet in one cluster, more in the workspace
  const cluster = best.splits > 1 && best.splits <= maxCluster(c) ? best.splits : 1;
  const viaWorkspace = best.splits > 1 && cluster === 1;
  return {
    grid: [mblocks, Math.ceil(ntiles / perBlock), best.splits],
    block: blockThreads(c),
    sharedBytes: sharedBytes(c, groupSize, M),
    workspaceBytes: viaWorkspace ? mblocks * ntiles * partialRows * 64 * 4 : 0,
    counters: viaWorkspace ? mblocks * ntiles * (c.kind === "mma" ? 1 : 4) : 0,
    chunksPerSplit: best.cps,
    cost: cost(best),
    cluster,
  };
}
