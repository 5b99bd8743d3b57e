// The decoder layer on the GPU against the CPU DecoderLayer: each stage (fed the CPU's own input, so errors
// do not pile up from stage to stage) and the whole layer, on stories260K's first layer with calibration
// sequences of different lengths in one chunk, and on a synthetic GQA layer with q/k/v biases, llama3
// rope scaling, partial rotary and a sliding window shorter than the sequences. The GPU tests run where
// a GPU is present (node --test dist/test/model/cuda-decoder.test.js); the CPU tests check the pure parts
// (the spec builder, the attention's cuBLAS call plan, which families the GPU layer takes) everywhere.
//
// Tolerance: relative Frobenius error <= 1e-2. Activations and weights are fp16 (unit roundoff 2^-11 =
// 4.9e-4) and each stage rounds its inputs, its weights and its output, with fp32 accumulation; the
// softmax turns an absolute score error into the same relative probability error. Rounding the CPU
// stages' inputs, weights and outputs to fp16 gives 3e-4 (the norms) to 1.1e-3 (attention) on
// stories260K's layers, a tenth of the bound; a wrong head, position, window, bias or norm gives errors of order 1 (the window
// check below measures one).
import { test } from "node:test";
import assert from "node:assert/strict";
import { DenseLinear, QuantLinear } from "../../src/backend/cpu/linear.js";
import { CudaDevice, DeviceBuffer } from "../../src/backend/cuda/device.js";
import { BatchedGemm } from "../../src/backend/cuda/cublas.js";
import {
  AttentionBuffers,
  CudaDecoderLayer,
  CudaEmbedding,
  DecoderLinearName,
  attentionPlan,
  checkDecoderSpec,
  chunkPositions,
  chunkRows,
  downloadFloats,
  uploadHalfs,
} from "../../src/backend/cuda/decoder/decoder.js";
import { parseModelConfig, readModelConfig } from "../../src/model/config.js";
import {
  DECODER_LINEARS,
  cudaDecoderLayer,
  cudaDecoderUnsupported,
  decoderSpec,
} from "../../src/model/cuda.js";
import { DecoderLayer, DecoderModel, LayerwiseDecoder, Norm, attention } from "../../src/model/decoder.js";
import { familyOf } from "../../src/model/families/index.js";
import { roleShape } from "../../src/model/families/shapes.js";
import { NormRole } from "../../src/model/families/types.js";
import { Rotary } from "../../src/model/rope.js";
import { readTokenRows } from "../../src/pipeline/calibration.js";
import { Rng } from "../../src/pipeline/synthetic.js";
import { quantizeRtn } from "../../src/quant/rtn.js";
import { bf16sToFloats, floatsToBf16s, floatsToHalfs, roundToHalf } from "../../src/tensor/dtype.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";

const noGpu = CudaDevice.available()
  ? false
  : "SKIPPED: no CUDA device (the CUDA tests run on a GPU machine)";
if (noGpu) console.warn(noGpu);
const TOLERANCE = 1e-2;

/** the GPU layer's projections, in the order it runs them */
const LINEAR_NAMES = Object.keys(DECODER_LINEARS) as DecoderLinearName[];

/** the layer's own (the family's) name of the projection the GPU layer calls `name` */
function storedName(layer: DecoderLayer, name: DecoderLinearName): string {
  const [stored] = layer.linearsFor([DECODER_LINEARS[name]]);
  return stored;
}

function linearOf(layer: DecoderLayer, name: DecoderLinearName) {
  return layer.linears[storedName(layer, name)];
}

/** ||a - b|| / ||b|| */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let d = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d / n);
}

function near(what: string, got: ArrayLike<number>, want: ArrayLike<number>, tol = TOLERANCE): void {
  const e = relErr(got, want);
  assert.ok(e <= tol, `${what}: relative error ${e.toExponential(2)} > ${tol}`);
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * A one-layer model's layer 0 built through the family table from a config.json: the family's projections
 * (shaped by role; q/k/v with biases when `biased`) and norms, random but fixed, its rotary and window.
 */
function layerFromConfig(raw: Record<string, unknown>, seed: number, biased: boolean): DecoderLayer {
  const config = parseModelConfig(raw, "synthetic config.json");
  const family = familyOf(config);
  const rng = new Rng(seed);
  const normal = (n: number, scale: number) => Float32Array.from({ length: n }, () => rng.normal() * scale);
  const linears: Record<string, DenseLinear> = {};
  for (const { name, role } of family.linears) {
    const [N, K] = roleShape(config, role);
    const bias = biased && ["q", "k", "v"].includes(role) ? normal(N, 0.5) : undefined;
    linears[name] = new DenseLinear(normal(N * K, 1 / Math.sqrt(K)), N, K, bias);
  }
  const norms: Partial<Record<NormRole, Norm>> = {};
  for (const { role } of family.norms(config)) {
    const dim = role === "q" || role === "k" ? config.headDim : config.hiddenSize;
    norms[role] = new Norm(
      Float32Array.from({ length: dim }, () => 1 + 0.1 * rng.normal()),
      config.normEps,
    );
  }
  return new DecoderLayer(
    config,
    family,
    `${family.tensors.layers}.0`,
    linears,
    norms,
    Rotary.fromConfig(config),
    config.slidingWindow ?? Infinity,
  );
}

/** A GQA layer (4 heads over 2 kv heads of 24) with q/k/v biases, llama3 rope scaling, half the head rotated, window 7. */
function syntheticLayer(): DecoderLayer {
  const layer = layerFromConfig(
    {
      model_type: "mistral",
      hidden_size: 64,
      intermediate_size: 96,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 24,
      num_hidden_layers: 1,
      vocab_size: 32,
      rms_norm_eps: 1e-5,
      partial_rotary_factor: 0.5,
      sliding_window: 7,
      rope_scaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 16,
      },
    },
    11,
    true,
  );
  assert.equal(layer.family.name, "llama");
  assert.equal(layer.config.rotaryDim, 12);
  assert.equal(layer.config.ropeScaling.type, "llama3");
  assert.equal(layer.window, 7);
  return layer;
}

/** rows x hidden inputs with an outlier channel, as residual streams have */
function syntheticHidden(rows: number, D: number): Float32Array {
  const rng = new Rng(12);
  const h = Float32Array.from({ length: rows * D }, () => rng.normal());
  for (let r = 0; r < rows; r++) h[r * D + 3] *= 6;
  return h;
}

/** The CPU layer's stage inputs and outputs over a chunk (each sequence run on its own, rows concatenated). */
interface CpuChunk {
  h: Float32Array;
  inputs: Record<DecoderLinearName, Float32Array>;
  h1: Float32Array;
  out: Float32Array;
}

function cpuChunk(layer: DecoderLayer, h: Float32Array, seqLens: number[]): CpuChunk {
  const D = layer.config.hiddenSize;
  const inputs = Object.fromEntries(LINEAR_NAMES.map((n) => [n, [] as Float32Array[]])) as Record<
    DecoderLinearName,
    Float32Array[]
  >;
  // the CPU layer names its projections as the family does
  const byStored = new Map(LINEAR_NAMES.map((n) => [storedName(layer, n), n]));
  const h1: Float32Array[] = [];
  const out: Float32Array[] = [];
  let row = 0;
  for (const T of seqLens) {
    const hs = h.slice(row * D, (row + T) * D);
    h1.push(layer.attentionBlock(hs, T).residual);
    out.push(layer.forward(hs, T, (name, x) => inputs[byStored.get(name)!].push(Float32Array.from(x))));
    row += T;
  }
  return {
    h,
    inputs: Object.fromEntries(LINEAR_NAMES.map((n) => [n, concat(inputs[n])])) as Record<
      DecoderLinearName,
      Float32Array
    >,
    h1: concat(h1),
    out: concat(out),
  };
}

// ---- CPU: the pure parts ----

test("decoderSpec hands over the layer's weights, norms, config and rotary tables", () => {
  const layer = syntheticLayer();
  const spec = decoderSpec(layer, 40);
  const c = layer.config;
  assert.deepEqual(
    [spec.hidden, spec.heads, spec.kvHeads, spec.headDim, spec.rotaryDim, spec.eps, spec.slidingWindow],
    [64, 4, 2, 24, 12, c.normEps, 7],
  );
  checkDecoderSpec(spec);
  for (const name of LINEAR_NAMES) {
    const l = linearOf(layer, name) as DenseLinear;
    assert.equal(spec.linears[name].weight, l.weight);
    assert.equal(spec.linears[name].bias, l.bias);
    assert.deepEqual([spec.linears[name].N, spec.linears[name].K], [l.outFeatures, l.inFeatures]);
  }
  assert.ok(spec.linears.q_proj.bias && !spec.linears.o_proj.bias);
  assert.equal(spec.inputNorm, layer.norms.attentionIn!.weight);
  assert.equal(spec.postAttentionNorm, layer.norms.mlpIn!.weight);
  // a window no shorter than the sequences is no window
  assert.equal(decoderSpec(layer, 7).slidingWindow, undefined);
  // the tables rotate as Rotary does: row t of 40 positions, the first rotaryDim / 2 pairs of each head
  const T = 40;
  const rng = new Rng(3);
  const x = Float32Array.from({ length: T * c.headDim }, () => rng.normal());
  const want = Float32Array.from(x);
  layer.rotary!.apply(want, T, 1);
  const got = Float32Array.from(x);
  const half = spec.rotaryDim / 2;
  assert.equal(spec.ropeCos.length, T * spec.ropeStride);
  for (let t = 0; t < T; t++)
    for (let i = 0; i < half; i++) {
      const p = t * c.headDim;
      const cs = spec.ropeCos[t * spec.ropeStride + i];
      const sn = spec.ropeSin[t * spec.ropeStride + i];
      got[p + i] = x[p + i] * cs - x[p + i + half] * sn;
      got[p + i + half] = x[p + i + half] * cs + x[p + i] * sn;
    }
  assert.deepEqual(got, want);
});

test("decoderSpec and the layer refuse what they cannot run", () => {
  const layer = syntheticLayer();
  assert.throws(() => decoderSpec(layer, 0), /positions must be a positive integer, got 0/);
  const spec = decoderSpec(layer, 8);
  assert.throws(() => checkDecoderSpec({ ...spec, kvHeads: 3 }), /heads 4 is not a multiple of kvHeads 3/);
  assert.throws(
    () => checkDecoderSpec({ ...spec, linears: { ...spec.linears, o_proj: spec.linears.q_proj } }),
    /o_proj is 96 x 64, expected 64 x 96/,
  );
  const d = layer.linears.down_proj as DenseLinear;
  layer.linears.down_proj = new QuantLinear(
    quantizeRtn(d.weight, d.outFeatures, d.inFeatures, { bits: 4, groupSize: 32, sym: true }),
  );
  assert.throws(() => decoderSpec(layer, 8), /model\.layers\.0\.mlp\.down_proj is not a dense projection/);
  assert.deepEqual([...chunkPositions([3, 1, 2])], [0, 1, 2, 0, 0, 1]);
  assert.equal(chunkRows([3, 1, 2], 3), 6);
  assert.throws(() => chunkRows([3, 9], 8), /a sequence of 9 tokens is longer than the 8 positions/);
  assert.throws(() => chunkRows([], 8), /at least one sequence/);
  assert.throws(() => chunkRows([2, 0], 8), /sequence length 0 is not a positive integer/);
});

test("cudaDecoderUnsupported takes Llama, Mistral and Qwen2 and names what other families have", async (t) => {
  const base = {
    hidden_size: 64,
    intermediate_size: 96,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    num_hidden_layers: 1,
    vocab_size: 32,
  };
  for (const raw of [
    { ...base, model_type: "llama", rope_scaling: { rope_type: "linear", factor: 2 } },
    { ...base, model_type: "mistral", sliding_window: 7, head_dim: 24, partial_rotary_factor: 0.5 },
    { ...base, model_type: "qwen2", use_sliding_window: true, sliding_window: 7 },
  ]) {
    const layer = layerFromConfig(raw, 5, raw.model_type === "qwen2");
    assert.equal(layer.family.name, "llama");
    assert.equal(cudaDecoderUnsupported(layer.family, layer.config), undefined, raw.model_type);
    const spec = decoderSpec(layer, 16);
    checkDecoderSpec(spec);
    assert.equal(spec.slidingWindow, raw.model_type === "llama" ? undefined : 7);
  }
  // Qwen3 (Llama's tensor names) normalises each q and k head: refused, and the reason said
  const qwen3 = layerFromConfig({ ...base, model_type: "qwen3", head_dim: 16 }, 5, false);
  assert.equal(
    cudaDecoderUnsupported(qwen3.family, qwen3.config),
    "the GPU decoder layer runs Llama-style blocks; qwen3 has q/k norms",
  );
  assert.throws(() => decoderSpec(qwen3, 16), /qwen3 has q\/k norms/);
  // the tiny checkpoints' configs, as transformers saved them
  const refused: [string, RegExp][] = [
    ["qwen3", /; qwen3 has q\/k norms$/],
    ["opt", /; opt has LayerNorm, a plain MLP, relu activation, learned positions$/],
    ["falcon", /; falcon has parallel attention and MLP, LayerNorm, a plain MLP, gelu activation$/],
    ["gemma2", /; gemma2 has \(1 \+ w\) RMSNorm, .*attention soft-capping, scaled embeddings$/],
    ["gemma3", /; gemma3 has \(1 \+ w\) RMSNorm, .*per-layer rotary bases, q\/k norms, /],
  ];
  for (const [name, reason] of refused)
    await t.test(`tiny ${name}`, { skip: skipUnlessShared("models", "tiny", name, "config.json") }, () => {
      const c = readModelConfig(sharedPath("models", "tiny", name));
      assert.match(cudaDecoderUnsupported(familyOf(c), c) ?? "accepted", reason);
    });
  // Phi-3's config is Llama-style, but its checkpoints store q/k/v and gate/up fused: the layer is refused
  await t.test("tiny phi3", { skip: skipUnlessShared("models", "tiny", "phi3", "model.safetensors") }, () => {
    const dir = sharedPath("models", "tiny", "phi3");
    const c = readModelConfig(dir);
    assert.equal(cudaDecoderUnsupported(familyOf(c), c), undefined);
    const model = LayerwiseDecoder.open(dir);
    try {
      assert.throws(
        () => decoderSpec(model.layer(0), 16),
        /model\.layers\.0\.self_attn\.qkv_proj is fused: the GPU decoder layer takes one projection per role/,
      );
    } finally {
      model.close();
    }
  });
});

/**
 * Column-major strided batched GEMM over typed arrays standing for device memory, as cuBLAS defines it:
 * `mem` maps each buffer's base address to its values and the bytes of one of them.
 */
function emulateGemm(g: BatchedGemm, mem: Map<number, { data: Float64Array; bytes: number }>): void {
  const at = (addr: number) => {
    for (const [base, buf] of mem)
      if (addr >= base && addr < base + buf.data.length * buf.bytes)
        return { data: buf.data, off: (addr - base) / buf.bytes };
    throw new Error(`address ${addr} is in no buffer`);
  };
  const A = at(g.a);
  const B = at(g.b);
  const C = at(g.c);
  for (let b = 0; b < g.batch; b++)
    for (let i = 0; i < g.m; i++)
      for (let j = 0; j < g.n; j++) {
        let s = 0;
        for (let l = 0; l < g.k; l++) {
          const a = A.data[A.off + b * g.strideA + (g.transA ? l + i * g.lda : i + l * g.lda)];
          const bv = B.data[B.off + b * g.strideB + (g.transB ? j + l * g.ldb : l + j * g.ldb)];
          s += a * bv;
        }
        C.data[C.off + b * g.strideC + i + j * g.ldc] = g.alpha * s;
      }
}

/** the kernel's contract: row i of each batch entry's T x T scores -> probabilities over [i - window + 1, i] */
function referenceSoftmax(
  scores: Float64Array,
  probs: Float64Array,
  T: number,
  batch: number,
  window: number,
) {
  for (let b = 0; b < batch; b++)
    for (let i = 0; i < T; i++) {
      const row = (b * T + i) * T;
      const j0 = Math.max(0, i - window + 1);
      let max = -Infinity;
      for (let j = j0; j <= i; j++) max = Math.max(max, scores[row + j]);
      let sum = 0;
      for (let j = j0; j <= i; j++) sum += Math.exp(scores[row + j] - max);
      for (let j = 0; j < T; j++)
        probs[row + j] = j >= j0 && j <= i ? Math.exp(scores[row + j] - max) / sum : 0;
    }
}

test("the attention's cuBLAS plan computes the CPU's grouped-query causal attention, sequence by sequence", () => {
  for (const window of [undefined, 4]) {
    const shape = {
      heads: 6,
      kvHeads: 2,
      headDim: 5,
      scale: 1 / Math.sqrt(5),
      window: window ?? Infinity,
    };
    const { heads: H, kvHeads: KV, headDim: hd } = shape;
    const seqLens = [5, 9, 3];
    const rows = 17;
    const longest = 9;
    const rng = new Rng(4);
    const rand = (n: number) => Float64Array.from({ length: n }, () => rng.normal());
    const bufs: AttentionBuffers = {
      q: 1 << 20,
      k: 2 << 20,
      v: 3 << 20,
      out: 4 << 20,
      scores: 5 << 20,
      probs: 6 << 20,
    };
    const q = rand(rows * H * hd);
    const k = rand(rows * KV * hd);
    const v = rand(rows * KV * hd);
    const out = new Float64Array(rows * H * hd);
    const scores = new Float64Array(KV * longest * longest);
    const probs = new Float64Array(KV * longest * longest);
    const mem = new Map([
      [bufs.q, { data: q, bytes: 2 }],
      [bufs.k, { data: k, bytes: 2 }],
      [bufs.v, { data: v, bytes: 2 }],
      [bufs.out, { data: out, bytes: 2 }],
      [bufs.scores, { data: scores, bytes: 4 }],
      [bufs.probs, { data: probs, bytes: 2 }],
    ]);
    const plan = attentionPlan({ heads: H, kvHeads: KV, headDim: hd }, seqLens, bufs);
    assert.equal(plan.length, seqLens.length * (H / KV));
    for (const step of plan) {
      emulateGemm(step.scores, mem);
      referenceSoftmax(scores, probs, step.T, KV, window ?? Infinity);
      emulateGemm(step.values, mem);
    }
    let row = 0;
    for (const T of seqLens) {
      const slice = (x: Float64Array, w: number) => Float32Array.from(x.subarray(row * w, (row + T) * w));
      const want = attention(slice(q, H * hd), slice(k, KV * hd), slice(v, KV * hd), T, shape);
      near(`window ${window}, sequence of ${T}`, slice(out, H * hd), want, 1e-6);
      row += T;
    }
  }
});

// ---- GPU ----

function checkLayer(layer: DecoderLayer, h: Float32Array, seqLens: number[]): void {
  const dev = CudaDevice.get();
  const D = layer.config.hiddenSize;
  const rows = seqLens.reduce((a, b) => a + b, 0);
  const cpu = cpuChunk(layer, h, seqLens);
  const gpu = cudaDecoderLayer(dev, layer, Math.max(...seqLens));
  const run = (input: Float32Array, stage: (x: DeviceBuffer) => DeviceBuffer, width: number) => {
    const x = uploadHalfs(dev, input);
    const y = stage(x);
    const out = downloadFloats(dev, y, rows * width);
    dev.free(x);
    dev.free(y);
    return out;
  };
  const { numHeads: H, headDim: hd } = layer.config;
  const I = linearOf(layer, "gate_proj").outFeatures;
  near(
    "attentionInput",
    run(h, (x) => gpu.attentionInput(x, seqLens), D),
    cpu.inputs.q_proj,
  );
  near(
    "attentionCore",
    run(cpu.inputs.q_proj, (x) => gpu.attentionCore(x, seqLens), H * hd),
    cpu.inputs.o_proj,
  );
  near(
    "mlpInput",
    run(cpu.h1, (x) => gpu.mlpInput(x, seqLens), D),
    cpu.inputs.gate_proj,
  );
  near(
    "mlpCore",
    run(cpu.inputs.gate_proj, (x) => gpu.mlpCore(x, seqLens), I),
    cpu.inputs.down_proj,
  );
  for (const name of LINEAR_NAMES) {
    const lin = linearOf(layer, name);
    near(
      `project ${name}`,
      run(cpu.inputs[name], (x) => gpu.project(name, x, rows), lin.outFeatures),
      lin.forward(cpu.inputs[name], rows),
    );
  }
  // the whole layer in place, and what it shows calibration on the way
  const hDevice = uploadHalfs(dev, h);
  const seen = new Map<DecoderLinearName, Float32Array>();
  gpu.forward(hDevice, seqLens, (name, x, r) => {
    assert.equal(r, rows);
    seen.set(name, downloadFloats(dev, x, rows * linearOf(layer, name).inFeatures));
  });
  near("layer output", downloadFloats(dev, hDevice, rows * D), cpu.out);
  for (const name of LINEAR_NAMES)
    near(`captured ${name} input`, seen.get(name)!, cpu.inputs[name], 2 * TOLERANCE);
  dev.free(hDevice);
  gpu.dispose();
}

test(
  "stories260K layer 0 on the GPU matches the CPU, three calibration sequences of 256, 100 and 37 tokens in one chunk",
  {
    skip: noGpu || skipUnlessShared("models", "stories260K", "model.safetensors"),
  },
  () => {
    const model = DecoderModel.load(sharedPath("models", "stories260K"));
    const { rows } = readTokenRows(
      sharedPath("models", "stories260K-eval.safetensors"),
      "calibration_tokens",
    );
    const seqLens = [256, 100, 37];
    const ids = new Int32Array(seqLens.reduce((a, b) => a + b, 0));
    let at = 0;
    seqLens.forEach((T, i) => {
      ids.set(rows[i].subarray(0, T), at);
      at += T;
    });
    const h = model.embed(ids);
    // the embedding gather is exact up to the table's fp16 rounding
    const dev = CudaDevice.get();
    const embedding = new CudaEmbedding(
      dev,
      model.embedTokens,
      model.config.vocabSize,
      model.config.hiddenSize,
    );
    const e = embedding.forward(ids);
    assert.deepEqual(downloadFloats(dev, e, h.length), roundToHalf(h));
    assert.throws(
      () => embedding.forward(Int32Array.of(3, 512)),
      /token 512 at position 1 is outside the vocabulary \[0, 512\)/,
    );
    dev.free(e);
    embedding.dispose();
    checkLayer(model.layers[0], h, seqLens);
  },
);

test(
  "a GQA layer with q/k/v biases, llama3 rope, partial rotary and a window of 7 on the GPU matches the CPU",
  { skip: noGpu },
  () => {
    const layer = syntheticLayer();
    const seqLens = [20, 13, 5, 31];
    const h = syntheticHidden(69, 64);
    checkLayer(layer, h, seqLens);
    // the window matters here: the same attention without it is far off
    const dev = CudaDevice.get();
    const gpu = cudaDecoderLayer(dev, layer, 31);
    const cpu = cpuChunk(layer, h, seqLens);
    const x = uploadHalfs(dev, cpu.inputs.q_proj);
    const y = gpu.attentionCore(x, seqLens);
    const got = downloadFloats(dev, y, 69 * 96);
    const full = cpuChunk(
      new DecoderLayer(
        { ...layer.config, slidingWindow: undefined },
        layer.family,
        layer.prefix,
        layer.linears,
        layer.norms,
        layer.rotary,
        Infinity,
      ),
      h,
      seqLens,
    );
    assert.ok(
      relErr(got, full.inputs.o_proj) > 0.1,
      `without the window: ${relErr(got, full.inputs.o_proj)}`,
    );
    dev.free(x);
    dev.free(y);
    gpu.dispose();
  },
);

test(
  "setWeight replaces a projection's weight from the host or from an fp16 device buffer; the bias stays",
  { skip: noGpu },
  () => {
    const dev = CudaDevice.get();
    const layer = syntheticLayer();
    const gpu = cudaDecoderLayer(dev, layer, 8);
    const rows = 8;
    const rng = new Rng(9);
    for (const [name, fromDevice] of [
      ["q_proj", false],
      ["down_proj", true],
    ] as const) {
      const lin = linearOf(layer, name) as DenseLinear;
      const w = Float32Array.from(lin.weight, (v) => -0.5 * v + 0.01);
      gpu.setWeight(name, fromDevice ? uploadHalfs(dev, w) : w);
      const K = lin.inFeatures;
      const input = Float32Array.from({ length: rows * K }, () => rng.normal());
      const xb = uploadHalfs(dev, input);
      const y = gpu.project(name, xb, rows);
      near(
        `${name} after setWeight`,
        downloadFloats(dev, y, rows * lin.outFeatures),
        new DenseLinear(w, lin.outFeatures, K, lin.bias).forward(input, rows),
      );
      dev.free(xb);
      dev.free(y);
    }
    assert.throws(
      () => gpu.setWeight("o_proj", new Float32Array(10)),
      /o_proj: a weight of 10 values given, the projection is 64 x 96/,
    );
    gpu.dispose();
  },
);

test(
  "a copy of a layer computes what the original does, with weights of its own: replacing one in either leaves the other's",
  { skip: noGpu },
  () => {
    const dev = CudaDevice.get();
    const layer = syntheticLayer();
    const seqLens = [20, 13];
    const rows = 33;
    const original = cudaDecoderLayer(dev, layer, 20);
    const q = linearOf(layer, "q_proj") as DenseLinear;
    const changed = Float32Array.from(q.weight, (v) => 0.5 * v - 0.02);
    original.setWeight("q_proj", changed); // the copy takes the weights as they are now
    const copy = new CudaDecoderLayer(dev, original);
    const h = syntheticHidden(rows, 64);
    const forward = (l: CudaDecoderLayer) => {
      const hd = uploadHalfs(dev, h);
      l.forward(hd, seqLens);
      const out = downloadFloats(dev, hd, rows * 64);
      dev.free(hd);
      return out;
    };
    assert.deepEqual(forward(copy), forward(original));
    copy.setWeight("q_proj", q.weight);
    const x = uploadHalfs(dev, h);
    const project = (l: CudaDecoderLayer) => {
      const y = l.project("q_proj", x, rows);
      const out = downloadFloats(dev, y, rows * q.outFeatures);
      dev.free(y);
      return out;
    };
    near(
      "the original's q_proj",
      project(original),
      new DenseLinear(changed, q.outFeatures, 64, q.bias).forward(h, rows),
    );
    original.dispose();
    near("the copy's q_proj", project(copy), q.forward(h, rows));
    dev.free(x);
    copy.dispose();
  },
);

test(
  "weights still as a checkpoint stores them (fp16 as they are, bf16 narrowed on the device) go up as the fp32 ones do",
  { skip: noGpu },
  () => {
    const dev = CudaDevice.get();
    const layer = syntheticLayer();
    const halfs = (b: DeviceBuffer, n: number) => dev.download(b, new Uint16Array(n));
    for (const dtype of ["F16", "BF16"] as const) {
      // the same layer with every projection's weight held as `dtype` (values already representable in it)
      const stored = syntheticLayer();
      for (const [name, lin] of Object.entries(stored.linears)) {
        const l = lin as DenseLinear;
        const exact = dtype === "F16" ? roundToHalf(Float32Array.from(l.weight)) : bf16Round(l.weight);
        const data = dtype === "F16" ? floatsToHalfs(exact) : floatsToBf16s(exact);
        stored.linears[name] = new DenseLinear(
          { dtype, shape: [l.outFeatures, l.inFeatures], data },
          l.outFeatures,
          l.inFeatures,
          l.bias,
        );
        (layer.linears[name] as DenseLinear).weight.set(exact);
      }
      const fromStored = cudaDecoderLayer(dev, stored, 8);
      const reference = cudaDecoderLayer(dev, layer, 8);
      for (const name of [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
      ] as const) {
        const l = linearOf(layer, name) as DenseLinear;
        const n = l.outFeatures * l.inFeatures;
        assert.deepEqual(
          halfs(fromStored.weightOf(name), n),
          halfs(reference.weightOf(name), n),
          `${dtype} ${name}`,
        );
      }
      for (const l of Object.values(stored.linears))
        assert.ok((l as DenseLinear).stored, "the CPU never widened it");
      fromStored.dispose();
      reference.dispose();
    }
  },
);

/** Each value rounded to the nearest bf16 (what a bf16 checkpoint stores). */
function bf16Round(w: Float32Array): Float32Array {
  return bf16sToFloats(floatsToBf16s(w));
}
