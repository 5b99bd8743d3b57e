/**
 * GPTQ on the GPU (Hessians by cuBLAS, the factor by cuSOLVER, block sweeps by gptq.cu) against the CPU
 * path: the algorithm fixture's configurations and more options on synthetic LLM-like data, each within
 * 0.5 % of the CPU path's relative output error; stories260K quantized on the GPU within 1 % of the
 * CPU-quantized perplexity. Skipped without a CUDA device.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CudaDevice } from "../../src/backend/cuda/device.js";
import { CudaHessian } from "../../src/backend/cuda/gptq/hessian.js";
import { CudaGptqSweep } from "../../src/backend/cuda/gptq/sweep.js";
import { DecoderModel } from "../../src/model/decoder.js";
import { formatTarget, planPadding } from "../../src/model/pad-plan.js";
import { padModelIntermediate } from "../../src/model/padding.js";
import { perplexity } from "../../src/model/perplexity.js";
import { readTokenRows } from "../../src/pipeline/calibration.js";
import { cudaGptqBackend } from "../../src/pipeline/cuda-gptq.js";
import { PipelineOptions, quantizeModel } from "../../src/pipeline/quantize-model.js";
import { GptqOptions, gptqQuantize } from "../../src/quant/gptq.js";
import { HessianAccumulator } from "../../src/quant/hessian.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";
import { PLAIN_GPTQ } from "../helpers/configs.js";
import {
  gram,
  llmLike,
  loadAlgorithmFixture,
  relativeOutputError,
  relativeOutputErrorGram,
} from "../quant/data.js";

const noGpu = CudaDevice.available() ? false : "SKIPPED: no CUDA device";
if (noGpu) console.warn(noGpu);

test(
  "the Hessian accumulated on the GPU equals the CPU's (float64) to fp32 rounding",
  { skip: noGpu },
  () => {
    const K = 192;
    const X = llmLike(700, K, 9);
    const cpu = new HessianAccumulator(K);
    const gpu = new CudaHessian(CudaDevice.get(), K);
    for (const [r0, r1] of [
      [0, 128],
      [128, 300],
      [300, 700],
    ]) {
      cpu.add(X.subarray(r0 * K, r1 * K), r1 - r0);
      gpu.add(X.subarray(r0 * K, r1 * K), r1 - r0);
    }
    const a = cpu.H;
    const b = gpu.H;
    gpu.dispose();
    let maxDiag = 0;
    for (let k = 0; k < K; k++) maxDiag = Math.max(maxDiag, a[k * K + k]);
    for (let i = 0; i < K * K; i++)
      assert.ok(Math.abs(a[i] - b[i]) <= 1e-5 * maxDiag, `H[${i}] ${b[i]} against ${a[i]}`);
  },
);

const FIXTURE = ["fixtures", "public-gptq-algorithm.safetensors"];

test(
  "GPTQ on the GPU: the algorithm fixture's configurations within 0.5 % of the CPU path",
  { skip: noGpu || skipUnlessShared(...FIXTURE) },
  () => {
    const f = loadAlgorithmFixture(sharedPath(...FIXTURE));
    const acc = new HessianAccumulator(f.K);
    for (let r = 0; r < f.rows; r += 128) acc.add(f.X.subarray(r * f.K, (r + 128) * f.K), 128);
    const H = acc.H;
    const xtx = gram(f.X, f.rows, f.K);
    const backend = cudaGptqBackend();
    for (const c of f.cases) {
      const opts: GptqOptions = {
        bits: c.bits,
        groupSize: c.group_size,
        sym: c.sym,
        descAct: c.desc_act,
        staticGroups: c.static_groups,
      };
      const cpu = gptqQuantize(f.W, f.N, f.K, H, opts);
      const gpu = gptqQuantize(f.W, f.N, f.K, H, { ...opts, backend });
      const eCpu = relativeOutputErrorGram(xtx, f.W, cpu.Q, f.N, f.K);
      const eGpu = relativeOutputErrorGram(xtx, f.W, gpu.Q, f.N, f.K);
      assert.ok(Math.abs(eGpu - eCpu) <= 0.005 * eCpu, `${c.name}: ${eGpu} against ${eCpu} on the CPU`);
      assert.deepEqual(gpu.layer.gIdx, cpu.layer.gIdx, c.name);
    }
  },
);

test(
  "GPTQ on the GPU: every option within 0.5 % of the CPU path (384 x 1024, LLM-like data)",
  { skip: noGpu },
  () => {
    const N = 384;
    const K = 1024;
    const W = llmLike(N, K, 5);
    const X = llmLike(2048, K, 6);
    const acc = new HessianAccumulator(K);
    acc.add(X, 2048);
    const H = acc.H;
    const backend = cudaGptqBackend();
    const cases: GptqOptions[] = [
      { bits: 4, groupSize: 128, sym: true, descAct: true },
      { bits: 3, groupSize: 64, sym: false },
      { bits: 2, groupSize: 96, sym: false, descAct: true, staticGroups: true },
      { bits: 8, groupSize: -1, sym: true },
      { bits: 4, groupSize: 32, sym: true, freshGroups: true, clip: "mse" },
      { bits: 4, groupSize: 128, sym: false, clip: "hessian", splitRange: true, refine: 1 },
      { bits: 4, groupSize: 128, sym: true, descAct: true, clip: "hessian" },
      { bits: 3, groupSize: -1, sym: true, clip: "hessian" },
      { bits: 2, groupSize: 64, sym: false, staticGroups: true, clip: "mse", splitRange: true },
      { bits: 4, groupSize: 64, sym: true, clip: "gptq" },
    ];
    // the clip searches "mse" and "hessian" run on the device: no rows come back for them
    const rowsOf = CudaGptqSweep.prototype.rowsOf;
    let rowsRead = 0;
    CudaGptqSweep.prototype.rowsOf = function (r0: number, r1: number) {
      rowsRead += r1 - r0;
      return rowsOf.call(this, r0, r1);
    };
    try {
      for (const opts of cases) {
        const cpu = gptqQuantize(W, N, K, H, opts);
        rowsRead = 0;
        const gpu = gptqQuantize(W, N, K, H, { ...opts, backend });
        if (opts.clip === "mse" || opts.clip === "hessian")
          assert.equal(rowsRead, 0, `${JSON.stringify(opts)}: rows read back for the group searches`);
        const eCpu = relativeOutputError(X, 2048, W, cpu.Q, N, K);
        const eGpu = relativeOutputError(X, 2048, W, gpu.Q, N, K);
        assert.ok(
          Math.abs(eGpu - eCpu) <= 0.005 * eCpu,
          `${JSON.stringify(opts)}: ${eGpu} against ${eCpu} on the CPU`,
        );
      }
    } finally {
      CudaGptqSweep.prototype.rowsOf = rowsOf;
    }
  },
);

const EVAL = ["models", "stories260K-eval.safetensors"];

test(
  "stories260K quantized on the GPU evaluates within 1 % of the CPU-quantized perplexity",
  { skip: noGpu || skipUnlessShared(...EVAL) },
  () => {
    const tokens = sharedPath(...EVAL);
    const calib = readTokenRows(tokens, "calibration_tokens").rows;
    const evalRows = readTokenRows(tokens, "evaluation_tokens").rows;
    const configs: PipelineOptions[] = [
      { ...PLAIN_GPTQ, groupSize: 32, descAct: true },
      { ...PLAIN_GPTQ, bits: 3, groupSize: 64, clip: "hessian", refine: 1 },
      { ...PLAIN_GPTQ, bits: 2, groupSize: 16, sym: false, descAct: true },
    ];
    for (const opts of configs) {
      const ppl = (device: "cpu" | "cuda") => {
        const model = DecoderModel.load(sharedPath("models", "stories260K"));
        padModelIntermediate(model, planPadding(model.config, formatTarget("gptq", opts)).to);
        quantizeModel(model, calib, { ...opts, device });
        return perplexity(model, evalRows).ppl;
      };
      const cpu = ppl("cpu");
      const gpu = ppl("cuda");
      assert.ok(
        Math.abs(gpu - cpu) <= 0.01 * cpu,
        `${JSON.stringify(opts)}: ${gpu} on the GPU against ${cpu}`,
      );
    }
  },
);
