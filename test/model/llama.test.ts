import { test } from "node:test";
import assert from "node:assert/strict";
import { readAllTensors } from "../../src/io/safetensors.js";
import { DecoderModel } from "../../src/model/decoder.js";
import { perplexity } from "../../src/model/perplexity.js";
import { inverseFrequencies } from "../../src/model/rope.js";
import { parseModelConfig } from "../../src/model/config.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";

const MODEL = ["models", "stories260K"];
const EVAL = ["models", "stories260K-eval.safetensors"];

function evalData(): { tokens: Int32Array[]; logits0: Float32Array; report: Record<string, unknown> } {
  const { tensors, metadata } = readAllTensors(sharedPath(...EVAL));
  const t = tensors.get("evaluation_tokens")!;
  const [n, T] = t.shape;
  const data = t.data as Int32Array;
  const tokens = Array.from({ length: n }, (_, i) => data.subarray(i * T, (i + 1) * T));
  return {
    tokens,
    logits0: tensors.get("evaluation_logits_seq0")!.data as Float32Array,
    report: JSON.parse(metadata.report ?? "{}") as Record<string, unknown>,
  };
}

test(
  "stories260K logits match the PyTorch reference",
  { skip: skipUnlessShared(...MODEL) || skipUnlessShared(...EVAL) },
  () => {
    const model = DecoderModel.load(sharedPath(...MODEL));
    const { tokens, logits0 } = evalData();
    const logits = model.forward(tokens[0]);
    assert.equal(logits.length, logits0.length);
    let maxErr = 0;
    for (let i = 0; i < logits.length; i++) maxErr = Math.max(maxErr, Math.abs(logits[i] - logits0[i]));
    assert.ok(maxErr < 1e-3, `max abs logit error ${maxErr}`);
  },
);

test(
  "stories260K perplexity on evaluation_tokens is 18.256",
  { skip: skipUnlessShared(...MODEL) || skipUnlessShared(...EVAL) },
  () => {
    const model = DecoderModel.load(sharedPath(...MODEL));
    const { tokens } = evalData();
    const { ppl, tokens: n } = perplexity(model, tokens);
    assert.equal(n, tokens.length * (tokens[0].length - 1));
    assert.ok(Math.abs(ppl / 18.256 - 1) < 5e-4, `perplexity ${ppl}`);
    assert.throws(() => perplexity(model, [Int32Array.of(1)]), /at least one sequence of two or more tokens/);
    assert.throws(
      () => model.forward(Int32Array.of(1, 512)),
      /token 512 at position 1 is outside the vocabulary/,
    );
  },
);

test("llama3 rope scaling keeps high frequencies, divides low ones, blends between", () => {
  const scaling = {
    type: "llama3" as const,
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  };
  const base = inverseFrequencies(128, 500000, { type: "default" });
  const scaled = inverseFrequencies(128, 500000, scaling);
  for (let i = 0; i < 64; i++) {
    const wavelen = (2 * Math.PI) / base[i];
    if (wavelen < 8192 / 4) assert.equal(scaled[i], base[i]);
    else if (wavelen > 8192) assert.ok(Math.abs(scaled[i] - base[i] / 8) <= 1e-7 * base[i]);
    else assert.ok(scaled[i] < base[i] && scaled[i] > base[i] / 8, `band ${i}`);
  }
});

test("config: defaults, rope_parameters and rope_scaling spellings, bad values", () => {
  const c = parseModelConfig({
    model_type: "llama",
    hidden_size: 64,
    intermediate_size: 172,
    num_hidden_layers: 2,
    num_attention_heads: 8,
    vocab_size: 10,
    rope_theta: 500000,
    rope_scaling: {
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    },
  });
  assert.equal(c.numKvHeads, 8);
  assert.equal(c.headDim, 8);
  assert.equal(c.ropeTheta, 500000);
  assert.equal(c.ropeScaling.type, "llama3");
  assert.equal(c.tieWordEmbeddings, false);
  const q = parseModelConfig({
    model_type: "qwen2",
    hidden_size: 64,
    intermediate_size: 8,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 32,
    vocab_size: 10,
    sliding_window: 4,
    use_sliding_window: false,
    rope_parameters: { rope_theta: 1e6, rope_type: "default" },
  });
  assert.equal(q.headDim, 32);
  assert.equal(q.ropeTheta, 1e6);
  assert.equal(q.slidingWindow, undefined);
  assert.throws(
    () => parseModelConfig({ ...c.raw, model_type: "gpt2" }),
    /model_type "gpt2" is not supported/,
  );
  assert.throws(() => parseModelConfig({ ...c.raw, num_key_value_heads: 3 }), /not a multiple/);
  assert.throws(
    () => parseModelConfig({ ...c.raw, rope_scaling: { rope_type: "yarn", factor: 4 } }),
    /rope type "yarn"/,
  );
});
