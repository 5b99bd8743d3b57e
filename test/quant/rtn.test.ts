import { test } from "node:test";
import assert from "node:assert/strict";
import { quantizeRtn } from "../../src/quant/index.js";
import { dequantize } from "../../src/formats/dequantize.js";
import { floatToHalf, halfToFloat } from "../../src/tensor/dtype.js";
import { GptqError } from "../../src/util/errors.js";
import { llmLike } from "./data.js";
import { minMaxParams, quantValue } from "./reference.js";

const isHalf = (x: number) => halfToFloat(floatToHalf(x)) === x;

test("RTN 4-bit symmetric on a hand-worked row: scale 2*max/15 in fp16, zero 8, codes round half to even", () => {
  // max |w| = 1.875 -> scale 3.75 / 15 = 0.25; w / scale = -6, 0.5 -> 0 (to even), 1.5 -> 2, 7.5 -> 8,
  // plus the zero point 8: codes 2, 8, 10 and 16, which clamps to 15
  const W = Float32Array.from([-1.5, 0.125, 0.375, 1.875]);
  const l = quantizeRtn(W, 1, 4, { bits: 4, groupSize: -1, sym: true });
  assert.equal(l.scales[0], 0.25);
  assert.equal(l.zeros[0], 8);
  assert.deepEqual([...l.codes], [2, 8, 10, 15]);
  assert.deepEqual([...dequantize(l)], [-1.5, 0, 0.5, 1.75]);
});

test("RTN asymmetric: range includes 0, zero = round(-min / scale), partial last group", () => {
  const W = Float32Array.from([0.5, 1, 2, 3, 4, 5, 6, 7.5, 1, 2]); // groups of 4: [0.5..3], [4..7.5], [1, 2]
  const l = quantizeRtn(W, 1, 10, { bits: 2, groupSize: 4, sym: false });
  assert.deepEqual([...l.gIdx], [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]);
  assert.deepEqual(
    [...l.scales],
    [1, 2.5, 2 / 3].map((s) => halfToFloat(floatToHalf(s))),
  );
  assert.deepEqual([...l.zeros], [0, 0, 0]);
});

test("RTN matches a plain per-value reference at 2/3/4/8 bits, sym and asym, group -1 and partial groups", () => {
  const N = 6;
  const K = 45;
  const W = llmLike(N, K, 7);
  for (const bits of [2, 3, 4, 8] as const)
    for (const sym of [true, false])
      for (const groupSize of [-1, 16, 45]) {
        const l = quantizeRtn(W, N, K, { bits, groupSize, sym });
        const Q = dequantize(l);
        const gs = groupSize === -1 ? K : groupSize;
        assert.equal(l.scales.length, Math.ceil(K / gs) * N);
        for (let n = 0; n < N; n++)
          for (let k0 = 0; k0 < K; k0 += gs) {
            const row = Array.from(W.subarray(n * K + k0, n * K + Math.min(k0 + gs, K)));
            const p = minMaxParams(row, bits, sym);
            const g = k0 / gs;
            assert.equal(l.scales[g * N + n], p.scale);
            assert.equal(l.zeros[g * N + n], p.zero);
            row.forEach((x, i) => assert.equal(Q[n * K + k0 + i], Math.fround(quantValue(x, p, bits))));
          }
        assert.ok(l.scales.every(isHalf));
        assert.ok(l.zeros.every((z) => z >= 0 && z <= 2 ** bits - 1));
      }
});

test("RTN mse: AutoGPTQ's shrink grid never does worse than min/max on its own |err|^2.4 measure", () => {
  const N = 32;
  const K = 128;
  const W = llmLike(N, K, 11, 13, 6);
  const err = (Q: Float32Array, n: number) => {
    let s = 0;
    for (let k = 0; k < K; k++) s += Math.abs(Q[n * K + k] - W[n * K + k]) ** 2.4;
    return s;
  };
  for (const sym of [true, false]) {
    const plain = dequantize(quantizeRtn(W, N, K, { bits: 4, groupSize: 64, sym }));
    const mse = quantizeRtn(W, N, K, { bits: 4, groupSize: 64, sym, mse: true });
    const Qm = dequantize(mse);
    let better = 0;
    for (let n = 0; n < N; n++) {
      assert.ok(err(Qm, n) <= err(plain, n) * (1 + 1e-9), `row ${n}`);
      if (err(Qm, n) < err(plain, n) * 0.99) better++;
    }
    assert.ok(better > N / 2, `the search shrinks most heavy-tailed rows (${better}/${N})`);
    assert.ok(mse.scales.every(isHalf));
  }
});

test("RTN refuses bad input with a GptqError", () => {
  const W = new Float32Array(8);
  assert.throws(() => quantizeRtn(W, 2, 4, { bits: 5 as 4, groupSize: -1, sym: true }), GptqError);
  assert.throws(() => quantizeRtn(W, 2, 4, { bits: 4, groupSize: 0, sym: true }), GptqError);
  assert.throws(() => quantizeRtn(W, 2, 4, { bits: 4, groupSize: 8, sym: true }), /larger than in_features/);
  assert.throws(() => quantizeRtn(W, 3, 4, { bits: 4, groupSize: -1, sym: true }), /expected N x K/);
  assert.throws(
    () => quantizeRtn(Float32Array.from([NaN, 0]), 1, 2, { bits: 4, groupSize: -1, sym: true }),
    /non-finite/,
  );
  assert.throws(
    () => quantizeRtn(W, 2, 4, { bits: 4, groupSize: -1, sym: true, clip: "hessian" }),
    /needs a Hessian/,
  );
});
