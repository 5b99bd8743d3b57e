/**
 * The integer grid every quantizer shares (fp16 scales, codes, zero points) and the row-by-row search of a
 * group's range on it. It sits this low so that quant/ (the algorithms) and backend/cpu (the thread
 * pool's tasks) run the same search: the pool splits a group's rows between threads.
 */
import { floatToHalf, halfToFloat } from "./dtype.js";
import { roundHalfEven } from "./round.js";

const FP16_MAX = 65504;
const FP16_MIN_SUBNORMAL = 2 ** -24;

/** The nearest fp16 value, kept positive and finite (a scale of 0 or infinity could not dequantize). */
export function halfScale(s: number): number {
  const h = halfToFloat(floatToHalf(s));
  if (h < FP16_MIN_SUBNORMAL) return FP16_MIN_SUBNORMAL;
  return h > FP16_MAX ? FP16_MAX : h;
}

/** Integer code of x: clamp(round(x / scale) + zero, 0, maxq). */
export function quantCode(x: number, scale: number, zero: number, maxq: number): number {
  const q = roundHalfEven(x / scale) + zero;
  return q < 0 ? 0 : q > maxq ? maxq : q;
}

/** The asymmetric zero point of a range starting at xmin: clamp(round(-xmin / scale), 0, maxq). */
export function asymZero(xmin: number, scale: number, maxq: number): number {
  const z = roundHalfEven(-xmin / scale);
  return z < 0 ? 0 : z > maxq ? maxq : z;
}

/** What a row search tries: the range's ends scaled by the shrinks, then the widens, then (splitRange) each end alone. */
export interface RowSearch {
  maxq: number;
  sym: boolean;
  /** the error's norm: 2 for the Hessian-weighted search */
  norm: number;
  grid: number;
  shrinks: number;
  widens: number;
  splitRange: boolean;
}

/** A searcher of rows [0, N) of a group (the serial one below, or one that splits the rows between threads). */
export type RowSearcher = (
  s: RowSearch,
  src: Float32Array,
  offset: number,
  cols: number,
  N: number,
  xmin: Float64Array,
  xmax: Float64Array,
  scale: Float32Array,
  zero: Float32Array,
  weights: Float64Array | undefined,
) => void;

/**
 * The searches of clip "mse" (sum_k |x - q(x)|^norm) and "hessian" (sum_k weights[k] (x - q(x))^2) row by
 * row, rows [n0, n1) of the group's N (column k of the group at src[offset + k * N ...]), with the same
 * float64 operations in the same order as scoring every row at once, so the same parameters: a row's
 * candidate stops being scored once its partial error reaches the row's best, since only a strictly
 * smaller error replaces the best. `xmin` and `xmax` are the rows' ranges as the search starts from them;
 * scale/zero hold the min-max parameters, kept where no candidate scores below infinity.
 */
export function searchRows(
  s: RowSearch,
  src: Float32Array,
  offset: number,
  cols: number,
  N: number,
  xmin: Float64Array,
  xmax: Float64Array,
  scale: Float32Array,
  zero: Float32Array,
  weights: Float64Array | undefined,
  n0 = 0,
  n1 = N,
): void {
  const { maxq, sym, norm } = s;
  const symZero = (maxq + 1) / 2;
  const shrinks = Array.from({ length: s.shrinks }, (_, i) => 1 - i / s.grid);
  const widens = Array.from({ length: s.widens }, (_, i) => 1 + (i + 1) / s.grid);
  const x = new Float64Array(cols);
  const w = Float64Array.from({ length: cols }, (_, k) => (weights ? weights[k] : 1));
  for (let n = n0; n < n1; n++) {
    for (let k = 0; k < cols; k++) x[k] = src[offset + k * N + n];
    const lo0 = xmin[n];
    const hi0 = xmax[n];
    let best = Infinity;
    let bestLo = 1;
    let bestHi = 1;
    const tryOne = (lo: number, hi: number): void => {
      const l = lo * lo0;
      const sc = halfScale((hi * hi0 - l) / maxq);
      const z = sym ? symZero : asymZero(l, sc, maxq);
      let e = 0;
      for (let k = 0; k < cols; k++) {
        const v = x[k];
        const d = Math.abs(sc * (quantCode(v, sc, z, maxq) - z) - v);
        e += w[k] * (norm === 2 ? d * d : d === 0 ? 0 : Math.exp(norm * Math.log(d)));
        if (e >= best) return;
      }
      if (!(e < best)) return;
      best = e;
      bestLo = lo;
      bestHi = hi;
      scale[n] = sc;
      zero[n] = z;
    };
    for (const p of shrinks) tryOne(p, p);
    for (const p of widens) tryOne(p, p);
    if (!s.splitRange || sym) continue;
    for (let round = 0; round < 2; round++) {
      const hiNow = bestHi;
      for (const p of shrinks) tryOne(p, hiNow);
      const loNow = bestLo;
      for (const p of shrinks) tryOne(loNow, p);
    }
  }
}
