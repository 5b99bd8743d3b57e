import { test } from "node:test";
import assert from "node:assert/strict";
import { HessianAccumulator } from "../../src/quant/index.js";
import { CrossAccumulator, fpTargetRidge, fpTargetWeights } from "../../src/quant/fp-target.js";

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

test("CrossAccumulator: C = 2/n Xf^T Xq over batches, any K (ragged 4 x 4 blocks), many row panels", () => {
  for (const K of [7, 12]) {
    const rows = 300; // three panels, the last one partial, in two batches
    let seed = K;
    const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647) * 2 - 1;
    const Xf = Float32Array.from({ length: rows * K }, rnd);
    const Xq = Float32Array.from({ length: rows * K }, rnd);
    const acc = new CrossAccumulator(K);
    acc.add(Xf.subarray(0, 100 * K), Xq.subarray(0, 100 * K), 100);
    acc.add(Xf.subarray(100 * K), Xq.subarray(100 * K), 200);
    for (let i = 0; i < K; i++)
      for (let j = 0; j < K; j++) {
        let c = 0;
        for (let r = 0; r < rows; r++) c += Xf[r * K + i] * Xq[r * K + j];
        c *= 2 / rows;
        assert.ok(Math.abs(acc.C[i * K + j] - c) < 1e-9, `K ${K} C[${i}, ${j}] ${acc.C[i * K + j]} vs ${c}`);
      }
  }
});

test("fpTargetWeights with damping is ridge-regularised towards W: undrifted inputs give W back", () => {
  const N = 4;
  const K = 6;
  const rows = 50;
  let seed = 11;
  const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647) * 2 - 1;
  // a weak input direction: column 5 barely moves, where ridge towards 0 would shrink W's weights
  const X = Float32Array.from({ length: rows * K }, (_, i) => rnd() * (i % K === 5 ? 1e-3 : 1));
  const W = Float32Array.from({ length: N * K }, rnd);
  const acc = new HessianAccumulator(K);
  acc.add(X, rows);
  const cross = new CrossAccumulator(K);
  cross.add(X, X, rows);
  const Ws = fpTargetWeights(W, N, K, cross.C, acc.H, 0.1);
  for (let i = 0; i < W.length; i++) assert.ok(Math.abs(Ws[i] - W[i]) < 1e-5, `${i}: ${Ws[i]} vs ${W[i]}`);
});

test("fpTargetRidge: l = damp x mean(diag H) (damp at least 1e-6), and 1 more on a zero diagonal entry", () => {
  const diag = Float64Array.of(2, 0, 4, 6);
  const r = fpTargetRidge(diag, 0.1);
  assert.equal(r.lambda, 0.1 * 3);
  assert.deepEqual(
    r.onH,
    Float64Array.of(0.30000000000000004, 1.3, 0.30000000000000004, 0.30000000000000004),
  );
  assert.equal(fpTargetRidge(diag, 0).lambda, 1e-6 * 3);
  // a dead input (zero row and column of H) still leaves H + l I factorisable: the live inputs keep W's
  // weights (undrifted, C = H), the dead one's is l w / (1 + l)
  const K = 3;
  const H = Float64Array.of(2, 0, 1, 0, 0, 0, 1, 0, 2);
  const W = Float32Array.of(1, -2, 3);
  const Ws = fpTargetWeights(W, 1, K, H, H, 0.01);
  const l = fpTargetRidge(Float64Array.of(2, 0, 2), 0.01).lambda;
  const want = [W[0], (l * W[1]) / (1 + l), W[2]];
  for (let k = 0; k < K; k++) assert.ok(Math.abs(Ws[k] - want[k]) < 1e-6, `${k}: ${Ws[k]} vs ${want[k]}`);
});
