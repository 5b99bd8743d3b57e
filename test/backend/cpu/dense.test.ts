/** The dense steps on the thread pool against the serial code they replace. */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ParallelCross,
  ParallelHessian,
  parallelGemmNT,
  parallelGptqSteps,
  refitSystemsParallel,
  searchRowsParallel,
  upperCholeskyOfInverseParallel,
} from "../../../src/backend/cpu/dense.js";
import { ThreadPool, setThreads, shared, threadPool } from "../../../src/backend/cpu/pool.js";
import { HessianAccumulator, gptqQuantize } from "../../../src/quant/index.js";
import { CrossAccumulator } from "../../../src/quant/fp-target.js";
import { cpuGptqBackend } from "../../../src/quant/gptq.js";
import { refitSystems } from "../../../src/quant/refit.js";
import { upperCholeskyOfInverse } from "../../../src/tensor/linalg.js";
import { findParams, resolveQuantizer } from "../../../src/quant/quantizer.js";
import { availableParallelism } from "node:os";

function randn(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const u = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  return Float32Array.from({ length: n }, () => u() + u() + u() - 1.5);
}

/** largest |a - b| relative to the largest |a| */
function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(a[i]));
  }
  return d / m;
}

/** runs fn with 3 threads (more workers than parts of some jobs, and than cores here), then restores */
function withThreads(n: number, fn: () => void): void {
  setThreads(n);
  try {
    fn();
  } finally {
    setThreads(availableParallelism());
  }
}

const K = 301; // crosses the 256-column blocks, odd, not a multiple of 4

test("ParallelHessian accumulates what HessianAccumulator does up to float32 rounding (odd batches, odd K)", () => {
  withThreads(3, () => {
    assert.equal(threadPool().threads, 3);
    const x = randn(777 * K, 1);
    const a = new HessianAccumulator(K);
    const b = new ParallelHessian(K);
    for (const [r0, r1] of [
      [0, 5],
      [5, 300],
      [300, 777],
    ]) {
      a.add(x.subarray(r0 * K, r1 * K), r1 - r0);
      b.add(x.subarray(r0 * K, r1 * K), r1 - r0);
    }
    assert.equal(b.nsamples, 777);
    // float32 products per panel of rows, summed in float64
    assert.ok(relDiff(a.H, b.H) < 1e-6, `${relDiff(a.H, b.H)}`);
  });
});

test("ParallelCross accumulates what CrossAccumulator does up to float32 rounding (odd batches, odd K)", () => {
  withThreads(3, () => {
    const f = randn(777 * K, 3);
    const q = Float32Array.from(f, (v, i) => v + 0.1 * Math.sin(i)); // the quantized path drifted
    const a = new CrossAccumulator(K);
    const b = new ParallelCross(K);
    for (const [r0, r1] of [
      [0, 5],
      [5, 300],
      [300, 777],
    ]) {
      a.add(f.subarray(r0 * K, r1 * K), q.subarray(r0 * K, r1 * K), r1 - r0);
      b.add(f.subarray(r0 * K, r1 * K), q.subarray(r0 * K, r1 * K), r1 - r0);
      assert.ok(relDiff(a.C, b.C) < 1e-6, `after ${r1} rows: ${relDiff(a.C, b.C)}`);
    }
    // not symmetric: C[i, j] = 2/n sum f[r, i] q[r, j]
    assert.ok(Math.abs(b.C[1] - b.C[K]) > 1e-3 * Math.abs(b.C[0]));
  });
});

test("upperCholeskyOfInverseParallel matches the serial factor, and refuses a singular matrix", () => {
  const acc = new HessianAccumulator(K);
  acc.add(randn(400 * K, 2), 400);
  const h = Float64Array.from(acc.H);
  for (let i = 0; i < K; i++) h[i * K + i] += 0.01;
  const u = upperCholeskyOfInverseParallel(h, K);
  assert.ok(u);
  // float32 products in the trailing updates: float32 rounding of the float64 factor
  const diff = relDiff(upperCholeskyOfInverse(h, K)!, u);
  assert.ok(diff < 1e-6, `${diff}`);
  // rank 100 < K: positive semi-definite only
  const low = new HessianAccumulator(K);
  low.add(randn(100 * K, 3), 100);
  assert.equal(upperCholeskyOfInverseParallel(low.H, K), undefined);
});

test("GPTQ with the parallel steps: the serial codes up to rounding-boundary flips, the same loss", () => {
  const N = 130;
  const acc = new HessianAccumulator(K);
  acc.add(randn(600 * K, 4), 600);
  const W = randn(N * K, 5);
  for (const opts of [
    { bits: 4 as const, groupSize: 64, sym: true, descAct: true },
    { bits: 3 as const, groupSize: -1, sym: false, blockSize: 50 },
  ]) {
    const a = gptqQuantize(W, N, K, acc.H, opts);
    const b = gptqQuantize(W, N, K, acc.H, { ...opts, backend: cpuGptqBackend(parallelGptqSteps()) });
    let same = 0;
    for (let i = 0; i < a.layer.codes.length; i++) if (a.layer.codes[i] === b.layer.codes[i]) same++;
    assert.ok(same / a.layer.codes.length > 0.999, `${same} of ${a.layer.codes.length}`);
    assert.ok(Math.abs(a.loss - b.loss) < 1e-4 * a.loss, `${a.loss} vs ${b.loss}`);
    assert.deepEqual([...a.layer.gIdx], [...b.layer.gIdx]);
  }
});

test("the refit's normal equations on the pool equal refitSystems' (groups interleaved, one empty; H w reused)", () => {
  withThreads(3, () => {
    const N = 70;
    const G = 6;
    const acc = new HessianAccumulator(K);
    acc.add(randn(600 * K, 8), 600);
    const groupOf = Int32Array.from({ length: K }, (_, k) => [2, 0, 4, 1, 2, 5][(k * 7) % 6]); // no group 3
    const codes = Uint8Array.from(randn(K * N, 9), (x) => Math.floor((x + 1.5) * 5));
    const zeros = Float32Array.from(randn(G * N, 10), (x) => Math.round((x + 1.5) * 5));
    const input = {
      w: randn(K * N, 11),
      H: acc.H,
      codes,
      groupOf,
      zeros,
      scales: new Float32Array(G * N),
      N,
      K,
      G,
    };
    const want = refitSystems(input);
    const got = refitSystemsParallel(input);
    for (const part of ["A", "b", "wHw"] as const)
      assert.ok(relDiff(want[part], got[part]) < 1e-12, `${part}: ${relDiff(want[part], got[part])}`);
    // a refine round: the same H and w, other codes and groups, H w reused
    const again = {
      ...input,
      groupOf: Int32Array.from({ length: K }, (_, k) => Math.floor(k / 51)),
      codes: Uint8Array.from(randn(K * N, 14), (x) => Math.floor((x + 1.5) * 5)),
    };
    const want2 = refitSystems(again);
    const got2 = refitSystemsParallel(again, got.Hw);
    for (const part of ["A", "b", "wHw"] as const)
      assert.ok(
        relDiff(want2[part], got2[part]) < 1e-12,
        `reused H w, ${part}: ${relDiff(want2[part], got2[part])}`,
      );
  });
});

test("GPTQ with refine on the parallel steps: the serial layer up to rounding", () => {
  const N = 130;
  const acc = new HessianAccumulator(K);
  acc.add(randn(900 * K, 12), 900);
  const W = randn(N * K, 13);
  const opts = {
    bits: 3 as const,
    groupSize: 32,
    sym: false,
    descAct: true,
    clip: "hessian" as const,
    refine: 2,
  };
  const a = gptqQuantize(W, N, K, acc.H, opts);
  const b = gptqQuantize(W, N, K, acc.H, { ...opts, backend: cpuGptqBackend(parallelGptqSteps()) });
  let same = 0;
  for (let i = 0; i < a.layer.scales.length; i++) if (a.layer.scales[i] === b.layer.scales[i]) same++;
  assert.ok(same / a.layer.scales.length > 0.99, `${same} of ${a.layer.scales.length} scales`);
  assert.ok(relDiff(a.Q, b.Q) < 0.02, `dequantized weights apart by ${relDiff(a.Q, b.Q)}`);
});

test("parallelGemmNT splits x W^T over the pool (float64 reference), and leaves small products alone", () => {
  withThreads(3, () => {
    const [rows, k, N] = [70, 257, 300];
    const x = randn(rows * k, 6);
    const w = shared(Float32Array, N * k);
    w.set(randn(N * k, 7));
    const y = parallelGemmNT(x, rows, w, N, k);
    assert.ok(y);
    const ref = new Float64Array(rows * N);
    for (let r = 0; r < rows; r++)
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let i = 0; i < k; i++) s += x[r * k + i] * w[n * k + i];
        ref[r * N + n] = s;
      }
    assert.ok(relDiff(ref, y) < 1e-5);
    assert.equal(parallelGemmNT(x, 1, w, N, k), undefined);
  });
});

test("a failing part reports the worker's error and the pool keeps working", () => {
  withThreads(2, () => {
    // no output array: every part throws, on this thread and on the worker
    const bad = {
      c: null as unknown as Float64Array,
      cOff: 0,
      cStride: 2,
      a: new Float64Array(128),
      b: new Float64Array(4),
    };
    assert.throws(
      () =>
        threadPool().run(
          "update",
          { ...bad, m: 64, n: 2, kp: 2, alpha: 1, beta: 1, triangle: "all", single: false, job: -2 },
          4,
        ),
      /null|undefined/,
    );
    const h = new ParallelHessian(8);
    h.add(randn(8 * 3, 8), 3);
    assert.equal(h.nsamples, 3);
  });
});

test("a pool whose workers never load refuses its first job in one line instead of hanging", () => {
  const pool = new ThreadPool(3, new URL("file:///nonexistent/pool-worker.js"), 1500);
  const x = shared(Float32Array, 4 * 8);
  const w = shared(Float32Array, 16 * 8);
  const out = shared(Float32Array, 4 * 16);
  assert.throws(
    () => pool.run("dense", { x, w, out, rows: 4, K: 8, N: 16, cols: 4 }, 4),
    /2 of the CPU pool's 2 worker threads did not start within 1.5 s.*--threads 1/,
  );
});

test("the range searches with rows split over the pool find the serial search's parameters exactly", () => {
  const N = 101; // not a whole number of parts
  const cols = 48;
  const src = randn(3 + cols * N, 9); // from an offset of 3
  const weights = Float64Array.from(randn(cols, 10), (x) => 0.5 + Math.abs(x));
  withThreads(3, () => {
    for (const [clip, sym, splitRange, bits] of [
      ["hessian", true, false, 4],
      ["hessian", false, true, 3],
      ["mse", false, false, 2],
      ["mse", true, false, 8],
    ] as const) {
      const q = resolveQuantizer({ bits, groupSize: cols, sym, clip, splitRange }, 1000);
      const run = (parallel: boolean) => {
        const scale = new Float32Array(N);
        const zero = new Float32Array(N);
        findParams(
          q,
          src,
          3,
          cols,
          N,
          scale,
          zero,
          weights,
          undefined,
          parallel ? searchRowsParallel : undefined,
        );
        return [scale, zero];
      };
      const [s1, z1] = run(false);
      const [s2, z2] = run(true);
      assert.deepEqual(s2, s1, `${clip} ${sym} ${splitRange} ${bits}: scales`);
      assert.deepEqual(z2, z1, `${clip} ${sym} ${splitRange} ${bits}: zeros`);
    }
  });
});

test("GPTQ with clip hessian: the parallel steps' group parameters are the serial ones where the weights agree", () => {
  const N = 70;
  const acc = new HessianAccumulator(K);
  acc.add(randn(600 * K, 11), 600);
  const W = randn(N * K, 12);
  // static groups: every group's parameters come from the weights before any update, so both runs
  // search the same values and must agree exactly
  const opts = {
    bits: 4 as const,
    groupSize: 32,
    sym: false,
    staticGroups: true,
    clip: "hessian" as const,
    splitRange: true,
  };
  const a = gptqQuantize(W, N, K, acc.H, opts);
  const b = gptqQuantize(W, N, K, acc.H, { ...opts, backend: cpuGptqBackend(parallelGptqSteps()) });
  assert.deepEqual(b.layer.scales, a.layer.scales);
  assert.deepEqual(b.layer.zeros, a.layer.zeros);
});
