import { test } from "node:test";
import assert from "node:assert/strict";
import { tokenNll } from "../../src/model/perplexity.js";

test("tokenNll is -log softmax, stable for large logits", () => {
  const l = new Float32Array([1, 2, 3, 0.5]);
  const z = Math.exp(1) + Math.exp(2) + Math.exp(3) + Math.exp(0.5);
  assert.ok(Math.abs(tokenNll(l, 0, 4, 2) - -Math.log(Math.exp(3) / z)) < 1e-12);
  assert.ok(
    Math.abs(tokenNll(l, 1, 3, 0) - -Math.log(Math.exp(2) / (Math.exp(2) + Math.exp(3) + Math.exp(0.5)))) <
      1e-12,
  );
  // exp(1000) overflows float64; the max-shifted sum does not
  const big = new Float32Array([1000, 1001]);
  assert.ok(Math.abs(tokenNll(big, 0, 2, 0) - Math.log(1 + Math.E)) < 1e-9);
});
