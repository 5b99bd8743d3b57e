import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DenseLinear } from "../../src/backend/cpu/linear.js";
import { entry, readAllTensors, writeSafetensors } from "../../src/io/safetensors.js";
import { LayerwiseDecoder, DecoderModel } from "../../src/model/decoder.js";
import { LLAMA_LINEARS } from "../../src/model/families/llama.js";
import { SyntheticSpec, writeSyntheticLlama } from "../../src/pipeline/synthetic.js";
import { syntheticTokens } from "../helpers/synthetic.js";
import { HessianAccumulator, gptqQuantize, quantizeRtn } from "../../src/quant/index.js";
import { PipelineOptions, PipelineResult, quantizeModel } from "../../src/pipeline/quantize-model.js";

/** the projections of a Llama decoder layer, in true-sequential order */
const LINEAR_NAMES = LLAMA_LINEARS.map((l) => l.name);

const SPEC: SyntheticSpec = {
  hiddenSize: 32,
  intermediateSize: 64,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 64,
  seed: 3,
};
const OPTS: PipelineOptions = {
  method: "gptq",
  bits: 4,
  groupSize: 16,
  sym: true,
  descAct: false,
  staticGroups: false,
  damp: 0.01,
  clip: "minmax",
};

const dir = mkdtempSync(join(tmpdir(), "gptq-pipe-"));
writeSyntheticLlama(dir, SPEC);
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
const CALIB = syntheticTokens(SPEC, 6, 24, 11);

/** Hessians of every projection's inputs when `model` runs the calibration set. */
function hessians(model: DecoderModel): Map<string, Float64Array> {
  const acc = new Map<string, HessianAccumulator>();
  for (const seq of CALIB) {
    let h = model.embed(seq);
    for (const layer of model.layers)
      h = layer.forward(h, seq.length, (name, x, rows) => {
        const key = `${layer.prefix}.${name}`;
        const K = layer.linears[name as string].inFeatures;
        if (!acc.has(key)) acc.set(key, new HessianAccumulator(K));
        acc.get(key)!.add(x.subarray(0, rows * K), rows);
      });
  }
  return new Map([...acc].map(([k, a]) => [k, a.H]));
}

test("true-sequential: every projection is GPTQ on the inputs it sees once all before it are quantized", () => {
  const fp = DecoderModel.load(dir);
  const model = DecoderModel.load(dir);
  const run = quantizeModel(model, CALIB, OPTS);
  assert.equal(run.layers.size, SPEC.numLayers * 7);
  // In the quantized model a projection's input depends only on projections before it, so these are
  // exactly the inputs the pipeline calibrated each one on.
  const Hq = hessians(model);
  const Hfp = hessians(fp);
  let differs = 0;
  for (const [li, layer] of fp.layers.entries())
    for (const name of LINEAR_NAMES) {
      const key = `${layer.prefix}.${name}`;
      const w = layer.linears[name] as DenseLinear;
      const ref = gptqQuantize(w.weight, w.outFeatures, w.inFeatures, Hq.get(key)!, OPTS);
      const got = run.layers.get(layer.linearPrefix(name))!;
      assert.deepEqual(got.codes, ref.layer.codes, `${key} codes`);
      assert.deepEqual(got.scales, ref.layer.scales, `${key} scales`);
      if (li > 0 || name !== "q_proj") {
        const a = Hq.get(key)!;
        const b = Hfp.get(key)!;
        if (a.some((v, i) => Math.abs(v - b[i]) > 1e-6 * Math.abs(b[i]) + 1e-9)) differs++;
      }
    }
  // the fp model's inputs (what a non-sequential pipeline would use) differ after the first projection
  assert.ok(differs >= SPEC.numLayers * 7 - 3, `only ${differs} Hessians differ from the fp model's`);
  const report = run.reports.find((r) => r.name === "model.layers.1.mlp.down_proj")!;
  assert.equal(report.relErrorOf, "outputs");
  assert.ok(report.relError > 0 && report.relError < 0.05, `relative error ${report.relError}`);
});

test("a layer-wise model is read one layer at a time and quantizes exactly as the loaded one", () => {
  const events: string[] = [];
  const lazy = LayerwiseDecoder.open(dir, (layer) => {
    events.push(`read ${layer.prefix}`);
    return layer;
  });
  assert.throws(() => lazy.embed(Int32Array.of(SPEC.vocabSize)), /outside the vocabulary/);
  let run: PipelineResult;
  try {
    run = quantizeModel(lazy, CALIB, OPTS, (e) => {
      if (e.type === "linear") events.push(`quantized ${e.report.name}`);
    });
  } finally {
    lazy.close();
  }
  // layer 1 is read only once every projection of layer 0 is quantized, and each layer once
  const read1 = events.indexOf("read model.layers.1");
  assert.equal(events.indexOf("read model.layers.0"), 0);
  assert.equal(events.lastIndexOf("quantized model.layers.0.mlp.down_proj"), read1 - 1);
  assert.equal(events.filter((e) => e.startsWith("read")).length, SPEC.numLayers);
  const ref = quantizeModel(DecoderModel.load(dir), CALIB, OPTS);
  assert.deepEqual([...run.layers.keys()], [...ref.layers.keys()]);
  for (const [name, want] of ref.layers) {
    assert.deepEqual(run.layers.get(name)!.codes, want.codes, `${name} codes`);
    assert.deepEqual(run.layers.get(name)!.scales, want.scales, `${name} scales`);
  }
});

test("a layer-wise model checks every layer's tensors when it opens, before any work", () => {
  const bad = mkdtempSync(join(tmpdir(), "gptq-pipe-bad-"));
  try {
    copyFileSync(join(dir, "config.json"), join(bad, "config.json"));
    const { tensors } = readAllTensors(join(dir, "model.safetensors"));
    const last = `model.layers.${SPEC.numLayers - 1}`;
    const write = (skip: string) =>
      writeSafetensors(
        join(bad, "model.safetensors"),
        [...tensors].filter(([name]) => name !== skip).map(([name, t]) => entry(name, t)),
      );
    write(`${last}.mlp.down_proj.weight`);
    assert.throws(() => LayerwiseDecoder.open(bad), /tensor model.layers.1.mlp.down_proj.weight is missing/);
    const up = tensors.get(`${last}.mlp.up_proj.weight`)!;
    tensors.set(`${last}.mlp.up_proj.weight`, { ...up, shape: [up.shape[1], up.shape[0]] });
    write("");
    assert.throws(
      () => LayerwiseDecoder.open(bad),
      /up_proj.weight has shape \[32,64\], config.json implies \[64,32\]/,
    );
  } finally {
    rmSync(bad, { recursive: true, force: true });
  }
});

test("RTN without calibration quantizes each weight on its own and reports weight error", () => {
  const fp = DecoderModel.load(dir);
  const model = DecoderModel.load(dir);
  const run = quantizeModel(model, undefined, { ...OPTS, method: "rtn" });
  const w = fp.layers[1].linears.up_proj as DenseLinear;
  const ref = quantizeRtn(w.weight, w.outFeatures, w.inFeatures, OPTS);
  assert.deepEqual(run.layers.get("model.layers.1.mlp.up_proj")!.codes, ref.codes);
  assert.ok(run.reports.every((r) => r.relErrorOf === "weights"));
  assert.throws(() => quantizeModel(DecoderModel.load(dir), undefined, OPTS), /calibration/);
});

test("fpTarget brings the quantized model's outputs closer to the unquantized model's", () => {
  const fp = DecoderModel.load(dir);
  const err = (m: DecoderModel) => {
    let num = 0;
    let den = 0;
    for (const seq of syntheticTokens(SPEC, 4, 24, 99)) {
      const a = fp.hidden(seq);
      const b = m.hidden(seq);
      for (let i = 0; i < a.length; i++) {
        num += (a[i] - b[i]) ** 2;
        den += a[i] ** 2;
      }
    }
    return num / den;
  };
  // enough calibration tokens (32 x 32) that the least-squares target does not overfit K = 64 inputs
  const calib = syntheticTokens(SPEC, 32, 32, 12);
  const plain = DecoderModel.load(dir);
  quantizeModel(plain, calib, { ...OPTS, bits: 3 });
  const targeted = DecoderModel.load(dir);
  quantizeModel(targeted, calib, { ...OPTS, bits: 3, fpTarget: true });
  assert.ok(err(targeted) < err(plain), `fpTarget ${err(targeted)} vs plain ${err(plain)}`);
});
