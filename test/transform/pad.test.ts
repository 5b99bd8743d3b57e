import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeCheckpointTensors, TensorStore } from "../../src/io/store.js";
import { parseModelConfig, readModelConfig } from "../../src/model/config.js";
import { DecoderModel } from "../../src/model/decoder.js";
import { multipleTarget, planPadding } from "../../src/model/pad-plan.js";
import { padCheckpoint } from "../../src/transform/pad.js";
import { toFloat32 } from "../../src/tensor/tensor.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";
import { STORIES_CONFIG } from "../helpers/configs.js";

const STORIES = STORIES_CONFIG;

/** float64 reference of a SwiGLU MLP: down(silu(gate x) * up x). */
function mlp(
  x: Float32Array,
  gate: Float32Array,
  up: Float32Array,
  down: Float32Array,
  H: number,
  I: number,
) {
  const a = new Float64Array(I);
  for (let i = 0; i < I; i++) {
    let g = 0;
    let u = 0;
    for (let k = 0; k < H; k++) {
      g += gate[i * H + k] * x[k];
      u += up[i * H + k] * x[k];
    }
    a[i] = (g / (1 + Math.exp(-g))) * u;
  }
  const y = new Float64Array(H);
  for (let h = 0; h < H; h++) for (let i = 0; i < I; i++) y[h] += down[h * I + i] * a[i];
  return y;
}

test("padCheckpoint pads gate/up rows and down columns with zeros: the MLP computes exactly the same", async () => {
  const dir = mkdtempSync(join(tmpdir(), "gptq-pad-"));
  try {
    const src = join(dir, "in");
    const out = join(dir, "out");
    const H = 8;
    const I = 12;
    let seed = 7;
    const rand = (n: number) =>
      Float32Array.from(
        { length: n },
        () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1,
      );
    const gate = rand(I * H);
    const up = rand(I * H);
    const down = rand(H * I);
    const norm = rand(H);
    const { mkdirSync } = await import("node:fs");
    mkdirSync(src);
    const p = "model.layers.0.mlp";
    writeCheckpointTensors(src, [
      { name: `${p}.gate_proj.weight`, dtype: "F32", shape: [I, H], data: gate },
      { name: `${p}.up_proj.weight`, dtype: "F32", shape: [I, H], data: up },
      { name: `${p}.down_proj.weight`, dtype: "F32", shape: [H, I], data: down },
      { name: "model.layers.0.post_attention_layernorm.weight", dtype: "F32", shape: [H], data: norm },
    ]);
    const config = {
      model_type: "llama",
      hidden_size: H,
      intermediate_size: I,
      num_attention_heads: 2,
      num_hidden_layers: 1,
      vocab_size: 32,
    };
    writeFileSync(join(src, "config.json"), JSON.stringify(config));
    writeFileSync(join(src, "tokenizer.json"), "{}");
    const before = readdirSync(src).map((f) => [f, readFileSync(join(src, f)).toString("base64")]);

    const plan = planPadding(
      { ...STORIES, hiddenSize: H, intermediateSize: I, numHeads: 2, headDim: 4 },
      multipleTarget(8),
    );
    assert.equal(plan.to, 16);
    const res = await padCheckpoint(src, out, plan);
    assert.equal(res.tensors, 3);

    assert.deepEqual(
      readdirSync(src).map((f) => [f, readFileSync(join(src, f)).toString("base64")]),
      before,
      "input untouched",
    );
    const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
    assert.equal(cfg.intermediate_size, 16);
    assert.equal(cfg.hidden_size, H);
    assert.ok(existsSync(join(out, "tokenizer.json")), "other files copied");
    const store = TensorStore.open(out);
    try {
      const g2 = toFloat32(store.read(`${p}.gate_proj.weight`));
      const u2 = toFloat32(store.read(`${p}.up_proj.weight`));
      const d2 = toFloat32(store.read(`${p}.down_proj.weight`));
      assert.deepEqual(store.info(`${p}.down_proj.weight`).shape, [H, 16]);
      assert.deepEqual(
        [...toFloat32(store.read("model.layers.0.post_attention_layernorm.weight"))],
        [...norm],
      );
      for (let t = 0; t < 5; t++) {
        const x = rand(H).map((v) => v * 3);
        assert.deepEqual([...mlp(x, g2, u2, d2, H, 16)], [...mlp(x, gate, up, down, H, I)]);
      }
    } finally {
      store.close();
    }
    await assert.rejects(padCheckpoint(src, out, plan), /already exists/);
    await assert.rejects(
      padCheckpoint(src, join(dir, "o2"), { ...plan, from: 10 }),
      /intermediate_size is 12/,
    );
    assert.ok(!existsSync(join(dir, "o2")), "nothing left behind on failure");
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test(
  "stories260K padded 172 -> 176 gives bit-identical logits",
  { skip: skipUnlessShared("models", "stories260K", "model.safetensors") },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "gptq-pad-"));
    try {
      const src = sharedPath("models", "stories260K");
      const out = join(dir, "padded");
      const plan = planPadding(readModelConfig(src), multipleTarget(8));
      await padCheckpoint(src, out, plan);
      const a = DecoderModel.load(src);
      const b = DecoderModel.load(out);
      assert.equal(b.config.intermediateSize, 176);
      const tokens = Int32Array.from({ length: 64 }, (_, i) => (i * 37 + 1) % 512);
      assert.deepEqual(b.forward(tokens), a.forward(tokens));
    } finally {
      rmSync(dir, { recursive: true });
    }
  },
);

test(
  "stories260K with hidden_size padded 64 -> 96 (and the intermediate 172 -> 192): the same logits to rounding",
  { skip: skipUnlessShared("models", "stories260K", "model.safetensors") },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "gptq-pad-"));
    try {
      const src = sharedPath("models", "stories260K");
      const source = readModelConfig(src);
      const tokens = Int32Array.from({ length: 64 }, (_, i) => (i * 37 + 1) % 512);
      const want = DecoderModel.load(src).forward(tokens);
      for (const [multiple, to] of [
        [1, 172],
        [64, 192],
      ]) {
        const out = join(dir, `padded-${multiple}`);
        const padded = parseModelConfig({ ...source.raw, hidden_size: 96, head_dim: source.headDim });
        const res = await padCheckpoint(src, out, planPadding(padded, multipleTarget(multiple)), {
          from: 64,
          to: 96,
        });
        assert.deepEqual(res.hidden, { from: 64, to: 96 });
        const b = DecoderModel.load(out);
        assert.deepEqual([b.config.hiddenSize, b.config.headDim, b.config.intermediateSize], [96, 8, to]);
        assert.ok(Math.abs(b.config.normEps - (source.normEps * 64) / 96) < 1e-18);
        const got = b.forward(tokens);
        let worst = 0;
        let scale = 0;
        for (let i = 0; i < want.length; i++) {
          worst = Math.max(worst, Math.abs(got[i] - want[i]));
          scale = Math.max(scale, Math.abs(want[i]));
        }
        assert.ok(worst <= 1e-5 * scale, `logits differ by ${worst} (largest ${scale})`);
      }
      // the zero channels are exactly that: embeddings and the projections writing the stream
      const store = TensorStore.open(join(dir, "padded-1"));
      try {
        const emb = toFloat32(store.read("model.embed_tokens.weight"));
        const o = toFloat32(store.read("model.layers.0.self_attn.o_proj.weight"));
        for (let v = 0; v < 8; v++) for (let c = 64; c < 96; c++) assert.equal(emb[v * 96 + c], 0);
        for (let r = 64; r < 96; r++) for (let c = 0; c < 64; c++) assert.equal(o[r * 64 + c], 0);
      } finally {
        store.close();
      }
    } finally {
      rmSync(dir, { recursive: true });
    }
  },
);
