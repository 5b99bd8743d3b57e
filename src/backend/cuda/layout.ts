/**
 * The W4A16 kernel's weight layout, prepared on the CPU at load time from a QuantizedLinear (which every
 * stored format unpacks to), and the launch geometry. Pure TypeScript: covered by CPU tests.
 *
 * B: for each 64-column tile t and 16-row k-tile kt, 32 lanes x 4 words. Lane l (g = l >> 2, c = l & 3),
 * word w carries sub-tiles j0 = 2w, j1 = 2w + 1 (columns n = 64t + 8j + g) at rows k = 16kt + 2c:
 *   nibble 0, 4 = code(k, n0), code(k+1, n0)     (mma fragment b0 of j0)
 *   nibble 1, 5 = code(k+8, n0), code(k+9, n0)   (b1 of j0)
 *   nibble 2, 6 / 3, 7 = the same for n1.
 * S: for each group and tile, 8 lanes x 8 halves: S[g][t][gg][j] = scale(g, 64t + 8j + gg).
 * Columns past N are padded with code 8 (weight 0) and scale 0. Act-order layers are stored with rows
 * sorted by group; `perm` then says which activation column feeds sorted row k.
 */
import { QuantizedLinear, numGroups } from "../../formats/types.js";
import { floatToHalf } from "../../tensor/dtype.js";
import { GptqError } from "../../util/errors.js";

export interface W4A16Layout {
  K: number;
  N: number;
  /** rows per group (K for one group) */
  groupSize: number;
  ntiles: number;
  B: Uint32Array;
  S: Uint16Array;
  /** activation column of each stored row, when rows were sorted (act-order); else null */
  perm: Int32Array | null;
  bias: Uint16Array | null;
}

/** Why the W4A16 kernel cannot take this layer, or null when it can. */
export function w4a16Unsupported(layer: QuantizedLinear): string | null {
  const { bits, inFeatures: K, groupSize } = layer;
  if (bits !== 4) return `${bits}-bit weights (the W4A16 kernel runs 4-bit)`;
  if (K % 16 !== 0) return `in_features ${K} is not a multiple of 16`;
  const gs = groupSize === -1 ? K : groupSize;
  if (gs % 16 !== 0) return `group size ${groupSize} is not a multiple of 16`;
  for (let i = 0; i < layer.zeros.length; i++)
    if (layer.zeros[i] !== 8) return "asymmetric zero points (the W4A16 kernel is symmetric: zero 8)";
  if (!sortedGroups(layer)) return "g_idx does not sort into contiguous groups of group_size rows";
  return null;
}

/** Rows in group order (stable argsort of g_idx): the identity without act-order. */
export function groupOrder(gIdx: Int32Array): Int32Array {
  const idx = Array.from({ length: gIdx.length }, (_, i) => i);
  idx.sort((a, b) => gIdx[a] - gIdx[b] || a - b);
  return Int32Array.from(idx);
}

function sortedGroups(layer: QuantizedLinear): boolean {
  const gs = layer.groupSize === -1 ? layer.inFeatures : layer.groupSize;
  const order = groupOrder(layer.gIdx);
  for (let k = 0; k < order.length; k++) if (layer.gIdx[order[k]] !== Math.floor(k / gs)) return false;
  return true;
}

export function packW4A16(layer: QuantizedLinear): W4A16Layout {
  const why = w4a16Unsupported(layer);
  if (why) throw new GptqError(`W4A16 kernel: ${why}`);
  const { inFeatures: K, outFeatures: N, codes } = layer;
  const gs = layer.groupSize === -1 ? K : layer.groupSize;
  const G = numGroups(K, layer.groupSize);
  const order = groupOrder(layer.gIdx);
  const identity = order.every((v, i) => v === i);
  const ntiles = Math.ceil(N / 64);
  const ktiles = K / 16;
  const B = new Uint32Array(ntiles * ktiles * 128);
  const code = (k: number, n: number) => (n < N ? codes[order[k] * N + n] : 8);
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
  const S = new Uint16Array(G * ntiles * 64);
  for (let g = 0; g < G; g++)
    for (let t = 0; t < ntiles; t++)
      for (let gg = 0; gg < 8; gg++)
        for (let j = 0; j < 8; j++) {
          const n = t * 64 + 8 * j + gg;
          S[((g * ntiles + t) * 8 + gg) * 8 + j] = n < N ? floatToHalf(layer.scales[g * N + n]) : 0;
        }
  let bias: Uint16Array | null = null;
  if (layer.bias) bias = Uint16Array.from(layer.bias, (v) => floatToHalf(v));
  return { K, N, groupSize: gs, ntiles, B, S, perm: identity ? null : order, bias };
}

/** The inverse of packW4A16's weight part: codes K x N in stored (sorted) row order. */
export function unpackW4A16Codes(lay: W4A16Layout): Uint8Array {
  const { K, N, ntiles, B } = lay;
  const ktiles = K / 16;
  const out = new Uint8Array(K * N);
  for (let t = 0; t < ntiles; t++)
    for (let kt = 0; kt < ktiles; kt++)
      for (let l = 0; l < 32; l++)
        for (let w = 0; w < 4; w++) {
          const v = B[(t * ktiles + kt) * 128 + l * 4 + w];
          const n0 = t * 64 + 16 * w + (l >> 2);
          const k = kt * 16 + 2 * (l & 3);
          const put = (kk: number, n: number, nib: number) => {
            if (n < N) out[kk * N + n] = (v >>> (4 * nib)) & 15;
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

export interface W4A16Config {
  /** 16-row m-tiles per block */
  mt: number;
  /** warps per block */
  warps: number;
  /** k-tiles per stage of each warp's cp.async ring */
  kt: number;
  /** depth of each warp's ring (k-tiles per warp then follow the shape) */
  stages: number;
}

/**
 * The instantiations compiled in w4a16.cu (keep the two lists equal). The first with one m-tile serves
 * M <= 16, the first with two every larger M: the fastest in `gptq bench --sweep` on an H200.
 */
export const W4A16_CONFIGS: W4A16Config[] = [
  { mt: 1, warps: 8, kt: 1, stages: 4 },
  { mt: 1, warps: 8, kt: 2, stages: 4 },
  { mt: 1, warps: 4, kt: 2, stages: 4 },
  { mt: 1, warps: 8, kt: 4, stages: 3 },
  { mt: 2, warps: 8, kt: 2, stages: 4 },
  { mt: 2, warps: 4, kt: 2, stages: 4 },
  { mt: 4, warps: 4, kt: 2, stages: 4 },
  { mt: 4, warps: 4, kt: 1, stages: 3 },
];

export function configName(c: W4A16Config): string {
  return `w4a16_stream_m${c.mt}_w${c.warps}_p${c.stages}_s${c.kt}`;
}

export function parseConfig(name: string): W4A16Config {
  const c = W4A16_CONFIGS.find((x) => configName(x) === name || configName(x) === `w4a16_${name}`);
  if (!c)
    throw new GptqError(
      `unknown W4A16 configuration "${name}" (one of ${W4A16_CONFIGS.map(configName).join(", ")})`,
    );
  return c;
}

export interface W4A16Launch {
  config: W4A16Config;
  grid: [number, number, number];
  block: number;
  sharedBytes: number;
  /** fp32 partial sums the k-splits need (0 when one split) */
  workspaceBytes: number;
  counters: number;
  /** k-tiles each warp streams */
  ktPerWarp: number;
}

/** Shared memory, grid and k-range per warp for an M x K x N product. */
export function geometry(c: W4A16Config, M: number, N: number, K: number, smCount = 132): W4A16Launch {
  const ntiles = Math.ceil(N / 64);
  const ktiles = K / 16;
  const rows = c.mt * 16;
  const sharedBytes = Math.max(c.warps * c.stages * c.kt * (640 + c.mt * 512), c.warps * rows * 72 * 4);
  // one wave: as many warps as fit the multiprocessors (shared memory; registers ~ accumulators)
  const regs = 48 + 32 * c.mt + 8 * c.kt;
  const perSm = Math.max(
    1,
    Math.min(
      Math.floor(232448 / (sharedBytes + 1024)),
      Math.floor(65536 / (regs * 32 * c.warps)),
      Math.floor(64 / c.warps),
    ),
  );
  const mblocks = Math.ceil(M / rows);
  const target = (smCount * perSm * c.warps) / mblocks;
  // each warp streams at least a ring's depth of k-tiles
  let kpw = Math.max(c.stages * c.kt, Math.ceil((ntiles * ktiles) / target));
  const splits = Math.ceil(ktiles / (c.warps * kpw));
  kpw = Math.ceil(ktiles / (c.warps * splits));
  return {
    config: c,
    grid: [ntiles, splits, mblocks],
    block: c.warps * 32,
    sharedBytes,
    workspaceBytes: splits > 1 ? splits * M * ntiles * 64 * 4 : 0,
    counters: mblocks * ntiles,
    ktPerWarp: kpw,
  };
}

/** The configuration for M rows: one m-tile up to 16 rows, two above (more rows re-read weights). */
export function chooseConfig(M: number): W4A16Config {
  return W4A16_CONFIGS.find((c) => c.mt === (M <= 16 ? 1 : 2))!;
}
