/**
 * GPTQ's device-side pieces against their host twins: min-max group parameters and the clip searches
 * (bit-exact but for clip "mse" with norm 2.4, whose exp and log are CUDA's, not V8's), the problem
 * prepared on the device (dead inputs, act-order, damping), the Hessian from fp16 rows already on the
 * device, dequantization and the output error; and GPTQ run wholly from device buffers against the CPU.
 * Skipped without a CUDA device.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CudaDevice, i32, ptr } from "../../../src/backend/cuda/device.js";
import { CudaHessian } from "../../../src/backend/cuda/gptq/hessian.js";
import { refitOnDevice } from "../../../src/backend/cuda/gptq/refit.js";
import {
  CudaGptqData,
  dequantizeOnDevice,
  outputErrorOnDevice,
} from "../../../src/backend/cuda/gptq/problem.js";
import { CudaGptqSweep, gptqKernel } from "../../../src/backend/cuda/gptq/sweep.js";
import { dequantize } from "../../../src/formats/dequantize.js";
import { Bits } from "../../../src/formats/types.js";
import { cudaGptqProblem } from "../../../src/pipeline/cuda-gptq.js";
import { HostProblem, gptqQuantize, gptqSolve } from "../../../src/quant/gptq.js";
import { HessianAccumulator } from "../../../src/quant/hessian.js";
import {
  Quantizer,
  findParams,
  halfScale,
  quantCode,
  resolveQuantizer,
  searchGrid,
} from "../../../src/quant/quantizer.js";
import { refitScales } from "../../../src/quant/refit.js";
import { relativeOutputError as hostOutputError } from "../../../src/quant/relative-error.js";
import { floatsToHalfs, halfsToFloats } from "../../../src/tensor/dtype.js";
import { llmLike, relativeOutputError, rng } from "../../quant/data.js";

const noGpu = CudaDevice.available() ? false : "SKIPPED: no CUDA device";
if (noGpu) console.warn(noGpu);

test("min-max group parameters found on the GPU equal findParams bit for bit", { skip: noGpu }, () => {
  const dev = CudaDevice.get();
  const N = 300;
  const K = 96;
  const w = llmLike(K, N, 21); // K x N, the working layout
  // rows of one sign and all-zero rows, the cases findParams widens or replaces
  for (let k = 0; k < K; k++) {
    w[k * N + 5] = Math.abs(w[k * N + 5]);
    w[k * N + 6] = -Math.abs(w[k * N + 6]);
    w[k * N + 7] = 0;
    w[k * N + 8] *= 1e-9;
  }
  const wd = dev.upload(w);
  for (const bits of [2, 3, 4, 8] as Bits[])
    for (const sym of [true, false]) {
      const q = resolveQuantizer({ bits, groupSize: 32, sym }, K);
      const scales = new Float32Array(3 * N);
      const zeros = new Float32Array(3 * N);
      for (let g = 0; g < 3; g++)
        findParams(q, w, g * 32 * N, 32, N, scales.subarray(g * N), zeros.subarray(g * N));
      const sd = dev.alloc(3 * N * 4);
      const zd = dev.alloc(3 * N * 4);
      for (let g = 0; g < 3; g++)
        dev.launch(gptqKernel(dev, "gptq_minmax_params"), [Math.ceil(N / 256), 1, 1], 256, 0, [
          ptr(wd),
          i32(N),
          i32(g * 32),
          i32(32),
          i32(g),
          i32(q.maxq),
          i32(sym ? 1 : 0),
          ptr(sd),
          ptr(zd),
        ]);
      assert.deepEqual(dev.download(sd, new Float32Array(3 * N)), scales, `${bits}-bit sym ${sym}: scales`);
      assert.deepEqual(dev.download(zd, new Float32Array(3 * N)), zeros, `${bits}-bit sym ${sym}: zeros`);
      dev.free(sd);
      dev.free(zd);
    }
  dev.free(wd);
});

/** Row n's error sum_k |w - q|^norm under (s, z) as findParams' "mse" search scores it. */
function rowError(
  q: Quantizer,
  w: Float32Array,
  c: number,
  cols: number,
  N: number,
  n: number,
  s: number,
  z: number,
) {
  let e = 0;
  for (let k = c; k < c + cols; k++) {
    const x = w[k * N + n];
    const d = Math.abs(s * (quantCode(x, s, z, q.maxq) - z) - x);
    e += d === 0 ? 0 : Math.exp(q.norm * Math.log(d));
  }
  return e;
}

test(
  "the clip searches on the GPU equal findParams: mse and hessian, split-range, bits 2/3/4/8, groups 16/32/128",
  { skip: noGpu },
  () => {
    const dev = CudaDevice.get();
    const N = 100; // three warps of rows and a partial one
    const K = 300; // a partial last group for every group size
    const w = llmLike(K, N, 41); // K x N, the working layout
    // rows of one sign and all-zero rows, the cases findParams widens or replaces
    for (let k = 0; k < K; k++) {
      w[k * N + 5] = Math.abs(w[k * N + 5]);
      w[k * N + 6] = -Math.abs(w[k * N + 6]);
      w[k * N + 7] = 0;
      w[k * N + 8] *= 1e-9;
    }
    const X = llmLike(600, K, 42);
    const acc = new HessianAccumulator(K);
    acc.add(X, 600);
    const data = CudaGptqData.fromHost(dev, llmLike(N, K, 43), acc.H, N, K);
    const factor = data.tryFactor(1)!; // colWeight spans a few decades, as a real factor's does
    let mseRows = 0;
    let mseDiffer = 0;
    for (const bits of [2, 3, 4, 8] as Bits[])
      for (const [sym, splitRange] of [
        [true, false],
        [false, false],
        [false, true],
      ])
        for (const [clip, norm] of [
          ["hessian", 2],
          ["mse", 2.4],
          ...(bits === 4 ? [["mse", 2] as const] : []),
        ] as const)
          for (const gs of [16, 32, 128]) {
            const name = `${bits}-bit ${sym ? "sym" : "asym"}${splitRange ? " split" : ""} ${clip} norm ${norm} g${gs}`;
            const q = resolveQuantizer({ bits, groupSize: gs, sym, clip, norm, splitRange }, K);
            const G = Math.ceil(K / gs);
            const want = { scales: new Float32Array(G * N), zeros: new Float32Array(G * N) };
            const got = { scales: new Float32Array(G * N), zeros: new Float32Array(G * N) };
            const sweep = new CudaGptqSweep(dev, factor, w, N, G);
            const search = { ...searchGrid(q), maxq: q.maxq, sym, clip, norm, splitRange };
            for (let g = 0; g < G; g++) {
              const c = g * gs;
              const cols = Math.min(gs, K - c);
              const [s, z] = [want.scales.subarray(g * N), want.zeros.subarray(g * N)];
              findParams(q, w, c * N, cols, N, s, z, factor.colWeight.subarray(c, c + cols));
              sweep.searchParams(c, cols, g, search);
            }
            sweep.getParams(got.scales, got.zeros, 0, G - 1);
            sweep.dispose();
            if (norm === 2) {
              assert.deepEqual(got.scales, want.scales, `${name}: scales`);
              assert.deepEqual(got.zeros, want.zeros, `${name}: zeros`);
              continue;
            }
            // CUDA's exp and log may differ from V8's in the last bit: a different pick must score the same
            for (let g = 0; g < G; g++)
              for (let n = 0; n < N; n++) {
                const i = g * N + n;
                mseRows++;
                if (got.scales[i] === want.scales[i] && got.zeros[i] === want.zeros[i]) continue;
                mseDiffer++;
                const c = g * gs;
                const cols = Math.min(gs, K - c);
                const eGot = rowError(q, w, c, cols, N, n, got.scales[i], got.zeros[i]);
                const eWant = rowError(q, w, c, cols, N, n, want.scales[i], want.zeros[i]);
                assert.ok(
                  Math.abs(eGot - eWant) <= 1e-12 * eWant,
                  `${name}, group ${g} row ${n}: ${eGot} against ${eWant}`,
                );
              }
          }
    assert.ok(mseDiffer <= mseRows * 0.001, `mse: ${mseDiffer} of ${mseRows} rows differ`);
    factor.dispose();
    data.dispose();
  },
);

const N = 192;
const K = 256;
const W = llmLike(N, K, 31);
const X = llmLike(1024, K, 32);
const acc = new HessianAccumulator(K);
acc.add(X, 1024);
const H = acc.H;

test(
  "the problem prepared on the GPU equals the host's: dead inputs, act-order, damping",
  { skip: noGpu },
  () => {
    const dev = CudaDevice.get();
    const h = Float64Array.from(H);
    for (const k of [3, 100]) for (let j = 0; j < K; j++) h[k * K + j] = h[j * K + k] = 0;
    const host = new HostProblem(W, h, N, K);
    const data = CudaGptqData.fromHost(dev, W, h, N, K);
    const dh = host.diagonal();
    const dd = data.diagonal();
    for (let k = 0; k < K; k++) assert.equal(dd[k], Math.fround(dh[k]));
    host.clearDead([3, 100]);
    data.clearDead([3, 100]);
    const perm = Int32Array.from({ length: K }, (_, i) => (i * 37) % K);
    host.permute(perm);
    data.permute(perm);
    assert.deepEqual(data.weights(), host.weights());
    const a = host.hessian;
    const b = data.damped(0.5);
    for (let i = 0; i < K * K; i++) {
      const want = Math.fround(a[i]) + (i % (K + 1) === 0 ? 0.5 : 0);
      assert.ok(Math.abs(b[i] - want) <= 1e-6 * Math.abs(want) + 1e-12, `H[${i}] ${b[i]} against ${want}`);
    }
    data.dispose();
  },
);

test(
  "the scale refit on the GPU equals the host's (groups in any order, rows in chunks)",
  { skip: noGpu },
  () => {
    const dev = CudaDevice.get();
    const G = 8;
    const rand = rng(41);
    // interleaved groups, one of them empty, as static groups under act-order leave them
    const groupOf = Int32Array.from({ length: K }, (_, k) => [3, 0, 5, 1, 7, 2, 0, 6][(k * 5) % 8]);
    const codes = Uint8Array.from({ length: K * N }, () => Math.floor(rand() * 16));
    const zeros = Float32Array.from({ length: G * N }, () => Math.floor(rand() * 16));
    const scales = Float32Array.from({ length: G * N }, () => halfScale(0.01 + 0.02 * rand()));
    const w = Float32Array.from({ length: K * N }, (_, i) => {
      const k = Math.floor(i / N);
      const at = groupOf[k] * N + (i % N);
      return 0.9 * scales[at] * (codes[i] - zeros[at]) + 0.003 * (rand() - 0.5);
    });
    const add = 0.25;
    const h32 = Float64Array.from(new Float32Array(H)); // the device holds H in fp32
    for (let k = 0; k < K; k++) h32[k * K + k] += add;
    const want = Float32Array.from(scales);
    const eHost = refitScales({ w, H: h32, codes, groupOf, scales: want, zeros, N, K, G });
    const hd = dev.upload(new Float32Array(H));
    // all rows at once, and in chunks of 70 rows (the last one short)
    for (const bytes of [undefined, 70 * 2 * G * G * 8]) {
      const got = Float32Array.from(scales);
      const eDev = refitOnDevice(dev, hd, add, { w, codes, groupOf, scales: got, zeros, N, K, G }, bytes);
      assert.ok(Math.abs(eDev - eHost) <= 1e-9 * eHost, `${bytes}: error ${eDev} against ${eHost}`);
      let same = 0;
      let changed = 0;
      for (let i = 0; i < got.length; i++) {
        if (got[i] === want[i]) same++;
        if (want[i] !== scales[i]) changed++;
      }
      assert.ok(changed > 0.8 * got.length, `the refit moved ${changed} of ${got.length} scales`);
      assert.ok(
        same >= 0.99 * got.length,
        `${bytes}: ${same} of ${got.length} refit scales equal the host's`,
      );
      // the empty group's scales are where they were
      for (let n = 0; n < N; n++) assert.equal(got[4 * N + n], scales[4 * N + n]);
    }
    dev.free(hd);
  },
);

test("the Hessian of fp16 rows on the device equals the CPU's of the same rows", { skip: noGpu }, () => {
  const dev = CudaDevice.get();
  const halves = floatsToHalfs(X);
  const rounded = halfsToFloats(halves);
  const cpu = new HessianAccumulator(K);
  const gpu = new CudaHessian(dev, K);
  const xd = dev.upload(halves);
  for (const [r0, r1] of [
    [0, 300],
    [300, 1024],
  ]) {
    cpu.add(rounded.subarray(r0 * K, r1 * K), r1 - r0);
    gpu.addDevice(xd.ptr + r0 * K * 2, r1 - r0);
  }
  dev.free(xd);
  const a = cpu.H;
  const b = gpu.H;
  gpu.dispose();
  let maxDiag = 0;
  for (let k = 0; k < K; k++) maxDiag = Math.max(maxDiag, a[k * K + k]);
  for (let i = 0; i < K * K; i++)
    assert.ok(Math.abs(a[i] - b[i]) <= 1e-5 * maxDiag, `H[${i}] ${b[i]} against ${a[i]}`);
});

test("dequantization and the output error on the device equal the host's", { skip: noGpu }, () => {
  const dev = CudaDevice.get();
  const r = gptqQuantize(W, N, K, H, { bits: 3, groupSize: 64, sym: false, descAct: true });
  const qd = dequantizeOnDevice(dev, r.layer);
  const q = halfsToFloats(dev.download(qd, new Uint16Array(N * K)));
  const want = dequantize(r.layer);
  for (let i = 0; i < N * K; i++) assert.equal(q[i], halfsToFloats(floatsToHalfs([want[i]]))[0]);
  const wd = dev.upload(floatsToHalfs(W));
  const w16 = halfsToFloats(floatsToHalfs(W));
  const hd = dev.upload(new Float32Array(H));
  const e = outputErrorOnDevice(dev, wd, "f16", qd, hd, N, K);
  const eHost = hostOutputError(w16, q, N, K, H);
  assert.ok(Math.abs(e - eHost) <= 1e-4 * eHost, `${e} against ${eHost}`);
  for (const b of [qd, wd, hd]) dev.free(b);
});

test(
  "GPTQ from device buffers (fp16 weight, device Hessian) within 0.5 % of the CPU path",
  { skip: noGpu },
  () => {
    const dev = CudaDevice.get();
    const w16 = halfsToFloats(floatsToHalfs(W));
    for (const opts of [
      { bits: 4 as Bits, groupSize: 64, sym: true, descAct: true },
      { bits: 3 as Bits, groupSize: 32, sym: false, staticGroups: true, descAct: true },
      { bits: 4 as Bits, groupSize: 64, sym: false, clip: "mse" as const },
    ]) {
      const cpu = gptqQuantize(w16, N, K, H, opts);
      const wd = dev.upload(floatsToHalfs(W));
      const data = CudaGptqData.fromDevice(dev, dev.upload(new Float32Array(H)), wd, "f16", N, K);
      dev.free(wd);
      const problem = cudaGptqProblem(dev, data);
      const gpu = gptqSolve(problem, opts);
      problem.dispose?.();
      const eCpu = relativeOutputError(X, 1024, w16, cpu.Q, N, K);
      const eGpu = relativeOutputError(X, 1024, w16, dequantize(gpu.layer), N, K);
      assert.ok(Math.abs(eGpu - eCpu) <= 0.005 * eCpu, `${JSON.stringify(opts)}: ${eGpu} against ${eCpu}`);
      assert.equal(gpu.damp, cpu.damp);
    }
  },
);
