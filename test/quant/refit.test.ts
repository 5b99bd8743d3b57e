import { test } from "node:test";
import assert from "node:assert/strict";
import { refitScales } from "../../src/quant/refit.js";
import { floatToHalf, halfToFloat } from "../../src/tensor/dtype.js";
import { gaussian, rng } from "./data.js";
import { inverse } from "./reference.js";

test("refitScales solves each row's least-squares system (checked against explicit normal equations)", () => {
  const N = 3;
  const K = 12;
  const G = 3;
  const g = gaussian(rng(5));
  const rand = rng(6);
  const groupOf = Int32Array.from({ length: K }, (_, k) => [0, 2, 1][k % 3]); // groups interleaved
  const codes = Uint8Array.from({ length: K * N }, () => Math.floor(rand() * 16));
  const zeros = new Float32Array(G * N).fill(8);
  const scales = Float32Array.from({ length: G * N }, () => halfToFloat(floatToHalf(0.1 + 0.05 * rand())));
  // a weight near what the codes stand for at some true scales, plus noise
  const truth = Float32Array.from({ length: G * N }, () => 0.08 + 0.1 * rand());
  const w = Float32Array.from(
    { length: K * N },
    (_, i) => truth[groupOf[Math.floor(i / N)] * N + (i % N)] * (codes[i] - 8) + 0.02 * g(),
  );
  const m = Array.from({ length: 2 * K * K }, () => g());
  const H = new Float64Array(K * K);
  for (let i = 0; i < K; i++)
    for (let j = 0; j < K; j++) {
      for (let r = 0; r < 2 * K; r++) H[i * K + j] += m[r * K + i] * m[r * K + j];
      if (i === j) H[i * K + j] += 0.1;
    }
  const before = Float32Array.from(scales);
  const total = refitScales({ w, H, codes, groupOf, scales, zeros, N, K, G });

  let expectedTotal = 0;
  for (let n = 0; n < N; n++) {
    // u_g: the row's codes minus zero, restricted to group g
    const u = (grp: number) =>
      Array.from({ length: K }, (_, k) => (groupOf[k] === grp ? codes[k * N + n] - zeros[grp * N + n] : 0));
    const quad = (x: number[], y: number[]) => {
      let s = 0;
      for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) s += x[i] * H[i * K + j] * y[j];
      return s;
    };
    const wr = Array.from({ length: K }, (_, k) => w[k * N + n]);
    const A = new Float64Array(G * G);
    const b: number[] = [];
    for (let a = 0; a < G; a++) {
      b.push(quad(u(a), wr));
      for (let c = 0; c < G; c++) A[a * G + c] = quad(u(a), u(c));
    }
    const inv = inverse(A, G);
    const s = Array.from({ length: G }, (_, a) => b.reduce((acc, bc, c) => acc + inv[a * G + c] * bc, 0));
    const half = s.map((x) => halfToFloat(floatToHalf(x)));
    const err = (sc: number[]) => {
      const e = wr.map((x, k) => x - sc[groupOf[k]] * (codes[k * N + n] - zeros[groupOf[k] * N + n]));
      return quad(e, e);
    };
    const old = Array.from({ length: G }, (_, a) => before[a * N + n]);
    assert.ok(err(half) < err(old), "the refit improves on these random scales");
    for (let a = 0; a < G; a++)
      assert.equal(scales[a * N + n], half[a], `row ${n} group ${a}: ${scales[a * N + n]} vs ${s[a]}`);
    expectedTotal += err(half);
  }
  assert.ok(Math.abs(total - expectedTotal) < 1e-9 * expectedTotal, `${total} vs ${expectedTotal}`);
});
