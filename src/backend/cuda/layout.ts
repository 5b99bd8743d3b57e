/**
 * The W4A16 kernel's weight layout, prepared on the CPU at load time from a QuantizedLinear (which every
 * stored format unpacks to), and the launch geometry. Pure TypeScript: covered by CPU tests.
 *
 * K is padded to Kpad, a multiple of 128 (the kernel's chunk of k), with code 8 (weight 0).
 * B: for each 64-column tile t and 16-row k-tile kt, 32 lanes x 4 words. Lane l (g = l >> 2, c = l & 3),
 * word w carries sub-tiles j0 = 2w, j1 = 2w + 1 (columns n = 64t + 8j + g) at rows k = 16kt + 2c:
 *   nibble 0, 4 = code(k, n0), code(k+1, n0)     (mma fragment b0 of j0)
 *   nibble 1, 5 = code(k+8, n0), code(k+9, n0)   (b1 of j0)
 *   nibble 2, 6 / 3, 7 = the same for n1.
 * S: for each group g and tile t, 64 halves in accumulator order: S[g][t][c][j][e] = scale(g, 64t + 8j +
 * 2c + e), so lane c of the mma output reads its 16 columns' scales as 32 contiguous bytes.
 * Columns past N are padded with code 8 and scale 0. Act-order layers are stored with rows sorted by
 * group; `perm` then says which activation column feeds sorted row k.
 */
import { QuantizedLinear, numGroups } from "../../formats/types.js";
import { floatToHalf } from "../../tensor/dtype.js";
import { GptqError } from "../../util/errors.js";
import { w4a16LayerVerdict } from "../../kernels/gptq-ts.js";

export interface W4A16Layout {
  K: number;
  /** K padded to a multiple of 128 */
  Kpad: number;
  N: number;
  /** rows per group (Kpad for one group) */
  groupSize: number;
  ntiles: number;
  B: Uint32Array;
  S: Uint16Array;
  /** activation column of each stored row, when rows were sorted (act-order); else null */
  perm: Int32Array | null;
  bias: Uint16Array | null;
}

/** Why the W4A16 kernel cannot take this layer, or null when it can (its rule: kernels/gptq-ts.ts). */
export function w4a16Unsupported(layer: QuantizedLinear): string | null {
  return w4a16LayerVerdict(layer).reason ?? null;
}

/** Rows in group order (stable argsort of g_idx): the identity without act-order. */
export function groupOrder(gIdx: Int32Array): Int32Array {
  const idx = Array.from({ length: gIdx.length }, (_, i) => i);
  idx.sort((a, b) => gIdx[a] - gIdx[b] || a - b);
  return Int32Array.from(idx);
}

export function packW4A16(layer: QuantizedLinear): W4A16Layout {
  const why = w4a16Unsupported(layer);
  if (why) throw new GptqError(`W4A16 kernel: ${why}`);
  const { inFeatures: K, outFeatures: N, codes } = layer;
  const Kpad = Math.ceil(K / 128) * 128;
  const gs = layer.groupSize === -1 ? Kpad : layer.groupSize;
  const G = numGroups(K, layer.groupSize);
  const Gpad = Math.ceil(Kpad / gs);
  const order = groupOrder(layer.gIdx);
  const identity = order.every((v, i) => v === i);
  const ntiles = Math.ceil(N / 64);
  const ktiles = Kpad / 16;
  const B = new Uint32Array(ntiles * ktiles * 128);
  const code = (k: number, n: number) => (n < N && k < K ? codes[order[k] * N + n] : 8);
  for (let t = 0; t < ntiles; t++)
    for (let kt = 0; kt < ktiles; kt++) {
      const base = (t * ktiles + kt) * 128;
      for (let l = 0; l < 32; l++) {
        const g = l >> 2;
        const k = kt * 16 + 2 * (l & 3);
        for (let w = 0; w < 4; w++) {
          const n0 = t * 64 + 16 * w + g;
          const n1 = n0 + 8;
          const v =
            code(k, n0) |
            (code(k + 8, n0) << 4) |
            (code(k, n1) << 8) |
            (code(k + 8, n1) << 12) |
            (code(k + 1, n0) << 16) |
            (code(k + 9, n0) << 20) |
            (code(k + 1, n1) << 24) |
            (code(k + 9, n1) << 28);
          B[base + l * 4 + w] = v >>> 0;
        }
      }
    }
  const S = new Uint16Array(Gpad * ntiles * 64);
  for (let g = 0; g < G; g++)
    for (let t = 0; t < ntiles; t++)
      for (let c = 0; c < 4; c++)
        for (let j = 0; j < 8; j++)
          for (let e = 0; e < 2; e++) {
            const n = t * 64 + 8 * j + 2 * c + e;
            S[(g * ntiles + t) * 64 + c * 16 + j * 2 + e] = n < N ? floatToHalf(layer.scales[g * N + n]) : 0;
          }
  let bias: Uint16Array | null = null;
  if (layer.bias) bias = Uint16Array.from(layer.bias, (v) => floatToHalf(v));
  return { K, Kpad, N, groupSize: gs, ntiles, B, S, perm: identity ? null : order, bias };
}

/** The inverse of packW4A16's weight part: codes K x N in stored (sorted) row order. */
export function unpackW4A16Codes(lay: W4A16Layout): Uint8Array {
  const { K, Kpad, N, ntiles, B } = lay;
  const ktiles = Kpad / 16;
  const out = new Uint8Array(K * N);
  for (let t = 0; t < ntiles; t++)
    for (let kt = 0; kt < ktiles; kt++)
      for (let l = 0; l < 32; l++)
        for (let w = 0; w < 4; w++) {
          const v = B[(t * ktiles + kt) * 128 + l * 4 + w];
          const n0 = t * 64 + 16 * w + (l >> 2);
          const k = kt * 16 + 2 * (l & 3);
          const put = (kk: number, n: number, nib: number) => {
            if (n < N && kk < K) out[kk * N + n] = (v >>> (4 * nib)) & 15;
          };
          put(k, n0, 0);
          put(k + 8, n0, 1);
          put(k, n0 + 8, 2);
          put(k + 8, n0 + 8, 3);
          put(k + 1, n0, 4);
          put(k + 9, n0, 5);
          put(k + 1, n0 + 8, 6);
          put(k + 9, n0 + 8, 7);
        }
  return out;
}

// ---- launch geometry ----

/**
 * A block shape compiled in w4a16.cu (kind "mma": mma.sync, one warp per 64-column tile) or
 * w4a16_wgmma.cu (kind "wgmma": warpgroup MMA, one warpgroup per tile, sm_90 only); each exists for one
 * group per chunk, g64 and g32.
 */
export interface W4A16Config {
  kind: "mma" | "wgmma";
  /** rows of M per block */
  rows: 8 | 16 | 32 | 64 | 128;
  /** warps per block on tiles (wgmma: plus one producer warp) */
  warps: 4 | 8 | 12 | 16;
  /**
   * mma: k-slices, warps per tile (default 1). A block's warps then take warps / kslices tiles, and the
   * slices of a tile walk alternate chunks and add their partials in shared memory before any split-k.
   */
  kslices?: 2 | 4;
  /**
   * mma: slots of the activation and scale ring (default 4 up to 32 rows, else 3). A deeper ring stages
   * only the rows M has.
   */
  ring?: 8;
  /** chunks (128 rows of K) in flight: in each warp's weight ring (mma), or whole stages (wgmma) */
  stages: number;
  /** k-splits; 0 or absent: chosen by `geometry` */
  splits?: number;
}

/** The shapes compiled in the kernels (W4A16_KERNEL and W4A16_WG_KERNEL lines; keep the lists equal). */
export const W4A16_CONFIGS: W4A16Config[] = [
  { kind: "mma", rows: 8, warps: 4, stages: 2 },
  { kind: "mma", rows: 8, warps: 4, stages: 3 },
  { kind: "mma", rows: 8, warps: 8, stages: 2, ring: 8 },
  { kind: "mma", rows: 8, warps: 4, kslices: 2, stages: 2 },
  { kind: "mma", rows: 8, warps: 8, kslices: 4, stages: 2 },
  { kind: "mma", rows: 16, warps: 4, stages: 2 },
  { kind: "mma", rows: 16, warps: 4, stages: 3 },
  { kind: "mma", rows: 16, warps: 8, stages: 2 },
  { kind: "mma", rows: 32, warps: 4, stages: 2 },
  { kind: "mma", rows: 32, warps: 4, stages: 3 },
  { kind: "mma", rows: 64, warps: 4, stages: 2 },
  { kind: "wgmma", rows: 16, warps: 16, stages: 8 },
  { kind: "wgmma", rows: 32, warps: 16, stages: 8 },
  { kind: "wgmma", rows: 64, warps: 16, stages: 6 },
  { kind: "wgmma", rows: 64, warps: 8, stages: 4 },
  { kind: "wgmma", rows: 128, warps: 8, stages: 5 },
  { kind: "wgmma", rows: 128, warps: 12, stages: 4 },
];

/** 64-column tiles one block covers: a warp per k-slice each (mma) or a warpgroup each (wgmma). */
export function tilesPerBlock(c: W4A16Config): number {
  return c.kind === "mma" ? c.warps / (c.kslices ?? 1) : c.warps / 4;
}

/** Threads per block: the tile warps, and for wgmma the warp that issues the copies. */
export function blockThreads(c: W4A16Config): number {
  return c.warps * 32 + (c.kind === "wgmma" ? 32 : 0);
}

/** The kernel source of a configuration, relative to this module. */
export function kernelSource(c: W4A16Config): string {
  return c.kind === "mma" ? "kernels/w4a16.cu" : "kernels/w4a16_wgmma.cu";
}

/** The scale variant for a group size: one group per 128-row chunk, or two (g64) or four (g32). */
export function scaleVariant(groupSize: number): "g" | "g64" | "g32" {
  return groupSize === 32 ? "g32" : groupSize === 64 ? "g64" : "g";
}

/**
 * "r8_w4_p2", "r8_w8_k4_p2" (k = k-slices) or "r8_w8_p2_a8" (a = activation ring slots) for mma, or
 * "wg_r64_x4_p6" (wgmma, x = warpgroups), with "_sN" for fixed k-splits.
 */
export function configName(c: W4A16Config): string {
  const shape =
    c.kind === "mma"
      ? `r${c.rows}_w${c.warps}${c.kslices ? `_k${c.kslices}` : ""}_p${c.stages}${c.ring ? `_a${c.ring}` : ""}`
      : `wg_r${c.rows}_x${c.warps / 4}_p${c.stages}`;
  return `${shape}${c.splits ? `_s${c.splits}` : ""}`;
}

/** The kernel's symbol for a shape and a layer's group size. */
export function kernelName(c: W4A16Config, groupSize: number): string {
  return `w4a16_${configName({ ...c, splits: 0 })}_${scaleVariant(groupSize)}`;
}

/** A `configName` ("r16_w4_p3", "wg_r64_x4_p6", either with "_s8"), as `gptq bench --kernel gptq-ts-w4a16:NAME` takes. */
export function parseConfig(name: string): W4A16Config {
  const m = /^(?:w4a16_)?((?:wg_)?r\d+_[wx]\d+(?:_k\d+)?_p\d+(?:_a\d+)?)(?:_s(\d+))?$/.exec(name);
  const c = m && W4A16_CONFIGS.find((x) => configName(x) === m[1]);
  if (!c)
    throw new GptqError(
      `unknown W4A16 configuration "${name}" (one of ${W4A16_CONFIGS.map(configName).join(", ")}, optionally _sN for N k-splits)`,
    );
  return m[2] ? { ...c, splits: Number(m[2]) } : { ...c };
}

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
 * Most splits one cluster reduces (mma.sync blocks of 8 rows; 2 for 16 rows, whose partials take twice
 * the registers): the first block loads every other block's partials at once. Larger clusters lost to
 * the workspace on the H200 (their blocks wait to be placed together, and their sums to be gathered).
 */
export function maxCluster(c: W4A16Config): number {
  return c.kind === "mma" ? (c.rows === 8 ? 4 : c.rows === 16 ? 2 : 1) : 1;
}

/**
 * Shared memory of one block for M rows (default: a full block). w4a16.cu: the ring of activation rows
 * (272 bytes each, as many rows as M has up to the block's, per k-slice), each warp's ring of weights
 * and scales, and their mbarriers. w4a16_wgmma.cu: per stage, rounded to 1024 bytes (the swizzle's period),
 * the activations (256 bytes a row), every tile's 4 KB of weights and its scales; two mbarriers per
 * stage, and 1024 bytes to align the start.
 */
export function sharedBytes(c: W4A16Config, groupSize: number, M: number = c.rows): number {
  const sg = { g: 1, g64: 2, g32: 4 }[scaleVariant(groupSize)];
  const tiles = tilesPerBlock(c);
  if (c.kind === "wgmma")
    return 1024 + c.stages * (Math.ceil((c.rows * 256 + tiles * (4096 + sg * 128)) / 1024) * 1024 + 16);
  const ring = c.ring ?? (c.rows <= 32 ? 4 : 3);
  const ks = c.kslices ?? 1;
  // (sized by M only where k-slices or a deeper ring multiply the rows staged)
  const rows = ks > 1 || c.ring ? Math.min(c.rows, M) : c.rows;
  return ring * (ks * rows * 272 + 16) + c.warps * (c.stages * (4096 + sg * 128 + 8) + 16);
}

/**
 * Grid and k-splits for an M x Kpad x N product. `blocksPerSm` is the occupancy the driver reports for
 * the kernel. Splits: the count that minimizes waves x (chunks per split + c), c standing for a
 * block's start-up and its partial sums' round trip in chunks of work: 2 for the mma.sync kernel; 11
 * for the warpgroup one, whose blocks fill deeper pipelines, and 20 for its 128-row blocks, whose fp32
 * partials outweigh their share of the weights (all fit to `gptq bench --sweep` on an H200); ties go to
 * more splits, whose extra blocks hide more latency (8192x57344 at batch 1: 8 splits 2-3 % faster than
 * 5). A k-sliced block's chunks count as steps of one chunk per slice, and mma.sync splits
 * keep at least 4 chunks, 8 for 8-row blocks at 5–8 rows (`bench/tune.ts`).
 */
export function geometry(
  c: W4A16Config,
  M: number,
  N: number,
  Kpad: number,
  groupSize: number,
  smCount: number,
  blocksPerSm: number,
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
  // warpgroup blocks return 32 KB of fp32 partials per tile at 128 rows: 8 chunks' worth of weights
  const fixed = c.kind === "wgmma" ? Math.max(11, 4 + c.rows / 8) : 2;
  // a block's k-slices walk its chunks side by side
  const steps = (cps: number) => Math.ceil(cps / (c.kind === "mma" ? (c.kslices ?? 1) : 1));
  const cost = (b: { cps: number; splits: number }) =>
    Math.ceil((perSplit * b.splits) / slots) * (steps(b.cps) + fixed);
  // mma.sync splits keep 4 chunks or more: shorter ones cost more in partial sums than they gain; 8
  // where an 8-row block (without k-slices) adds up more than 4 rows' partials
  const minChunks = c.kind === "mma" ? (c.rows === 8 && !c.kslices && M > 4 ? 8 : 4) : 1;
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

/**
 * The block shape for M rows of a K x N layer, fit to `gptq bench --sweep` on an H200 (Llama-2 7B and
 * 70B shapes). `wgmma`: the GPU has warpgroup MMA (sm_90), whose blocks decode each weight once per 16 to
 * 128 rows.
 * - Up to 8 rows of layers of at most 4096 x 4096: 8-row blocks of 8 warps in 4 k-slices (two tiles).
 * - Up to 3 rows: 8-row mma.sync blocks of 4 warps.
 * - 4 to 16 rows: 16-row warpgroup blocks on small layers (up to 2^25 weights, 2^26 above 8 rows).
 *   Else up to 8 rows, 8-row blocks of 4 warps; at 5 to 8 rows in 2 k-slices on layers of at most 4096
 *   columns, and of 8 warps with an 8-slot ring above 2^27 weights; up to 16, two 8-row m-blocks (whose
 *   products take half the mma) below 2^26 weights, 16-row blocks of 8 warps below 2^27 and of 4 above.
 * - Above 16 rows: warpgroup blocks of 32, 64 or 128 rows (64 on layers of up to 2^24 weights, where
 *   two 64-row m-blocks fill the GPU better; without warpgroup MMA, 32-row mma.sync blocks). At 128
 *   rows, three tiles per block instead of two where the split model says that fills the GPU better
 *   without splitting K further (layers with many columns).
 */
export function chooseConfig(M: number, K = 0, N = 0, wgmma = false, smCount = 132): W4A16Config {
  const weights = K * N;
  const narrow = N > 0 && N <= 4096; // 64 tiles or fewer: K must supply the parallelism
  let name = "r32_w4_p2";
  if (M <= 8 && narrow && K <= 4096) name = "r8_w8_k4_p2";
  else if (M <= 3) name = "r8_w4_p2";
  else if (M <= 16 && wgmma && weights <= 2 ** (M <= 8 ? 25 : 26)) name = "wg_r16_x4_p8";
  else if (M <= 4) name = "r8_w4_p2";
  else if (M <= 8) name = narrow ? "r8_w4_k2_p2" : weights <= 2 ** 27 ? "r8_w4_p2" : "r8_w8_p2_a8";
  else if (M <= 16) name = weights < 2 ** 26 ? "r8_w4_p2" : weights < 2 ** 27 ? "r16_w8_p2" : "r16_w4_p2";
  else if (wgmma)
    name =
      M <= 32 ? "wg_r32_x4_p8" : M <= 64 || weights <= 2 ** 24 ? "wg_r64_x2_p4" : wide128(M, K, N, smCount);
  return named(name);
}

function named(name: string): W4A16Config {
  return W4A16_CONFIGS.find((c) => configName(c) === name)!;
}

/** 128-row blocks: two tiles each, or three where that costs less without more k-splits. */
function wide128(M: number, K: number, N: number, smCount: number): string {
  const Kpad = Math.ceil(K / 128) * 128;
  const [two, three] = [named("wg_r128_x2_p5"), named("wg_r128_x3_p4")].map((c) => {
    // one block per multiprocessor (their shared memory), and the bytes a stage brings in
    const g = geometry(c, M, N, Kpad, 128, smCount, 1);
    return { g, work: g.cost * (c.rows * 256 + tilesPerBlock(c) * 4224) };
  });
  return three.g.grid[2] <= two.g.grid[2] && three.work < two.work ? "wg_r128_x3_p4" : "wg_r128_x2_p5";
}
