import { test } from "node:test";
import assert from "node:assert/strict";
import { HessianAccumulator } from "../../src/quant/index.js";
import { GptqError } from "../../src/util/errors.js";
import { llmLike } from "./data.js";

test("HessianAccumulator: batches of any size give 2/n X^T X (float64, n = rows)", () => {
  const K = 23;
  const rows = 150;
  const X = llmLike(rows, K, 3);
  const acc = new HessianAccumulator(K);
  let r = 0;
  for (const b of [1, 64, 7, 0, 65, 13]) {
    acc.add(X.subarray(r * K, (r + b) * K), b);
    r += b;
  }
  assert.equal(r, rows);
  assert.equal(acc.nsamples, rows);
  const H = acc.H;
  for (let i = 0; i < K; i++)
    for (let j = 0; j < K; j++) {
      let s = 0;
      for (let t = 0; t < rows; t++) s += X[t * K + i] * X[t * K + j];
      const want = (2 / rows) * s;
      assert.ok(Math.abs(H[i * K + j] - want) < 1e-12 * (1 + Math.abs(want)), `(${i},${j})`);
    }
});

test("HessianAccumulator refuses mismatched or non-finite input", () => {
  const acc = new HessianAccumulator(4);
  assert.throws(() => acc.add(new Float32Array(7), 2), GptqError);
  assert.throws(() => acc.add(Float32Array.from([1, 2, Infinity, 4]), 1), /non-finite/);
  assert.throws(() => new HessianAccumulator(0), GptqError);
});
