import { test } from "node:test";
import assert from "node:assert/strict";
import { findParams, halfScale, quantCode, resolveQuantizer, searchGrid } from "../../src/quant/quantizer.js";
import type { ClipMethod, Quantizer } from "../../src/quant/quantizer.js";

/**
 * The clip search as documented, with nothing skipped: every candidate of every phase scored over every
 * column, the first of least error kept.
 */
function reference(q: Quantizer, src: Float32Array, cols: number, N: number, w: Float64Array) {
  const scale = new Float32Array(N);
  const zero = new Float32Array(N);
  const g = searchGrid(q);
  const norm = q.clip === "mse" ? q.norm : 2;
  for (let n = 0; n < N; n++) {
    let lo0 = 0;
    let hi0 = 0;
    for (let k = 0; k < cols; k++) {
      lo0 = Math.min(lo0, src[k * N + n]);
      hi0 = Math.max(hi0, src[k * N + n]);
    }
    if (q.sym) {
      hi0 = Math.max(-lo0, hi0);
      if (lo0 < 0) lo0 = -hi0;
    }
    if (lo0 === 0 && hi0 === 0) [lo0, hi0] = [-1, 1];
    const scaleOf = (lo: number, hi: number) => halfScale((hi * hi0 - lo * lo0) / q.maxq);
    [scale[n], zero[n]] = [scaleOf(1, 1), findZero(q, lo0, scaleOf(1, 1))];
    if (q.sym && q.clip !== "mse" && lo0 === 0) lo0 = -hi0;
    let best = Infinity;
    let bestLo = 1;
    let bestHi = 1;
    const score = (lo: number, hi: number) => {
      const s = scaleOf(lo, hi);
      const z = findZero(q, lo * lo0, s);
      let e = 0;
      for (let k = 0; k < cols; k++) {
        const x = src[k * N + n];
        const d = Math.abs(s * (quantCode(x, s, z, q.maxq) - z) - x);
        e +=
          (q.clip === "hessian" ? w[k] : 1) *
          (norm === 2 ? d * d : d === 0 ? 0 : Math.exp(norm * Math.log(d)));
      }
      if (e < best) [best, bestLo, bestHi, scale[n], zero[n]] = [e, lo, hi, s, z];
    };
    const shrinks = Array.from({ length: g.shrinks }, (_, i) => 1 - i / g.grid);
    for (const p of shrinks) score(p, p);
    for (let i = 1; i <= g.widens; i++) score(1 + i / g.grid, 1 + i / g.grid);
    if (q.splitRange && !q.sym)
      for (let round = 0; round < 2; round++) {
        const hiNow = bestHi;
        for (const p of shrinks) score(p, hiNow);
        const loNow = bestLo;
        for (const p of shrinks) score(loNow, p);
      }
  }
  return { scale, zero };
}

/** AutoGPTQ's asymmetric zero point: round-half-even of -lo / s, clamped to the codes. */
function findZero(q: Quantizer, lo: number, s: number): number {
  if (q.sym) return (q.maxq + 1) / 2;
  const v = -lo / s;
  let r = Math.round(v);
  if (r - v === 0.5 && r % 2 !== 0) r -= 1;
  return Math.min(q.maxq, Math.max(0, r));
}

test("the clip searches (mse, hessian, split ranges) give what scoring every candidate fully gives", () => {
  let seed = 11;
  const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const gauss = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
  const N = 60;
  let rows = 0;
  for (const bits of [2, 3, 4, 8] as const)
    for (const sym of [true, false])
      for (const clip of ["mse", "hessian"] as ClipMethod[])
        for (const splitRange of [false, true])
          for (const cols of [16, 45]) {
            const src = new Float32Array(cols * N);
            for (let k = 0; k < cols; k++)
              for (let n = 0; n < N; n++) {
                let v = gauss() * 0.02 * (k % 7 === 0 ? 4 : 1);
                if (n % 20 === 1) v = 0; // all-zero rows
                if (n % 20 === 2) v = Math.abs(v); // one sign
                if (n % 20 === 3) v = -Math.abs(v) * 1e-3;
                src[k * N + n] = v;
              }
            const w = Float64Array.from({ length: cols }, () => Math.exp(gauss()));
            const q = resolveQuantizer({ bits, groupSize: cols, sym, clip, splitRange }, cols);
            const scale = new Float32Array(N);
            const zero = new Float32Array(N);
            findParams(q, src, 0, cols, N, scale, zero, w);
            const ref = reference(q, src, cols, N, w);
            const what = `${bits}-bit ${sym ? "sym" : "asym"} ${clip}${splitRange ? " split" : ""} over ${cols}`;
            assert.deepEqual([...scale], [...ref.scale], `${what}: scales`);
            const plus = (a: Float32Array) => Array.from(a, (v) => v + 0); // -0 and 0 store alike
            assert.deepEqual(plus(zero), plus(ref.zero), `${what}: zero points`);
            rows += N;
          }
  assert.equal(rows, 4 * 2 * 2 * 2 * 2 * N);
});
