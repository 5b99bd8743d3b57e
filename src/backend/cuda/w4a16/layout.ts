/**
 * The W4A16 kernel's weight layout, prepared on the CPU at load time from a QuantizedLinear (which every
 * stored format unpacks to). Pure TypeScript: covered by CPU tests.
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
import { QuantizedLinear, numGroups } from "../../../formats/types.js";
import { floatToHalf } from "../../../tensor/dtype.js";
import { GptqError } from "../../../util/errors.js";
import { w4a16LayerVerdict } from "../../../kernels/gptq-ts.js";

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
