/**
 * fp-target's device pieces against the host's (quant/fp-target.ts): the cross term of fp16 rows
 * accumulated by cuBLAS against CrossAccumulator's float64 sums of the same rows, and the target W* solved
 * in fp64 by cuBLAS and cuSOLVER against fpTargetWeights on the same (fp32) cross term and Hessian, on
 * LLM-like data with drifted inputs and a dead one; and GPTQ aimed at the device's W* reaching the CPU
 * path's error against the fp model's outputs within 0.5 %. Skipped without a CUDA device.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CudaDevice } from "../../../src/backend/cuda/device.js";
import { CudaCrossAccumulator, CudaFpTarget } from "../../../src/backend/cuda/gptq/fp-target.js";
import { CudaGptqData } from "../../../src/backend/cuda/gptq/problem.js";
import { dequantize } from "../../../src/formats/dequantize.js";
import { cudaGptqProblem } from "../../../src/pipeline/cuda-gptq.js";
import { GptqOptions, gptqQuantize, gptqSolve } from "../../../src/quant/gptq.js";
import { CrossAccumulator, fpTargetRidge, fpTargetWeights } from "../../../src/quant/fp-target.js";
import { HessianAccumulator } from "../../../src/quant/hessian.js";
import { floatsToHalfs, halfsToFloats } from "../../../src/tensor/dtype.js";
import { llmLike, relativeOutputError } from "../../quant/data.js";

const noGpu = CudaDevice.available() ? false : "SKIPPED: no CUDA device";
if (noGpu) console.warn(noGpu);

const N = 192;
const K = 256;
const ROWS = 1024;
const DEAD = 7;
const W = llmLike(N, K, 41);
/** the fp model's inputs */
const Xf = llmLike(ROWS, K, 42);
/**
 * the quantized path's: drifted from Xf, with a neighbour's share mixed in (so C is far from symmetric and
 * a transposed C shows) and one input that is never excited
 */
const Xq = Xf.map((v, i) => (i % K === DEAD ? 0 : v + 0.3 * Xf[i - (i % K) + ((i + 1) % K)]));

/** ||a - b|| / ||c|| */
function relativeTo(a: ArrayLike<number>, b: ArrayLike<number>, c: ArrayLike<number>): number {
  let d = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += c[i] ** 2;
  }
  return Math.sqrt(d / n);
}

test(
  "the cross term of fp16 rows on the device equals CrossAccumulator's of the same rows",
  { skip: noGpu },
  () => {
    const dev = CudaDevice.get();
    const f16 = floatsToHalfs(Xf);
    const q16 = floatsToHalfs(Xq);
    const f = halfsToFloats(f16);
    const q = halfsToFloats(q16);
    const cpu = new CrossAccumulator(K);
    const gpu = new CudaCrossAccumulator(dev, K);
    const fd = dev.upload(f16);
    const qd = dev.upload(q16);
    for (const [r0, r1] of [
      [0, 300],
      [300, ROWS],
    ]) {
      cpu.add(f.subarray(r0 * K, r1 * K), q.subarray(r0 * K, r1 * K), r1 - r0);
      gpu.addDevice(fd.ptr + r0 * K * 2, qd.ptr + r0 * K * 2, r1 - r0);
    }
    dev.free(fd);
    dev.free(qd);
    const a = cpu.C;
    const b = gpu.C;
    gpu.dispose();
    let scale = 0;
    let asymmetry = 0;
    for (let i = 0; i < K; i++)
      for (let j = 0; j < K; j++) {
        scale = Math.max(scale, Math.abs(a[i * K + j]));
        asymmetry = Math.max(asymmetry, Math.abs(a[i * K + j] - a[j * K + i]));
      }
    assert.ok(asymmetry > 0.1 * scale, `C should be far from symmetric: ${asymmetry} against ${scale}`);
    for (let i = 0; i < K * K; i++)
      assert.ok(Math.abs(a[i] - b[i]) <= 1e-5 * scale, `C[${i}] ${b[i]} against ${a[i]}`);
  },
);

/**
 * The Hessian of Xq and the cross term of Xf, Xq as the device holds them (fp32), and the same rounded
 * values widened for the host, so both sides solve one problem.
 */
function roundedProblem(): { H32: Float32Array; C32: Float32Array; H: Float64Array; C: Float64Array } {
  const hAcc = new HessianAccumulator(K);
  hAcc.add(Xq, ROWS);
  const cAcc = new CrossAccumulator(K);
  cAcc.add(Xf, Xq, ROWS);
  const H32 = new Float32Array(hAcc.H);
  const C32 = new Float32Array(cAcc.C);
  return { H32, C32, H: Float64Array.from(H32), C: Float64Array.from(C32) };
}

test(
  "W* solved on the device (fp64) equals fpTargetWeights on the same cross term and Hessian",
  { skip: noGpu },
  () => {
    const dev = CudaDevice.get();
    const { H32, C32, H, C } = roundedProblem();
    assert.equal(H[DEAD * K + DEAD], 0);
    const hd = dev.upload(H32);
    const cd = dev.upload(C32);
    const wd = dev.upload(W);
    for (const damp of [0.01, 0.1]) {
      const want = fpTargetWeights(W, N, K, C, H, damp);
      const target = CudaFpTarget.prepare(dev, cd, hd, K, (d) => fpTargetRidge(d, damp));
      assert.ok(target, `damp ${damp}: H + l I is positive definite`);
      const out = target.weights(wd, N);
      const got = dev.download(out, new Float32Array(N * K));
      dev.free(out);
      target.dispose();
      const moved = relativeTo(want, W, W);
      assert.ok(moved > 0.05, `damp ${damp}: W* should differ from W, ${moved}`);
      const e = relativeTo(
        got,
        want,
        Float64Array.from(want, (v, i) => v - W[i]),
      );
      assert.ok(e <= 1e-4, `damp ${damp}: ||W*gpu - W*cpu|| / ||W*cpu - W|| = ${e}`);
    }
    for (const b of [hd, cd, wd]) dev.free(b);
  },
);

test(
  "a Hessian that is not positive definite: no device target, and the host keeps W",
  { skip: noGpu },
  () => {
    const dev = CudaDevice.get();
    const k = 16;
    const H = new Float64Array(k * k);
    for (let i = 0; i < k; i++) H[i * k + i] = i === 5 ? -4 : 1;
    const C = Float64Array.from(H);
    const w = llmLike(4, k, 3);
    assert.equal(fpTargetWeights(w, 4, k, C, H, 0.01), w);
    const hd = dev.upload(new Float32Array(H));
    const cd = dev.upload(new Float32Array(C));
    assert.equal(
      CudaFpTarget.prepare(dev, cd, hd, k, (d) => fpTargetRidge(d, 0.01)),
      null,
    );
    dev.free(hd);
    dev.free(cd);
  },
);

/** ||Xq Q^T - Xf W^T||^2 / ||Xf W^T||^2: how far the quantized path's outputs are from the fp model's */
const errorToFp = (Q: ArrayLike<number>) => relativeOutputError(Xq, ROWS, W, Q, N, K, Xf);

test(
  "GPTQ aimed at the device's W* is as close to the fp model's outputs as the CPU path's, within 0.5 %",
  { skip: noGpu },
  () => {
    const dev = CudaDevice.get();
    const { H32, C32, H, C } = roundedProblem();
    const hd = dev.upload(H32);
    const cd = dev.upload(C32);
    const wd = dev.upload(W);
    const target = CudaFpTarget.prepare(dev, cd, hd, K, (d) => fpTargetRidge(d, 0.01))!;
    const wStar = fpTargetWeights(W, N, K, C, H, 0.01);
    const cases: GptqOptions[] = [
      { bits: 4, groupSize: 64, sym: true, descAct: true },
      { bits: 3, groupSize: 32, sym: false, clip: "hessian" },
    ];
    for (const opts of cases) {
      const cpu = gptqQuantize(wStar, N, K, H, opts);
      const aim = target.weights(wd, N);
      const problem = cudaGptqProblem(dev, CudaGptqData.fromDevice(dev, dev.upload(H32), aim, "f32", N, K));
      dev.free(aim);
      const gpu = gptqSolve(problem, opts);
      problem.dispose?.();
      const eCpu = errorToFp(cpu.Q);
      const eGpu = errorToFp(dequantize(gpu.layer));
      const plain = errorToFp(gptqQuantize(W, N, K, H, opts).Q);
      assert.ok(eCpu < plain, `${JSON.stringify(opts)}: fp-target ${eCpu} should beat plain GPTQ ${plain}`);
      assert.ok(Math.abs(eGpu - eCpu) <= 0.005 * eCpu, `${JSON.stringify(opts)}: ${eGpu} against ${eCpu}`);
    }
    target.dispose();
    for (const b of [hd, cd, wd]) dev.free(b);
  },
);
