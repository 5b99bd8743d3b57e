// Phi-3: fused qkv_proj and gate_up_proj (quantized and written fused), and long-rope scaling checked
// against the formula written out here in float64.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseModelConfig } from "../../../src/model/config.js";
import { Rotary } from "../../../src/model/rope.js";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { DecoderModel } from "../../../src/model/decoder.js";
import { perplexity } from "../../../src/model/perplexity.js";
import { tmpDir } from "../../helpers/checkpoints.js";
import { assertOneLineError, gptq } from "../../helpers/cli.js";
import { familyTests, skipUnlessTiny, tinyModel, tinyReference } from "../../helpers/tiny.js";

familyTests("phi3");

const skip = skipUnlessTiny("phi3");

test("phi3 long-rope: short factors up to the original context, long ones past it, cos/sin scaled", () => {
  const dim = 8;
  const short = [1, 1.5, 2, 3];
  const long = [2, 4, 8, 16];
  const c = parseModelConfig({
    model_type: "phi3",
    hidden_size: 16,
    intermediate_size: 32,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    vocab_size: 10,
    max_position_embeddings: 64,
    original_max_position_embeddings: 8,
    rope_parameters: { rope_type: "longrope", rope_theta: 10000, short_factor: short, long_factor: long },
  });
  // transformers: attention_factor = sqrt(1 + ln(64 / 8) / ln(8))
  const attention = Math.sqrt(1 + Math.log(8) / Math.log(8));
  assert.equal(c.ropeScaling.type, "longrope");
  const rotary = Rotary.fromConfig(c);
  for (const [T, factors] of [
    [6, short],
    [12, long],
    [5, short],
  ] as const) {
    // one head of ones rotated at every position: x1 cos - x2 sin, x2 cos + x1 sin
    const x = new Float32Array(T * dim).fill(1);
    rotary.apply(x, T, 1);
    for (let t = 0; t < T; t++)
      for (let i = 0; i < dim / 2; i++) {
        const angle = t / (factors[i] * 10000 ** ((2 * i) / dim));
        const cos = Math.cos(angle) * attention;
        const sin = Math.sin(angle) * attention;
        assert.ok(Math.abs(x[t * dim + i] - (cos - sin)) < 1e-5, `T ${T} t ${t} i ${i}`);
        assert.ok(Math.abs(x[t * dim + i + dim / 2] - (cos + sin)) < 1e-5, `T ${T} t ${t} i ${i}`);
      }
  }
  assert.throws(
    () =>
      parseModelConfig({
        ...c.raw,
        rope_parameters: { rope_type: "longrope", short_factor: [1], long_factor: long },
      }),
    /"short_factor" must be a list of 4 positive numbers/,
  );
});

test(
  "phi3: split and merge take the fused projections' parts and names from the family table",
  { skip },
  () => {
    const root = tmpDir("phi3-split");
    try {
      const q = join(root, "q");
      assert.equal(
        gptq("quantize", tinyModel("phi3"), "--out", q, "--method", "rtn", "--group-size", "32").code,
        0,
      );
      const layer = "model.layers.0.self_attn.qkv_proj";
      const split = gptq("split", q, join(root, "s"), "--layer", layer, "--json");
      assert.equal(split.code, 0, split.stderr);
      const parts = ["q_proj", "k_proj", "v_proj"].map((p) => `model.layers.0.self_attn.${p}`);
      assert.deepEqual(
        (JSON.parse(split.stdout) as { layers: { name: string; outFeatures: number }[] }).layers,
        parts.map((name) => ({ name, outFeatures: 128 })),
      );
      const merge = gptq("merge", join(root, "s"), join(root, "m"), "--layers", parts.join(","), "--json");
      assert.equal(merge.code, 0, merge.stderr);
      assert.equal((JSON.parse(merge.stdout) as { layers: { name: string }[] }).layers[0].name, layer);
      // split, merged back or as stored: the same model
      const ppl = (d: string) => perplexity(DecoderModel.load(d), tinyReference("phi3").tokens).ppl;
      assert.equal(ppl(join(root, "s")), ppl(q));
      assert.equal(ppl(join(root, "m")), ppl(q));
      assert.match(
        assertOneLineError(
          gptq("split", q, join(root, "x"), "--layer", "model.layers.0.self_attn.o_proj"),
          1,
        ),
        /not a fused projection of this model's family: give --sizes and --names/,
      );
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  },
);
