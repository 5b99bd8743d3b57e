/** ONNX Runtime's MatMulNBits/MatMul, built from our layers, against our CPU layers (skipped without onnxruntime-node). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { DenseLinear, QuantLinear } from "../../../src/backend/cpu/linear.js";
import {
  OrtLinear,
  denseGraph,
  loadOrt,
  nbitsBlockSize,
  nbitsGraph,
  ortMissing,
} from "../../../src/backend/cpu/ort.js";
import { Bits, QuantizedLinear, numGroups } from "../../../src/formats/types.js";

const skip = loadOrt() ? false : `SKIPPED: ${ortMissing()}`;
if (skip) console.warn(skip);

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

function layer(
  K: number,
  N: number,
  bits: Bits,
  groupSize: number,
  actOrder: boolean,
  asym: boolean,
  seed: number,
): QuantizedLinear {
  const r = rng(seed);
  const G = numGroups(K, groupSize);
  const gs = groupSize === -1 ? K : groupSize;
  const levels = 2 ** bits;
  const gIdx = Int32Array.from({ length: K }, (_, k) => Math.floor(k / gs));
  if (actOrder)
    for (let i = K - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [gIdx[i], gIdx[j]] = [gIdx[j], gIdx[i]];
    }
  return {
    inFeatures: K,
    outFeatures: N,
    bits,
    groupSize,
    codes: Uint8Array.from({ length: K * N }, () => Math.floor(r() * levels)),
    scales: Float32Array.from({ length: G * N }, () => 0.01 + 0.02 * r()),
    zeros: Uint8Array.from({ length: G * N }, () => (asym ? Math.floor(r() * levels) : levels / 2)),
    gIdx,
    bias: asym ? Float32Array.from({ length: N }, r) : undefined,
  };
}

function relDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(a[i]));
  }
  return d / m;
}

test(
  "MatMulNBits computes what QuantLinear does: bits 2/4/8, groups 32..-1, act-order, zero points, bias",
  { skip },
  async () => {
    const cases: [number, number, Bits, number, boolean, boolean][] = [
      [256, 96, 4, 128, false, false],
      [256, 96, 4, 64, true, true],
      [200, 64, 8, 32, true, true], // K not a multiple of the block
      [256, 64, 2, -1, false, true], // one group over K: its scale repeated per block
      [384, 40, 4, 96, false, false], // group 96 in blocks of 32
    ];
    for (const [i, [K, N, bits, gs, act, asym]] of cases.entries()) {
      const q = layer(K, N, bits, gs, act, asym, i + 1);
      const x = Float32Array.from({ length: 3 * K }, rng(50 + i));
      const ort = await OrtLinear.create(nbitsGraph(q, 0), K, N, 2);
      const d = relDiff(new QuantLinear(q).forward(x, 3), ort.forward(x, 3));
      assert.ok(d < 1e-5, `${bits}-bit g${gs}${act ? " act-order" : ""}: ${d}`);
      ort.dispose();
    }
  },
);

test("MatMul computes what DenseLinear does", { skip }, async () => {
  const r = rng(9);
  const [K, N] = [70, 33];
  const w = Float32Array.from({ length: N * K }, r);
  const bias = Float32Array.from({ length: N }, r);
  const x = Float32Array.from({ length: 4 * K }, r);
  const ort = await OrtLinear.create(denseGraph(w, N, K, bias), K, N, 1);
  assert.ok(relDiff(new DenseLinear(w, N, K, bias).forward(x, 4), ort.forward(x, 4)) < 1e-6);
});

test("layers MatMulNBits cannot hold are named, not mis-packed", () => {
  assert.equal(nbitsBlockSize(layer(256, 8, 3, 128, false, false, 1)), undefined);
  assert.equal(nbitsBlockSize(layer(200, 8, 4, 40, false, false, 1)), undefined); // groups of 40: no block of 16
  assert.equal(nbitsBlockSize(layer(256, 8, 4, 128, true, false, 1)), 128);
  assert.throws(() => nbitsGraph(layer(256, 8, 3, 128, false, false, 1), 0), /3-bit, group 128/);
});
