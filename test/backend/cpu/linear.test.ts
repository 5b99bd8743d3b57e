import { test } from "node:test";
import assert from "node:assert/strict";
import { A8W4Linear, DenseLinear, QuantLinear } from "../../../src/backend/cpu/linear.js";
import { quantizePerToken } from "../../../src/backend/cpu/a8w4.js";
import { useWasm } from "../../../src/backend/cpu/wasm-gemm.js";
import { Tensor } from "../../../src/tensor/tensor.js";
import { floatsToBf16s, floatsToHalfs } from "../../../src/tensor/dtype.js";
import { Bits, QuantizedLinear, numGroups } from "../../../src/formats/types.js";

/** registers the test twice: with the WebAssembly SIMD kernels and with the scalar code */
function bothKernels(name: string, fn: () => void): void {
  for (const wasm of [true, false])
    test(`${name} (${wasm ? "WebAssembly SIMD" : "scalar"})`, () => {
      useWasm(wasm);
      try {
        fn();
      } finally {
        useWasm(true);
      }
    });
}

/** deterministic pseudo-random numbers in [0, 1) */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() + r() + r() - 1.5) * scale);
}

/** y = x W^T + b in float64, W given as a function of (n, k) */
function reference(
  x: Float32Array,
  rows: number,
  K: number,
  N: number,
  w: (n: number, k: number) => number,
  bias?: Float32Array,
): Float64Array {
  const y = new Float64Array(rows * N);
  for (let r = 0; r < rows; r++)
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n] : 0;
      for (let k = 0; k < K; k++) s += x[r * K + k] * w(n, k);
      y[r * N + n] = s;
    }
  return y;
}

function maxRelErr(got: Float32Array, want: Float64Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num = Math.max(num, Math.abs(got[i] - want[i]));
    den = Math.max(den, Math.abs(want[i]));
  }
  return num / den;
}

function randomQuantized(
  K: number,
  N: number,
  bits: Bits,
  groupSize: number,
  opts: { actOrder?: boolean; sym?: boolean; bias?: boolean; seed: number },
): QuantizedLinear {
  const r = rng(opts.seed);
  const G = numGroups(K, groupSize);
  const gs = groupSize === -1 ? K : groupSize;
  const max = 2 ** bits;
  const codes = Uint8Array.from({ length: K * N }, () => Math.floor(r() * max));
  const scales = Float32Array.from({ length: G * N }, () => 0.01 + r() * 0.05);
  const zeros = Uint8Array.from({ length: G * N }, () => (opts.sym ? max / 2 : Math.floor(r() * max)));
  const gIdx = Int32Array.from({ length: K }, (_, k) => Math.floor(k / gs));
  if (opts.actOrder)
    for (let i = K - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [gIdx[i], gIdx[j]] = [gIdx[j], gIdx[i]];
    }
  const bias = opts.bias ? randn(N, opts.seed + 1) : undefined;
  return { inFeatures: K, outFeatures: N, bits, groupSize, codes, scales, zeros, gIdx, bias };
}

function dequantAt(q: QuantizedLinear): (n: number, k: number) => number {
  const N = q.outFeatures;
  return (n, k) => {
    const g = q.gIdx[k];
    return q.scales[g * N + n] * (q.codes[k * N + n] - q.zeros[g * N + n]);
  };
}

bothKernels("DenseLinear matches a float64 reference on ragged shapes, with bias", () => {
  for (const [rows, K, N] of [
    [1, 1, 1],
    [3, 5, 7],
    [4, 64, 2],
    [9, 172, 64],
    [17, 300, 1100], // more than one column slab
  ]) {
    const W = randn(N * K, rows + K);
    const b = randn(N, 3);
    const x = randn(rows * K, 7 + N);
    const got = new DenseLinear(W, N, K, b).forward(x, rows);
    const want = reference(x, rows, K, N, (n, k) => W[n * K + k], b);
    assert.ok(maxRelErr(got, want) < 1e-6, `${rows}x${K}->${N}`);
  }
  assert.throws(() => new DenseLinear(new Float32Array(6), 2, 4), /expected 2 x 4/);
  assert.throws(
    () => new DenseLinear(new Float32Array(8), 2, 4).forward(new Float32Array(7), 2),
    /not 2 rows of 4/,
  );
});

bothKernels("QuantLinear equals the float64 product with the dequantized weight", () => {
  const cases: [number, number, Bits, number, boolean, boolean][] = [
    [64, 32, 4, 32, false, false],
    [172, 64, 4, 64, true, false], // act-order, partial last group
    [288, 40, 3, 256, false, true],
    [96, 24, 8, -1, false, false],
    [130, 16, 2, 16, true, true],
  ];
  for (const [K, N, bits, gs, actOrder, bias] of cases) {
    const q = randomQuantized(K, N, bits, gs, { actOrder, bias, seed: K * N });
    const layer = new QuantLinear(q);
    for (const rows of [1, 3, 6]) {
      // fewer than 4 rows take the decode path (no dequantized block)
      const x = randn(rows * K, K + rows);
      const got = layer.forward(x, rows);
      const want = reference(x, rows, K, N, dequantAt(q), q.bias);
      assert.ok(
        maxRelErr(got, want) < 1e-6,
        `rows=${rows} K=${K} N=${N} bits=${bits} group=${gs} actOrder=${actOrder}`,
      );
    }
  }
  const q = randomQuantized(64, 8, 4, 32, { seed: 1 });
  assert.throws(() => new QuantLinear({ ...q, scales: new Float32Array(3) }), /scales has 3 values/);
  assert.throws(() => new QuantLinear({ ...q, gIdx: new Int32Array(64).fill(5) }), /g_idx\[0\] = 5/);
});

/** the per-token int8 parameters, written out independently in float64 with torch's fp32 roundings */
function tokenParams(row: Float32Array): { scale: number; zero: number; codes: number[] } {
  const f = Math.fround;
  const rte = (v: number) => {
    const fl = Math.floor(v);
    const d = v - fl;
    return d > 0.5 || (d === 0.5 && fl % 2 !== 0) ? fl + 1 : fl;
  };
  const min = Math.min(0, ...row);
  const max = Math.max(0, ...row);
  const scale = Math.max(f(f(max - min) / 255), 2 ** -23);
  const zero = Math.min(127, Math.max(-128, -128 - rte(f(min / scale))));
  const inv = f(1 / scale);
  const codes = [...row].map((v) => Math.min(127, Math.max(-128, rte(f(v * inv)) + zero)));
  return { scale, zero, codes };
}

test("a DenseLinear built from a stored fp16/bf16/fp32 tensor keeps it until the fp32 weight is asked for", () => {
  const N = 3;
  const K = 5;
  const values = Float32Array.from({ length: N * K }, (_, i) => (i - 7) / 8); // exact in fp16 and bf16
  const stored: Tensor[] = [
    { dtype: "F16", shape: [N, K], data: floatsToHalfs(values) },
    { dtype: "BF16", shape: [N, K], data: floatsToBf16s(values) },
    { dtype: "F32", shape: [N, K], data: values.slice() },
  ];
  const x = Float32Array.from({ length: 2 * K }, (_, i) => Math.sin(i));
  const want = new DenseLinear(values, N, K).forward(x, 2);
  for (const t of stored) {
    const l = new DenseLinear(t, N, K);
    assert.equal(l.stored, t, `${t.dtype}: kept as stored`);
    assert.deepEqual([...l.weight], [...values], `${t.dtype}: widened`);
    assert.equal(l.stored, undefined, `${t.dtype}: dropped once widened`);
    assert.deepEqual([...l.forward(x, 2)], [...want]);
  }
  assert.throws(() => new DenseLinear(stored[0], N, K + 1), /weight has 15 values, expected 3 x 6/);
});

test("per-token int8 quantization follows torchao's asymmetric rule", () => {
  const K = 50;
  const x = randn(4 * K, 11);
  x[K] = 0.75; // a row whose range ends exactly on a value
  for (let k = 0; k < K; k++) x[3 * K + k] = Math.abs(x[3 * K + k]); // all positive: min widened to 0
  const tq = quantizePerToken(x, 4, K);
  for (let r = 0; r < 4; r++) {
    const p = tokenParams(x.subarray(r * K, (r + 1) * K));
    assert.equal(tq.scale[r], Math.fround(p.scale));
    assert.equal(tq.zero[r], p.zero);
    assert.deepEqual([...tq.q.subarray(r * K, (r + 1) * K)], p.codes);
    for (let k = 0; k < K; k++) {
      const err = Math.abs(tq.scale[r] * (tq.q[r * K + k] - tq.zero[r]) - x[r * K + k]);
      assert.ok(err <= tq.scale[r] * 0.5 + 1e-7, `row ${r} col ${k}: error ${err}`);
    }
  }
  assert.equal(quantizePerToken(new Float32Array(3), 1, 3).zero[0], -128); // all-zero row stays exact
});

/** float64 result of the exact operands A8W4 uses, and the fp result with the same int4 weights */
function a8w4Reference(
  x: Float32Array,
  rows: number,
  K: number,
  N: number,
  wq: (n: number, k: number) => number,
  bias?: Float32Array,
): { exact: Float64Array; fp: Float64Array; bound: Float64Array } {
  const exact = new Float64Array(rows * N);
  const fp = reference(x, rows, K, N, wq, bias);
  const bound = new Float64Array(rows * N);
  for (let r = 0; r < rows; r++) {
    const p = tokenParams(x.subarray(r * K, (r + 1) * K));
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n] : 0;
      let absW = 0;
      for (let k = 0; k < K; k++) {
        s += p.scale * (p.codes[k] - p.zero) * wq(n, k);
        absW += Math.abs(wq(n, k));
      }
      exact[r * N + n] = s;
      bound[r * N + n] = p.scale * absW; // each activation moves by at most one step
    }
  }
  return { exact, fp, bound };
}

bothKernels(
  "A8W4Linear from a symmetric 4-bit layer: exact integer dot products, bounded error vs fp",
  () => {
    for (const [K, N, gs, actOrder, rows] of [
      [288, 24, 256, false, 5], // K not a multiple of the group: zero-padded
      [128, 16, 32, true, 5],
      [64, 8, -1, false, 5],
      [172, 13, -1, false, 3], // a group of 172: not a whole number of 8-wide vectors
      [40, 6, 20, false, 261], // more than one chunk of rows
    ] as [number, number, number, boolean, number][]) {
      const q = randomQuantized(K, N, 4, gs, { sym: true, actOrder, bias: true, seed: K + N });
      const layer = A8W4Linear.fromQuantized(q);
      const x = randn(rows * K, 5 * K);
      const got = layer.forward(x, rows);
      const { exact, fp, bound } = a8w4Reference(x, rows, K, N, dequantAt(q), q.bias);
      assert.ok(maxRelErr(got, exact) < 1e-6, `K=${K} group=${gs}: vs exact operands`);
      for (let i = 0; i < got.length; i++)
        assert.ok(
          Math.abs(got[i] - fp[i]) <= bound[i] + 1e-5,
          `K=${K} group=${gs}: output ${i} too far from fp`,
        );
    }
    const asym = randomQuantized(64, 8, 4, 32, { seed: 3 });
    assert.throws(() => A8W4Linear.fromQuantized(asym), /symmetric/);
    assert.throws(
      () => A8W4Linear.fromQuantized({ ...randomQuantized(64, 8, 3, 32, { seed: 3, sym: true }) }),
      /4-bit/,
    );
  },
);

bothKernels("A8W4Linear.fromWeight quantizes groups with scale max|w| / 7.5", () => {
  const K = 288;
  const N = 12;
  const gs = 256;
  const W = randn(N * K, 99);
  const layer = A8W4Linear.fromWeight(W, N, K, gs);
  assert.equal(layer.paddedK, 512);
  const wq = (n: number, k: number) => layer.scales[n * 2 + Math.floor(k / gs)] * layer.codes[n * 512 + k];
  for (let n = 0; n < N; n++)
    for (let g = 0; g < 2; g++) {
      const ks = [...Array(Math.min(gs, K - g * gs)).keys()].map((i) => g * gs + i);
      const amax = Math.max(...ks.map((k) => Math.abs(W[n * K + k])));
      const s = layer.scales[n * 2 + g];
      assert.ok(Math.abs(s - amax / 7.5) <= 1e-7 * amax);
      for (const k of ks) {
        assert.ok(layer.codes[n * 512 + k] >= -8 && layer.codes[n * 512 + k] <= 7);
        assert.ok(Math.abs(wq(n, k) - W[n * K + k]) <= s / 2 + 1e-7, `n=${n} k=${k}`);
      }
      for (let k = K; k < 512; k++) assert.equal(layer.codes[n * 512 + k], 0);
    }
  const rows = 3;
  const x = randn(rows * K, 4);
  const { exact } = a8w4Reference(x, rows, K, N, wq);
  assert.ok(maxRelErr(layer.forward(x, rows), exact) < 1e-6);
});

test("A8W4Linear.toQuantized gives back the symmetric 4-bit layer it was built from", () => {
  for (const actOrder of [false, true]) {
    const q = randomQuantized(288, 16, 4, 256, { sym: true, actOrder, bias: true, seed: 5 });
    const back = A8W4Linear.fromQuantized(q).toQuantized();
    assert.deepEqual(back, q);
  }
});

test("QuantLinear.toQuantized gives back the layer it was built from", () => {
  for (const actOrder of [false, true])
    for (const bits of [3, 4] as Bits[]) {
      const q = randomQuantized(160, 24, bits, 32, { sym: false, actOrder, bias: true, seed: 9 });
      assert.deepEqual(new QuantLinear(q).toQuantized(), q);
    }
});
