/**
 * The family features of the exported decoder, each checked by the export against the project's forward
 * on 24 tokens: Mistral's sliding window (8, shorter than the sequence), Qwen2's q/k/v biases, and a
 * partial rotary dimension with llama3 frequency scaling; fused qkv_proj and gate_up_proj (as `gptq merge`
 * writes them) as one MatMulNBits and a Split; a Marlin checkpoint. The window is shown to matter: the same logits
 * are far from the forward without it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ONNX_MODEL_FILE, exportOnnx } from "../../src/export/onnx-export.js";
import { OnnxDecoder, relativeDifference } from "../../src/export/onnx-runtime.js";
import { SafetensorsFile, TensorEntry, entry, writeSafetensors } from "../../src/io/safetensors.js";
import { readModelConfig } from "../../src/model/config.js";
import { mergeCheckpoint } from "../../src/transform/split.js";
import { DecoderModel } from "../../src/model/decoder.js";
import { quantizeCheckpoint } from "../../src/pipeline/quantize-checkpoint.js";
import { DEMO_SPEC, writeSyntheticLlama } from "../../src/pipeline/synthetic.js";
import { tmpDir } from "../helpers/checkpoints.js";
import { PLAIN_GPTQ } from "../helpers/configs.js";
import { ORT, skipUnlessOnnxRuntime } from "../helpers/onnxruntime.js";
import { TINY_SPEC, syntheticTokens } from "../helpers/synthetic.js";
import { rng } from "../formats/helpers.js";

const skip = skipUnlessOnnxRuntime();
const root = tmpDir("onnx-families");
process.on("exit", () => rmSync(root, { recursive: true, force: true }));
const base = join(root, "base");
writeSyntheticLlama(base, TINY_SPEC);
const tokens = syntheticTokens(TINY_SPEC, 1, 24, 3)[0];

/** the synthetic model with config.json fields changed and, optionally, q/k/v biases added */
function variant(name: string, config: Record<string, unknown>, biases = false): string {
  const dir = join(root, name);
  cpSync(base, dir, { recursive: true });
  const path = join(dir, "config.json");
  writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, "utf8")), ...config }));
  if (biases) {
    const file = join(dir, "model.safetensors");
    const f = SafetensorsFile.open(file);
    const entries: TensorEntry[] = f.names().map((n) => entry(n, f.read(n)));
    f.close();
    const r = rng(7);
    for (const proj of ["q_proj", "k_proj", "v_proj"]) {
      const N = f.info(`model.layers.0.self_attn.${proj}.weight`).shape[0];
      const bias = Float32Array.from({ length: N }, () => r() - 0.5);
      entries.push({ name: `model.layers.0.self_attn.${proj}.bias`, dtype: "F32", shape: [N], data: bias });
    }
    writeSafetensors(file, entries);
  }
  return dir;
}

async function exportQuantized(fp: string): Promise<string> {
  const q = `${fp}-q`;
  await quantizeCheckpoint({
    modelDir: fp,
    outDir: q,
    options: { ...PLAIN_GPTQ, method: "rtn", groupSize: 16, sym: false },
    format: "auto",
    pad: "auto",
  });
  const out = `${fp}-onnx`;
  const r = await exportOnnx(q, out, { tokens });
  assert.ok(!("skipped" in r.verification));
  assert.ok(r.verification.fullRelDiff <= 1e-3, `one run: ${r.verification.fullRelDiff}`);
  assert.ok(r.verification.cachedRelDiff <= 1e-3, `through the cache: ${r.verification.cachedRelDiff}`);
  return q;
}

test("Mistral's sliding window", { skip }, async () => {
  const q = await exportQuantized(variant("mistral", { model_type: "mistral", sliding_window: 8 }));
  // without the window the forward is another function: the check above could tell them apart
  const d = await OnnxDecoder.open(ORT!, join(`${q.slice(0, -2)}-onnx`, ONNX_MODEL_FILE), readModelConfig(q));
  const onnx = (await d.forward(tokens)).logits;
  await d.release();
  // the same checkpoint with the window taken out of its config
  const plain = `${q}-unwindowed`;
  cpSync(q, plain, { recursive: true });
  const config = JSON.parse(readFileSync(join(plain, "config.json"), "utf8")) as Record<string, unknown>;
  delete config.sliding_window;
  writeFileSync(join(plain, "config.json"), JSON.stringify(config));
  assert.ok(relativeDifference(onnx, DecoderModel.load(plain).forward(tokens)) > 1e-2);
});

test("Qwen2's q/k/v biases", { skip }, async () => {
  await exportQuantized(
    variant("qwen2", { model_type: "qwen2", sliding_window: 8, use_sliding_window: false }, true),
  );
});

test("a partial rotary dimension with llama3 frequency scaling", { skip }, async () => {
  const q = await exportQuantized(
    variant("rope", {
      partial_rotary_factor: 0.5,
      rope_theta: 500000,
      rope_scaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 16,
      },
    }),
  );
  const c = readModelConfig(q);
  assert.deepEqual([c.rotaryDim, c.headDim, c.ropeScaling.type], [4, 8, "llama3"]);
});

test("fused qkv_proj and gate_up_proj: one MatMulNBits each, split after it", { skip }, async () => {
  const q = await exportQuantized(variant("fused", {}));
  const p = "model.layers.0";
  const qkv = `${q}-qkv`;
  await mergeCheckpoint(
    q,
    qkv,
    ["q_proj", "k_proj", "v_proj"].map((n) => `${p}.self_attn.${n}`),
    `${p}.self_attn.qkv_proj`,
  );
  const fused = `${q}-fused`;
  await mergeCheckpoint(qkv, fused, [`${p}.mlp.gate_proj`, `${p}.mlp.up_proj`], `${p}.mlp.gate_up_proj`);
  const r = await exportOnnx(fused, `${fused}-onnx`, { tokens });
  assert.equal(r.quantized, 4); // qkv, o, gate_up, down
  assert.ok(
    !("skipped" in r.verification) &&
      r.verification.fullRelDiff <= 1e-3 &&
      r.verification.cachedRelDiff <= 1e-3,
  );
});

test("a Marlin checkpoint exports as the GPTQ layers it holds", { skip }, async () => {
  const fp = join(root, "demo");
  writeSyntheticLlama(fp, DEMO_SPEC);
  const marlin = join(root, "demo-marlin");
  await quantizeCheckpoint({
    modelDir: fp,
    outDir: marlin,
    options: { ...PLAIN_GPTQ, method: "rtn", groupSize: 128 },
    format: "marlin",
    pad: "none",
  });
  const r = await exportOnnx(marlin, join(root, "demo-marlin-onnx"), {
    tokens: syntheticTokens(DEMO_SPEC, 1, 24, 3)[0],
  });
  assert.equal(r.quantized, 14);
  assert.ok(
    !("skipped" in r.verification) &&
      r.verification.fullRelDiff <= 1e-3 &&
      r.verification.cachedRelDiff <= 1e-3,
  );
});
