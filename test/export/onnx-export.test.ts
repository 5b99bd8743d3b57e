/**
 * stories260K exported to ONNX and run by ONNX Runtime: unquantized, it reproduces transformers' logits;
 * quantized (RTN and GPTQ; 3, 4 and 8 bits; v1 and v2; symmetric, asymmetric, act-order), it reproduces
 * the project's own quantized forward (what `gptq eval` runs) in one run and through the key/value cache,
 * batched with left padding too; the folder holds what transformers.js and onnxruntime-genai read.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { GENAI_CONFIG_FILE, ONNX_MODEL_FILE, exportOnnx } from "../../src/export/onnx-export.js";
import { OnnxDecoder, checkDecoder, relativeDifference } from "../../src/export/onnx-runtime.js";
import { readModelConfig } from "../../src/model/config.js";
import { DecoderModel } from "../../src/model/decoder.js";
import { readTokenRows } from "../../src/pipeline/calibration.js";
import { quantizeCheckpoint } from "../../src/pipeline/quantize-checkpoint.js";
import { PipelineOptions } from "../../src/pipeline/quantize-model.js";
import { FormatChoice } from "../../src/pipeline/write-quantized.js";
import { SafetensorsFile } from "../../src/io/safetensors.js";
import { toFloat32 } from "../../src/tensor/tensor.js";
import { tmpDir } from "../helpers/checkpoints.js";
import { PLAIN_GPTQ } from "../helpers/configs.js";
import { ORT, skipUnlessOnnxRuntime } from "../helpers/onnxruntime.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";

const skip = skipUnlessShared("models", "stories260K-eval.safetensors") || skipUnlessOnnxRuntime();
const STORIES = sharedPath("models", "stories260K");
const EVAL = sharedPath("models", "stories260K-eval.safetensors");
const root = tmpDir("onnx-export");
process.on("exit", () => rmSync(root, { recursive: true, force: true }));

const evalRows = () => readTokenRows(EVAL, "evaluation_tokens").rows;

async function quantized(
  name: string,
  options: Partial<PipelineOptions>,
  format: FormatChoice = "auto",
): Promise<string> {
  const outDir = join(root, name);
  await quantizeCheckpoint({
    modelDir: STORIES,
    outDir,
    options: { ...PLAIN_GPTQ, ...options },
    calib: { file: EVAL, key: "calibration_tokens", nsamples: 8 },
    format,
    pad: "auto",
  });
  return outDir;
}

async function decoder(dir: string): Promise<OnnxDecoder> {
  return OnnxDecoder.open(ORT!, join(dir, ONNX_MODEL_FILE), readModelConfig(dir));
}

/** every file of a folder with its hash: the input must be the same after an export */
function snapshot(dir: string): Record<string, string> {
  return Object.fromEntries(
    readdirSync(dir).map((f) => [
      f,
      createHash("sha256")
        .update(readFileSync(join(dir, f)))
        .digest("hex"),
    ]),
  );
}

test(
  "unquantized stories260K as ONNX gives transformers' logits (relative difference <= 1e-4)",
  { skip },
  async () => {
    const out = join(root, "fp32-onnx");
    const r = await exportOnnx(STORIES, out);
    assert.deepEqual([r.quantized, r.dense], [0, 36]);
    const f = SafetensorsFile.open(EVAL);
    const want = toFloat32(f.read("evaluation_logits_seq0"));
    f.close();
    const d = await decoder(out);
    const got = await d.forward(evalRows()[0]);
    await d.release();
    const diff = relativeDifference(got.logits, want);
    assert.ok(diff <= 1e-4, `relative difference ${diff}`);
  },
);

const CONFIGS: {
  name: string;
  options: Partial<PipelineOptions>;
  format?: FormatChoice;
  reordered: boolean;
}[] = [
  { name: "rtn 4-bit g32 sym v1", options: { method: "rtn", groupSize: 32 }, reordered: false },
  { name: "rtn 8-bit g128 sym v2", options: { method: "rtn", bits: 8 }, format: "gptq_v2", reordered: false },
  {
    name: "gptq 4-bit g64 asym act-order",
    options: { groupSize: 64, sym: false, descAct: true },
    reordered: true,
  },
  {
    name: "gptq 3-bit g32 asym act-order",
    options: { bits: 3, groupSize: 32, sym: false, descAct: true },
    reordered: true,
  },
];

for (const [i, c] of CONFIGS.entries())
  test(
    `${c.name}: ONNX logits equal the project's quantized forward, whole and through the cache`,
    { skip },
    async () => {
      const dir = await quantized(`q${i}`, c.options, c.format);
      const before = snapshot(dir);
      const out = join(root, `q${i}-onnx`);
      const rows = evalRows();
      const r = await exportOnnx(dir, out, { tokens: rows[0] });
      assert.deepEqual(snapshot(dir), before, "the input is only read");
      assert.equal(r.quantized, 35);
      assert.equal(r.reordered > 0, c.reordered);
      assert.ok(!("skipped" in r.verification));
      // the export's own check, on evaluation sequence 0 ...
      assert.ok(r.verification.fullRelDiff <= 1e-3 && r.verification.cachedRelDiff <= 1e-3);
      // ... and again here on another sequence, against the model `gptq eval` loads
      const tokens = rows[1].subarray(0, 96);
      const reference = DecoderModel.load(dir).forward(tokens);
      const d = await decoder(out);
      const check = await checkDecoder(d, tokens, reference);
      await d.release();
      assert.ok(check.fullRelDiff <= 1e-3, `one run: ${check.fullRelDiff}`);
      assert.ok(check.cachedRelDiff <= 1e-3, `through the cache: ${check.cachedRelDiff}`);
    },
  );

test(
  "a left-padded batch gives each sequence's own logits, and a cached step after it",
  { skip },
  async () => {
    const dir = join(root, "q0");
    const out = join(root, "batch-onnx");
    await exportOnnx(dir, out, { verify: false });
    const d = await decoder(out);
    const rows = evalRows();
    const a = Array.from(rows[2].subarray(0, 20));
    const b = Array.from(rows[3].subarray(0, 12));
    const pad = a.length - b.length;
    // transformers' convention: padding positions masked, real tokens numbered from 0
    const first = await d.step(
      [a, [...new Array<number>(pad).fill(0), ...b]],
      [new Array<number>(20).fill(1), [...new Array<number>(pad).fill(0), ...new Array<number>(12).fill(1)]],
      [a.map((_, t) => t), [...new Array<number>(pad).fill(1), ...b.map((_, t) => t)]],
      d.emptyCache(2),
    );
    const next = [rows[2][20], rows[3][12]];
    const second = await d.step(
      [[next[0]], [next[1]]],
      [new Array<number>(21).fill(1), [...new Array<number>(pad).fill(0), ...new Array<number>(13).fill(1)]],
      [[20], [12]],
      first.present,
    );
    const V = 512;
    const alone = async (tokens: number[]) => (await d.forward(Int32Array.from(tokens))).logits;
    const wantA = await alone([...a, next[0]]);
    const wantB = await alone([...b, next[1]]);
    await d.release();
    const rowsOf = (x: Float32Array, from: number, to: number) => x.subarray(from * V, to * V);
    assert.ok(relativeDifference(rowsOf(first.logits, 0, 20), rowsOf(wantA, 0, 20)) <= 1e-5);
    assert.ok(relativeDifference(rowsOf(first.logits, 20 + pad, 40), rowsOf(wantB, 0, 12)) <= 1e-5);
    assert.ok(relativeDifference(rowsOf(second.logits, 0, 1), rowsOf(wantA, 20, 21)) <= 1e-5);
    assert.ok(relativeDifference(rowsOf(second.logits, 1, 2), rowsOf(wantB, 12, 13)) <= 1e-5);
  },
);

test(
  "the folder: names transformers.js and onnxruntime-genai read, external data on request",
  { skip },
  async () => {
    const dir = join(root, "q2");
    const out = join(root, "external-onnx");
    const r = await exportOnnx(dir, out, { externalData: true, tokens: evalRows()[0].subarray(0, 32) });
    assert.deepEqual(r.files, [
      "config.json",
      GENAI_CONFIG_FILE,
      "generation_config.json",
      ONNX_MODEL_FILE,
      "onnx/model.onnx_data",
    ]);
    assert.ok(
      r.externalDataBytes > 2 * r.modelBytes,
      `${r.externalDataBytes} external, ${r.modelBytes} inline`,
    );
    assert.ok(!("skipped" in r.verification) && r.verification.fullRelDiff <= 1e-3);
    const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
    assert.equal(config.quantization_config, undefined);
    assert.equal(config["transformers.js_config"].use_external_data_format, true);
    assert.ok(!existsSync(join(out, "quantize_config.json")));
    const genai = JSON.parse(readFileSync(join(out, GENAI_CONFIG_FILE), "utf8"));
    assert.equal(genai.model.decoder.filename, ONNX_MODEL_FILE);
    assert.deepEqual(
      [
        genai.model.decoder.num_key_value_heads,
        genai.model.decoder.head_size,
        genai.model.decoder.num_hidden_layers,
      ],
      [4, 8, 5],
    );
    assert.equal(genai.model.decoder.inputs.past_key_names, "past_key_values.%d.key");
    const session = await ORT!.InferenceSession.create(join(out, ONNX_MODEL_FILE));
    const layers = [0, 1, 2, 3, 4];
    assert.deepEqual(session.inputNames, [
      "input_ids",
      "attention_mask",
      "position_ids",
      ...layers.flatMap((i) => [`past_key_values.${i}.key`, `past_key_values.${i}.value`]),
    ]);
    assert.deepEqual(session.outputNames, [
      "logits",
      ...layers.flatMap((i) => [`present.${i}.key`, `present.${i}.value`]),
    ]);
    await session.release();
    // the same graph with its weights inside the model file computes the same logits
    const inline = join(root, "inline-onnx");
    await exportOnnx(dir, inline, { verify: false });
    const tokens = evalRows()[4].subarray(0, 24);
    const [x, y] = [await decoder(out), await decoder(inline)];
    assert.deepEqual((await x.forward(tokens)).logits, (await y.forward(tokens)).logits);
    await Promise.all([x.release(), y.release()]);
  },
);

test("impossible requests are refused before any work and leave nothing behind", { skip }, async () => {
  const dir = join(root, "q0");
  await assert.rejects(
    exportOnnx(dir, join(root, "x1"), { tokens: Int32Array.of(1, 600) }),
    /token 600 is outside the vocabulary \[0, 512\)/,
  );
  await assert.rejects(exportOnnx(dir, join(dir, "inside")), /inside the input/);
  await assert.rejects(exportOnnx(dir, join(root, "q1")), /already exists/);
  await assert.rejects(
    exportOnnx(sharedPath("models", "tiny", "falcon"), join(root, "x2")),
    /model_type "falcon" cannot be exported to ONNX/,
  );
  for (const p of [join(root, "x1"), join(dir, "inside"), join(root, "x2")]) assert.ok(!existsSync(p), p);
});
