import { test } from "node:test";
import assert from "node:assert/strict";
import { HessianAccumulator } from "../../src/quant/index.js";
import { fpTargetWeights } from "../../src/quant/fp-target.js";

test("fpTargetWeights solves the least-squares problem min ||Xf W^T - Xq W*^T||", () => {
  const N = 3;
  const K = 5;
  const rows = 40;
  let seed = 5;
  const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647) * 2 - 1;
  const Xf = Float32Array.from({ length: rows * K }, rnd);
  const Xq = Xf.map((v) => v + 0.1 * rnd());
  const W = Float32Array.from({ length: N * K }, rnd);
  const H = new HessianAccumulator(K);
  H.add(Xq, rows);
  // C = 2/n Xf^T Xq, scaled as the Hessian is
  const C = new Float64Array(K * K);
  for (let r = 0; r < rows; r++)
    for (let i = 0; i < K; i++)
      for (let j = 0; j < K; j++) C[i * K + j] += (2 / rows) * Xf[r * K + i] * Xq[r * K + j];
  const Ws = fpTargetWeights(W, N, K, C, H.H, 0);
  // at the minimiser the gradient Xq^T (Xq W*^T - Xf W^T) vanishes
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++) {
      let g = 0;
      for (let r = 0; r < rows; r++) {
        let e = 0;
        for (let j = 0; j < K; j++) e += Xq[r * K + j] * Ws[n * K + j] - Xf[r * K + j] * W[n * K + j];
        g += Xq[r * K + k] * e;
      }
      assert.ok(Math.abs(g) < 1e-3, `gradient ${g} at (${n}, ${k})`);
    }
});
