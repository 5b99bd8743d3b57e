import { test } from "node:test";
import assert from "node:assert/strict";
import { WeightRows, gemmNT, gemmNTRows, gemmNTScalar } from "../../../src/backend/cpu/gemm.js";
import { useWasm, wasmGemm } from "../../../src/backend/cpu/wasm-gemm.js";

function rand(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

type Kernel = typeof gemmNTScalar;

/** gemmNTRows fed by a producer of W's rows, with the SIMD kernel on or off */
const viaRows =
  (wasm: boolean): Kernel =>
  (x, xOff, xStride, rows, w, wStride, N, kLen, out, accumulate) => {
    const weights: WeightRows = (dst, off, stride, n0, n1) => {
      for (let n = n0; n < n1; n++)
        for (let k = 0; k < kLen; k++) dst[off + (n - n0) * stride + k] = w[n * wStride + k];
    };
    useWasm(wasm);
    try {
      gemmNTRows(x, xOff, xStride, rows, weights, N, kLen, out, accumulate);
    } finally {
      useWasm(true);
    }
  };

const KERNELS: Record<string, Kernel> = {
  "WebAssembly SIMD": gemmNT,
  scalar: gemmNTScalar,
  "produced rows, WebAssembly SIMD": viaRows(true),
  "produced rows, scalar": viaRows(false),
};

test("the WebAssembly SIMD kernel is available on Node 20", () => {
  assert.ok(process.env.GPTQ_NO_WASM || wasmGemm(), "WebAssembly SIMD failed to validate");
});

for (const [name, kernel] of Object.entries(KERNELS))
  test(`${name} gemmNT: offsets, strides, ragged rows/columns/K, row chunks, slabs, accumulate`, () => {
    // [rows, N, kLen, extra x stride, extra w stride, x offset]
    const cases = [
      [1, 1, 1, 0, 0, 0],
      [3, 5, 7, 2, 1, 3],
      [4, 2, 8, 0, 0, 0],
      [9, 17, 66, 5, 3, 11],
      [300, 7, 13, 0, 2, 1], // more than one 256-row chunk
      [6, 41, 2100, 4, 0, 0], // more than one slab of W
      [5, 3, 0, 1, 0, 0], // empty dot products
    ];
    for (const [rows, N, kLen, xe, we, xOff] of cases) {
      const xStride = kLen + xe;
      const wStride = kLen + we;
      const x = rand(xOff + rows * xStride, rows + N);
      const w = rand(N * wStride, kLen + 1);
      const base = rand(rows * N, 5);
      for (const accumulate of [false, true]) {
        const out = Float32Array.from(base);
        kernel(x, xOff, xStride, rows, w, wStride, N, kLen, out, accumulate);
        for (let r = 0; r < rows; r++)
          for (let n = 0; n < N; n++) {
            let s = accumulate ? base[r * N + n] : 0;
            let mag = Math.abs(s);
            for (let k = 0; k < kLen; k++) {
              const p = x[xOff + r * xStride + k] * w[n * wStride + k];
              s += p;
              mag += Math.abs(p);
            }
            const err = Math.abs(out[r * N + n] - s);
            // fp32 partial sums: error within a few ulps of the sum of magnitudes
            assert.ok(
              err <= 4e-7 * Math.sqrt(kLen + 1) * mag + 1e-30,
              `${rows}x${kLen}->${N} r=${r} n=${n} acc=${accumulate}: ${err}`,
            );
          }
      }
    }
  });

test("in-place kernels: fp32 products subtracted from fp32, and subtracted from or added to fp64 outputs", () => {
  const k = wasmGemm();
  if (!k) return;
  const [rows, cols, K, outCols] = [8, 6, 12, 10]; // outCols > cols: strided output rows
  const x = rand(rows * K, 1);
  const w = rand(cols * K, 2);
  const mem = new Float32Array(k.memory.buffer);
  const [xAt, wAt, oAt] = [0, rows * K, rows * K + cols * K]; // in floats; oAt is a multiple of 2
  mem.set(x, xAt);
  mem.set(w, wAt);
  const dot = (r: number, n: number) => {
    let s = 0;
    for (let t = 0; t < K; t++) s += x[r * K + t] * w[n * K + t];
    return s;
  };
  const call = (fn: typeof k.gemm, bytes: number) =>
    fn(4 * xAt, 4 * K, rows, 4 * wAt, 4 * K, cols, 4 * K, 4 * oAt, bytes * outCols);
  const start = rand(rows * outCols, 3);
  for (const [name, fn, sign, bytes] of [
    ["gemmSub", k.gemmSub, -1, 4],
    ["gemmSubInto64", k.gemmSubInto64, -1, 8],
    ["gemmAddInto64", k.gemmAddInto64, 1, 8],
  ] as const) {
    const view = bytes === 8 ? new Float64Array(k.memory.buffer) : new Float32Array(k.memory.buffer);
    const at = (4 * oAt) / bytes;
    view.set(start, at);
    call(fn, bytes);
    for (let r = 0; r < rows; r++)
      for (let n = 0; n < outCols; n++) {
        const want = start[r * outCols + n] + (n < cols ? sign * dot(r, n) : 0);
        const got = view[at + r * outCols + n];
        assert.ok(Math.abs(got - want) < 1e-5, `${name} [${r}, ${n}]: ${got} vs ${want}`);
      }
  }
});
