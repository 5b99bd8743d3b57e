import { test } from "node:test";
import assert from "node:assert/strict";
import { HessianAccumulator, gptqQuantize, quantizeRtn } from "../../src/quant/index.js";
import { dequantize } from "../../src/formats/dequantize.js";
import type { GptqOptions } from "../../src/quant/index.js";
import { floatToHalf, halfToFloat } from "../../src/tensor/dtype.js";
import { GptqError } from "../../src/util/errors.js";
import { llmLike, relativeOutputError } from "./data.js";
import { referenceGptq } from "./reference.js";

const N = 24;
const K = 80;
const ROWS = 400;
const W = llmLike(N, K, 21, 11, 5);
const X = llmLike(ROWS, K, 22, 9, 12);

function hessianOf(x: Float32Array, rows: number, k: number): Float64Array {
  const acc = new HessianAccumulator(k);
  for (let r = 0; r < rows; r += 128)
    acc.add(x.subarray(r * k, Math.min(r + 128, rows) * k), Math.min(128, rows - r));
  return acc.H;
}
const H = hessianOf(X, ROWS, K);

function codesAgreement(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let same = 0;
  for (let i = 0; i < a.length; i++) if (Math.abs(a[i] - b[i]) <= 1e-6 * (1 + Math.abs(b[i]))) same++;
  return same / a.length;
}

const CONFIGS: (GptqOptions & { name: string })[] = [
  { name: "4-bit sym g16", bits: 4, groupSize: 16, sym: true },
  { name: "3-bit asym g32 (partial last group)", bits: 3, groupSize: 32, sym: false },
  { name: "8-bit sym g-1", bits: 8, groupSize: -1, sym: true },
  { name: "2-bit asym act-order g16", bits: 2, groupSize: 16, sym: false, descAct: true },
  {
    name: "4-bit asym act-order static g32",
    bits: 4,
    groupSize: 32,
    sym: false,
    descAct: true,
    staticGroups: true,
  },
  {
    name: "4-bit sym act-order g-1, block 32",
    bits: 4,
    groupSize: -1,
    sym: true,
    descAct: true,
    blockSize: 32,
  },
  {
    name: "3-bit sym g24, block 16 (groups straddle blocks)",
    bits: 3,
    groupSize: 24,
    sym: true,
    blockSize: 16,
  },
];

for (const c of CONFIGS) {
  test(`GPTQ matches a plain unblocked float64 GPTQ: ${c.name}`, () => {
    const r = gptqQuantize(W, N, K, H, c);
    const ref = referenceGptq(W, N, K, H, {
      bits: c.bits,
      groupSize: c.groupSize,
      sym: c.sym,
      descAct: c.descAct ?? false,
      staticGroups: c.staticGroups ?? false,
      damp: 0.01,
      blockSize: c.blockSize ?? 128,
    });
    assert.deepEqual([...r.layer.gIdx], [...ref.gIdx]);
    // float32 working weights vs float64: a value sitting on a rounding boundary may go either way
    assert.ok(codesAgreement(r.Q, ref.Q) > 0.99, `agreement ${codesAgreement(r.Q, ref.Q)}`);
    const ours = relativeOutputError(X, ROWS, W, r.Q, N, K);
    const theirs = relativeOutputError(X, ROWS, W, ref.Q, N, K);
    assert.ok(Math.abs(ours - theirs) <= 0.01 * theirs, `${ours} vs ${theirs}`);
    assert.deepEqual([...dequantize(r.layer)], [...r.Q]);
    assert.ok(r.layer.scales.every((s) => halfToFloat(floatToHalf(s)) === s));
    assert.ok(r.layer.zeros.every((z) => z <= 2 ** c.bits - 1));
    assert.equal(r.damp, 0.01);
    assert.ok(r.loss > 0);
  });
}

test("GPTQ without groups or with static groups does not depend on the block size", () => {
  for (const o of [
    { bits: 4, groupSize: -1, sym: true },
    { bits: 3, groupSize: 16, sym: false, descAct: true, staticGroups: true },
  ] as GptqOptions[]) {
    const base = gptqQuantize(W, N, K, H, { ...o, blockSize: K });
    for (const blockSize of [1, 7, 128]) {
      const r = gptqQuantize(W, N, K, H, { ...o, blockSize });
      assert.ok(codesAgreement(r.Q, base.Q) > 0.995, `block ${blockSize}`);
      assert.ok(Math.abs(r.loss - base.loss) < 0.01 * base.loss);
    }
  }
});

test("GPTQ beats round-to-nearest on the output error it minimises", () => {
  for (const o of [
    { bits: 4, groupSize: 16, sym: true },
    { bits: 3, groupSize: -1, sym: false },
  ] as GptqOptions[]) {
    const g = relativeOutputError(X, ROWS, W, gptqQuantize(W, N, K, H, o).Q, N, K);
    const r = relativeOutputError(X, ROWS, W, dequantize(quantizeRtn(W, N, K, o)), N, K);
    assert.ok(g < 0.95 * r, `gptq ${g} rtn ${r}`);
  }
});

test("GPTQ dead columns (never-active inputs) quantize to exactly 0 and leave the rest sane", () => {
  const x = Float32Array.from(X);
  const dead = [0, 5, 41, 79];
  for (let r = 0; r < ROWS; r++) for (const k of dead) x[r * K + k] = 0;
  const h = hessianOf(x, ROWS, K);
  for (const descAct of [false, true]) {
    const r = gptqQuantize(W, N, K, h, { bits: 4, groupSize: 16, sym: false, descAct });
    for (let n = 0; n < N; n++) for (const k of dead) assert.equal(r.Q[n * K + k], 0);
    assert.ok(r.Q.every(Number.isFinite));
    const rtn = dequantize(quantizeRtn(W, N, K, { bits: 4, groupSize: 16, sym: false }));
    assert.ok(relativeOutputError(x, ROWS, W, r.Q, N, K) < relativeOutputError(x, ROWS, W, rtn, N, K));
  }
});

test("GPTQ raises the damping when the Hessian cannot be factorised, and reports the value used", () => {
  // 30 rows of 80 inputs: H has rank 30, singular without damping
  const rows = 30;
  const h = hessianOf(X.subarray(0, rows * K), rows, K);
  const undamped = gptqQuantize(W, N, K, h, { bits: 4, groupSize: 16, sym: true, damp: 0 });
  assert.ok(undamped.damp > 0, `damp used ${undamped.damp}`);
  assert.ok(undamped.Q.every(Number.isFinite));
  const asked = gptqQuantize(W, N, K, h, { bits: 4, groupSize: 16, sym: true, damp: 0.01 });
  assert.equal(asked.damp, 0.01);
  assert.deepEqual(
    [...undamped.Q],
    [...gptqQuantize(W, N, K, h, { bits: 4, groupSize: 16, sym: true, damp: undamped.damp }).Q],
  );
  // an indefinite "Hessian" needs more than the default
  const bad = Float64Array.from(H);
  bad[1] = bad[K] = 3 * Math.sqrt(bad[0] * bad[K + 1]);
  const raised = gptqQuantize(W, N, K, bad, { bits: 4, groupSize: 16, sym: true });
  assert.ok(raised.damp > 0.01, `damp used ${raised.damp}`);
});

test("GPTQ refuses bad input with a GptqError and leaves its inputs untouched", () => {
  const w = Float32Array.from(W);
  const h = Float64Array.from(H);
  gptqQuantize(w, N, K, h, { bits: 4, groupSize: 16, sym: true, descAct: true });
  assert.deepEqual(w, W);
  assert.deepEqual(h, H);
  const o: GptqOptions = { bits: 4, groupSize: 16, sym: true };
  assert.throws(() => gptqQuantize(W, N, K, new Float64Array(10), o), GptqError);
  assert.throws(() => gptqQuantize(W, N, K, H, { ...o, damp: -1 }), GptqError);
  assert.throws(() => gptqQuantize(W, N, K, H, { ...o, blockSize: 0 }), GptqError);
  const neg = Float64Array.from(H);
  neg[0] = -1;
  assert.throws(() => gptqQuantize(W, N, K, neg, o), /diagonal 0/);
});

test("GPTQ freshGroups finds dynamic group parameters on the weights as updated so far", () => {
  // The plain reference with a one-column block takes a snapshot before every column, which is exactly
  // "the weights as updated so far"; groups of 24 straddle our blocks of 16.
  const o = { bits: 3 as const, groupSize: 24, sym: false };
  const r = gptqQuantize(W, N, K, H, { ...o, blockSize: 16, freshGroups: true });
  const ref = referenceGptq(W, N, K, H, {
    ...o,
    descAct: false,
    staticGroups: false,
    damp: 0.01,
    blockSize: 1,
  });
  assert.ok(codesAgreement(r.Q, ref.Q) > 0.99, `agreement ${codesAgreement(r.Q, ref.Q)}`);
  const stale = gptqQuantize(W, N, K, H, { ...o, blockSize: 16 });
  assert.ok(codesAgreement(stale.Q, ref.Q) < codesAgreement(r.Q, ref.Q));
});

test("GPTQ Hessian-aware searches use all symmetric codes on rows with no negative weight", () => {
  // AutoGPTQ keeps the range [0, 0.5] with zero point 8: scale 0.5 / 15, and the top code 15 stands for
  // 7 / 15 * 0.5. From [-0.5, 0.5], widened a little, the search finds a scale that holds 0.5 exactly.
  const w = Float32Array.from([0.5]);
  const h = Float64Array.from([1]);
  const minmax = gptqQuantize(w, 1, 1, h, { bits: 4, groupSize: -1, sym: true });
  assert.equal(minmax.layer.codes[0], 15);
  assert.ok(Math.abs(minmax.Q[0] - (7 / 15) * 0.5) < 1e-3);
  const hessian = gptqQuantize(w, 1, 1, h, { bits: 4, groupSize: -1, sym: true, clip: "hessian" });
  assert.ok(Math.abs(hessian.Q[0] - 0.5) < 1e-3, `${hessian.Q[0]}`);
});
