import { test } from "node:test";
import assert from "node:assert/strict";
import { choleskyLowerInPlace, upperCholeskyOfInverse } from "../../src/tensor/linalg.js";
import { gaussian, rng } from "../quant/data.js";
import { inverse } from "../quant/reference.js";

/** A^T A / m + eps I: symmetric positive definite with a spread of eigenvalues. */
function spd(n: number, seed: number, eps = 1e-3): Float64Array {
  const g = gaussian(rng(seed));
  const m = n + 5;
  const a = Array.from({ length: m * n }, () => g());
  const h = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let r = 0; r < m; r++) s += a[r * n + i] * a[r * n + j];
      h[i * n + j] = s / m + (i === j ? eps : 0);
    }
  return h;
}

test("choleskyLowerInPlace: L L^T reproduces A (sizes not a multiple of the 4-row block)", () => {
  for (const n of [1, 2, 5, 37]) {
    const a = spd(n, n);
    const l = Float64Array.from(a);
    assert.equal(choleskyLowerInPlace(l, n), true);
    for (let i = 0; i < n; i++)
      for (let j = 0; j <= i; j++) {
        let s = 0;
        for (let k = 0; k <= j; k++) s += l[i * n + k] * l[j * n + k];
        assert.ok(Math.abs(s - a[i * n + j]) < 1e-12 * (1 + Math.abs(a[i * n + j])), `n=${n} (${i},${j})`);
      }
  }
});

test("choleskyLowerInPlace refuses matrices that are not positive definite", () => {
  const indefinite = Float64Array.from([1, 2, 2, 1]);
  assert.equal(choleskyLowerInPlace(indefinite, 2), false);
  // rank one: x x^T
  const x = [1, 2, 3];
  const singular = Float64Array.from({ length: 9 }, (_, i) => x[Math.floor(i / 3)] * x[i % 3]);
  assert.equal(choleskyLowerInPlace(singular, 3), false);
});

test("upperCholeskyOfInverse: upper-triangular U with U^T U = H^-1 (checked against Gauss-Jordan)", () => {
  for (const n of [3, 6, 41]) {
    const h = spd(n, 100 + n);
    const before = Float64Array.from(h);
    const u = upperCholeskyOfInverse(h, n);
    assert.ok(u);
    assert.deepEqual(h, before, "input untouched");
    const inv = inverse(h, n);
    for (let i = 0; i < n; i++) {
      assert.ok(u[i * n + i] > 0);
      for (let j = 0; j < i; j++) assert.equal(u[i * n + j], 0);
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += u[k * n + i] * u[k * n + j];
        const want = inv[i * n + j];
        assert.ok(
          Math.abs(s - want) < 1e-9 * (1 + Math.abs(inv[i * n + i])),
          `n=${n} (${i},${j}) ${s} vs ${want}`,
        );
      }
    }
  }
  assert.equal(upperCholeskyOfInverse(Float64Array.from([1, 2, 2, 1]), 2), undefined);
});
