import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { A8W4Linear, DenseLinear, QuantLinear } from "../../src/backend/cpu/linear.js";
import { dequantize } from "../../src/formats/dequantize.js";
import { FORMATS } from "../../src/formats/registry.js";
import { Bits, CheckpointFormat, QuantizedLinear, numGroups } from "../../src/formats/types.js";
import { writeQuantConfig } from "../../src/io/checkpoint.js";
import { TensorEntry, readAllTensors } from "../../src/io/safetensors.js";
import { TensorStore, writeCheckpointTensors } from "../../src/io/store.js";
import { DecoderModel } from "../../src/model/decoder.js";
import { LLAMA_LINEARS } from "../../src/model/families/llama.js";
import { roundToHalf } from "../../src/tensor/dtype.js";
import { toFloat32 } from "../../src/tensor/tensor.js";
import { GptqError } from "../../src/util/errors.js";
import { quantConfig, tmpDir } from "../helpers/checkpoints.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";

/** the projections of a Llama decoder layer, in true-sequential order */
const LINEAR_NAMES = LLAMA_LINEARS.map((l) => l.name);

const MODEL = sharedPath("models", "stories260K");
const skip =
  skipUnlessShared("models", "stories260K") || skipUnlessShared("models", "stories260K-eval.safetensors");

interface Scheme {
  bits: Bits;
  groupSize: number;
  sym: boolean;
  actOrder: boolean;
}

/**
 * Round-to-nearest of W (N x K) per group of input rows, min/max scales rounded to fp16 as checkpoints
 * store them. With act-order, groups are formed over a fixed permutation of the rows.
 */
function rtn(W: Float32Array, N: number, K: number, s: Scheme): QuantizedLinear {
  const gs = s.groupSize === -1 ? K : s.groupSize;
  const G = numGroups(K, s.groupSize);
  const maxq = 2 ** s.bits - 1;
  const gIdx = new Int32Array(K);
  for (let j = 0; j < K; j++) gIdx[s.actOrder ? (j * 37 + 11) % K : j] = Math.floor(j / gs);
  const codes = new Uint8Array(K * N);
  const scales = new Float32Array(G * N);
  const zeros = new Uint8Array(G * N);
  for (let g = 0; g < G; g++)
    for (let n = 0; n < N; n++) {
      let lo = 0;
      let hi = 0;
      for (let k = 0; k < K; k++)
        if (gIdx[k] === g) {
          lo = Math.min(lo, W[n * K + k]);
          hi = Math.max(hi, W[n * K + k]);
        }
      if (s.sym) hi = Math.max(hi, -lo);
      if (s.sym) lo = -hi;
      const scale = roundToHalf(new Float32Array([(hi - lo) / maxq || 1]))[0];
      const zero = s.sym ? (maxq + 1) / 2 : Math.min(maxq, Math.max(0, Math.round(-lo / scale)));
      scales[g * N + n] = scale;
      zeros[g * N + n] = zero;
      for (let k = 0; k < K; k++)
        if (gIdx[k] === g)
          codes[k * N + n] = Math.min(maxq, Math.max(0, Math.round(W[n * K + k] / scale) + zero));
    }
  return { inFeatures: K, outFeatures: N, bits: s.bits, groupSize: s.groupSize, codes, scales, zeros, gIdx };
}

/**
 * Writes stories260K with the chosen projections quantized and packed in `format`, the rest kept fp.
 * Returns the directory and the quantized layers by tensor prefix.
 */
function quantizedCheckpoint(
  format: CheckpointFormat,
  s: Scheme,
  which: (name: string) => boolean,
  lmHead = false,
): { dir: string; layers: Map<string, QuantizedLinear> } {
  const dir = tmpDir("model-q");
  copyFileSync(join(MODEL, "config.json"), join(dir, "config.json"));
  const src = TensorStore.open(MODEL);
  const layers = new Map<string, QuantizedLinear>();
  const entries: TensorEntry[] = [];
  try {
    for (const name of src.names()) {
      const prefix = name.replace(/\.weight$/, "");
      const short = prefix.split(".").pop() as string;
      if (!name.endsWith(".weight") || !LINEAR_NAMES.includes(short) || !which(short)) {
        const t = src.read(name);
        entries.push({ name, dtype: t.dtype, shape: t.shape, data: t.data });
        continue;
      }
      const t = src.read(name);
      const [N, K] = t.shape;
      const q = rtn(toFloat32(t), N, K, s);
      layers.set(prefix, q);
      for (const lt of FORMATS[format].write(q))
        entries.push({ name: `${prefix}.${lt.suffix}`, dtype: lt.dtype, shape: lt.shape, data: lt.data });
    }
    if (lmHead) {
      // the tied head, stored as a quantized lm_head of its own
      const q = rtn(toFloat32(src.read("model.embed_tokens.weight")), 512, 64, s);
      layers.set("lm_head", q);
      for (const lt of FORMATS[format].write(q))
        entries.push({ name: `lm_head.${lt.suffix}`, dtype: lt.dtype, shape: lt.shape, data: lt.data });
    }
  } finally {
    src.close();
  }
  writeCheckpointTensors(dir, entries);
  writeQuantConfig(
    dir,
    quantConfig({
      bits: s.bits,
      groupSize: s.groupSize,
      sym: s.sym,
      descAct: s.actOrder,
      checkpointFormat: format,
    }),
  );
  return { dir, layers };
}

/** the unquantized model with the given layers swapped in */
function reference(
  layers: Map<string, QuantizedLinear>,
  make: (q: QuantizedLinear) => DenseLinear | A8W4Linear,
): DecoderModel {
  const m = DecoderModel.load(MODEL);
  const head = layers.get("lm_head");
  if (head) m.lmHead = make(head);
  for (const layer of m.layers)
    for (const name of LINEAR_NAMES) {
      const q = layers.get(layer.linearPrefix(name));
      if (q) layer.linears[name] = make(q);
    }
  return m;
}

const dense = (q: QuantizedLinear) => new DenseLinear(dequantize(q), q.outFeatures, q.inFeatures);

function tokens(): Int32Array {
  const t = readAllTensors(sharedPath("models", "stories260K-eval.safetensors")).tensors.get(
    "evaluation_tokens",
  )!;
  return (t.data as Int32Array).slice(0, 96);
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function countLinears(
  m: DecoderModel,
  cls: typeof QuantLinear | typeof A8W4Linear | typeof DenseLinear,
): number {
  return m.layers.reduce((s, l) => s + LINEAR_NAMES.filter((n) => l.linears[n] instanceof cls).length, 0);
}

test(
  "a GPTQ v1 4-bit symmetric checkpoint runs like the fp model with its dequantized weights, and as A8W4",
  { skip },
  () => {
    // the MLP (172 wide) cannot be packed at 4 bits: it stays fp, a partially quantized checkpoint
    const attn = (n: string) => n.endsWith("_proj") && !["gate_proj", "up_proj", "down_proj"].includes(n);
    const { dir, layers } = quantizedCheckpoint(
      "gptq",
      { bits: 4, groupSize: 32, sym: true, actOrder: false },
      attn,
    );
    try {
      assert.equal(layers.size, 20);
      const toks = tokens();
      const q = DecoderModel.load(dir);
      assert.equal(countLinears(q, QuantLinear), 20);
      const want = reference(layers, dense).forward(toks);
      const got = q.forward(toks);
      assert.ok(maxAbsDiff(got, want) < 1e-4, `dequantized path: ${maxAbsDiff(got, want)}`);
      assert.ok(
        maxAbsDiff(got, DecoderModel.load(MODEL).forward(toks)) > 1e-2,
        "quantization changes the logits",
      );

      const a = DecoderModel.load(dir, { actQuant: "int8" });
      assert.equal(countLinears(a, A8W4Linear), 20);
      assert.equal(countLinears(a, DenseLinear), 15);
      const wantA = reference(layers, (l) => A8W4Linear.fromQuantized(l)).forward(toks);
      assert.ok(maxAbsDiff(a.forward(toks), wantA) < 1e-4, "A8W4 path");
    } finally {
      rmSync(dir, { recursive: true });
    }
  },
);

test(
  "a GPTQ v2 8-bit asymmetric act-order checkpoint with a partial last group and a quantized lm_head runs from its codes",
  { skip },
  () => {
    const { dir, layers } = quantizedCheckpoint(
      "gptq_v2",
      { bits: 8, groupSize: 64, sym: false, actOrder: true },
      () => true,
      true,
    );
    try {
      assert.equal(layers.size, 36);
      const toks = tokens();
      const q = DecoderModel.load(dir);
      assert.equal(countLinears(q, QuantLinear), 35);
      assert.ok(q.lmHead instanceof QuantLinear);
      const d = maxAbsDiff(q.forward(toks), reference(layers, dense).forward(toks));
      assert.ok(d < 1e-4, `max abs logit difference ${d}`);
      assert.throws(
        () => DecoderModel.load(dir, { actQuant: "int8" }),
        (e: Error) =>
          e instanceof GptqError &&
          /8-bit asymmetric; int8 activations \(A8W4\) need 4-bit symmetric/.test(e.message),
      );
    } finally {
      rmSync(dir, { recursive: true });
    }
  },
);

test("a Marlin checkpoint runs from its codes", { skip }, () => {
  // Marlin holds 64 x 64 q_proj and o_proj (out % 64, in % 16); the other shapes stay fp
  const { dir, layers } = quantizedCheckpoint(
    "marlin",
    { bits: 4, groupSize: -1, sym: true, actOrder: false },
    (n) => n === "q_proj" || n === "o_proj",
  );
  try {
    const toks = tokens();
    const q = DecoderModel.load(dir);
    assert.equal(countLinears(q, QuantLinear), 10);
    const d = maxAbsDiff(q.forward(toks), reference(layers, dense).forward(toks));
    assert.ok(d < 1e-4, `max abs logit difference ${d}`);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("int8 activations on an unquantized checkpoint are refused", { skip }, () => {
  assert.throws(
    () => DecoderModel.load(MODEL, { actQuant: "int8" }),
    /need a 4-bit symmetric quantized checkpoint/,
  );
});
