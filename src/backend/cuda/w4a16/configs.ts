/**
 * The W4A16 block shapes: one table, the single source of truth. The `extern "C"` kernels NVRTC compiles
 * are generated from it (`instantiations`), the launcher sizes shared memory from it, and `gptq bench
 * --kernel gptq-ts-w4a16:NAME` parses its names. A new shape is one row here (and, if the tuning should
 * pick it, a row in tuning.ts).
 */
import { GptqError } from "../../../util/errors.js";

/**
 * A block shape of mma.cu (kind "mma": mma.sync, one warp per 64-column tile) or wgmma.cu (kind "wgmma":
 * warpgroup MMA, one warpgroup per tile, sm_90 only); each is compiled for one group per chunk, g64 and g32.
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
   * mma: slots of the activation ring (default 4 up to 32 rows, else 3). A deeper ring stages only the
   * rows M has.
   */
  ring?: 8;
  /** chunks (128 rows of K) in flight: in each warp's weight ring (mma), or whole stages (wgmma) */
  stages: number;
  /** k-splits; 0 or absent: chosen by `geometry` */
  splits?: number;
}

/** Every shape compiled, in the order the kernels are instantiated. */
export const W4A16_CONFIGS: readonly W4A16Config[] = [
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

/** The scale layouts each shape is compiled for: one group per 128-row chunk, or two (g64) or four (g32). */
export const SCALE_VARIANTS = [
  { name: "g", groupsPerChunk: 1 },
  { name: "g64", groupsPerChunk: 2 },
  { name: "g32", groupsPerChunk: 4 },
] as const;
export type ScaleVariant = (typeof SCALE_VARIANTS)[number]["name"];

/** The scale variant for a group size (32, 64, or one group per chunk: 128k and -1). */
export function scaleVariant(groupSize: number): ScaleVariant {
  return groupSize === 32 ? "g32" : groupSize === 64 ? "g64" : "g";
}

function groupsPerChunk(groupSize: number): number {
  return SCALE_VARIANTS.find((v) => v.name === scaleVariant(groupSize))!.groupsPerChunk;
}

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
  return c.kind === "mma" ? "mma.cu" : "wgmma.cu";
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

/** The table row of a name (no splits), or undefined. */
export function findConfig(name: string): W4A16Config | undefined {
  return W4A16_CONFIGS.find((c) => configName(c) === name);
}

/** A `configName` ("r16_w4_p3", "wg_r64_x4_p6", either with "_s8"), as `gptq bench --kernel gptq-ts-w4a16:NAME` takes. */
export function parseConfig(name: string): W4A16Config {
  const m = /^(?:w4a16_)?((?:wg_)?r\d+_[wx]\d+(?:_k\d+)?_p\d+(?:_a\d+)?)(?:_s(\d+))?$/.exec(name);
  const c = m && findConfig(m[1]);
  if (!c)
    throw new GptqError(
      `unknown W4A16 configuration "${name}" (one of ${W4A16_CONFIGS.map(configName).join(", ")}, optionally _sN for N k-splits)`,
    );
  return m[2] ? { ...c, splits: Number(m[2]) } : { ...c };
}

/**
 * The `extern "C"` kernels of one source, generated from the table and appended to it before NVRTC
 * compiles it: a `W4A16_MMA(...)` or `W4A16_WGMMA(...)` line per shape and scale variant, macros each
 * source defines (they hold the kernel's parameter list; the template arguments are spelled here).
 */
export function instantiations(kind: W4A16Config["kind"]): string {
  const lines = [`// generated from W4A16_CONFIGS (configs.ts)`];
  for (const c of W4A16_CONFIGS.filter((x) => x.kind === kind))
    for (const v of SCALE_VARIANTS) {
      const name = kernelName(c, v.name === "g32" ? 32 : v.name === "g64" ? 64 : 128);
      if (c.kind === "mma") {
        // warps, k-slices, 16-row m-tiles, 8-row block, scale groups per chunk, weight slots, ring slots
        const mtiles = c.rows === 8 ? 1 : c.rows / 16;
        const args = [c.warps, c.kslices ?? 1, mtiles, c.rows === 8, v.groupsPerChunk, c.stages, c.ring ?? 0];
        lines.push(`W4A16_MMA(${args.join(", ")}, ${name})`);
      } else {
        // warpgroups, rows, scale groups per chunk, stages
        lines.push(`W4A16_WGMMA(${[c.warps / 4, c.rows, v.groupsPerChunk, c.stages].join(", ")}, ${name})`);
      }
    }
  return lines.join("\n") + "\n";
}

/** Most splits one cluster reduces (mma.sync blocks of 8 rows; 2 for 16 rows, whose partials take twice the registers). */
export function maxCluster(c: W4A16Config): number {
  return c.kind === "mma" ? (c.rows === 8 ? 4 : c.rows === 16 ? 2 : 1) : 1;
}

/**
 * Shared memory of one block for M rows (default: a full block). mma.cu: the ring of activation rows
 * (272 bytes each, as many rows as M has up to the block's, per k-slice), each warp's ring of weights
 * and scales, and their mbarriers. wgmma.cu: per stage, rounded to 1024 bytes (the swizzle's period),
 * the activations (256 bytes a row), every tile's 4 KB of weights and its scales; two mbarriers per
 * stage, and 1024 bytes to align the start.
 */
export function sharedBytes(c: W4A16Config, groupSize: number, M: number = c.rows): number {
  const sg = groupsPerChunk(groupSize);
  const tiles = tilesPerBlock(c);
  if (c.kind === "wgmma")
    return 1024 + c.stages * (Math.ceil((c.rows * 256 + tiles * (4096 + sg * 128)) / 1024) * 1024 + 16);
  const ring = c.ring ?? (c.rows <= 32 ? 4 : 3);
  const ks = c.kslices ?? 1;
  // (sized by M only where k-slices or a deeper ring multiply the rows staged)
  const rows = ks > 1 || c.ring ? Math.min(c.rows, M) : c.rows;
  return ring * (ks * rows * 272 + 16) + c.warps * (c.stages * (4096 + sg * 128 + 8) + 16);
}
