/**
 * Mixture-of-experts families (Mixtral, Qwen3-MoE): the router against a hand-computed softmax, and the
 * fp32 forward and perplexity against transformers' own on ../shared/models/tiny.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseModelConfig } from "../../src/model/config.js";
import { DecoderModel } from "../../src/model/decoder.js";
import { routeTokens } from "../../src/model/moe.js";
import { perplexity } from "../../src/model/perplexity.js";
import { skipUnlessTiny, tinyModel, tinyReference } from "../helpers/tiny.js";

test("routing: softmax over all experts, top-k, renormalised only where the family says", () => {
  // weights proportional to 1, 2, 3, 4 (softmax of their logs): the top 2 are experts 3 and 2
  const logits = Float32Array.from([1, 2, 3, 4].map(Math.log));
  const plain = routeTokens(logits, 1, { count: 4, topK: 2, normalizeTopK: false });
  assert.deepEqual([...plain.experts], [3, 2]);
  assert.deepEqual([...plain.weights], [0.4, 0.3].map(Math.fround));
  const normalised = routeTokens(logits, 1, { count: 4, topK: 2, normalizeTopK: true });
  assert.deepEqual([...normalised.weights], [4 / 7, 3 / 7].map(Math.fround));
});

for (const family of ["mixtral", "qwen3_moe"]) {
  test(
    `${family}: fp32 logits and perplexity reproduce transformers'`,
    { skip: skipUnlessTiny(family) },
    () => {
      const ref = tinyReference(family);
      const model = DecoderModel.load(tinyModel(family));
      let worst = 0;
      ref.tokens.forEach((tokens, s) => {
        const got = model.forward(tokens);
        assert.equal(got.length, ref.logits[s].length);
        for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - ref.logits[s][i]));
      });
      assert.ok(worst <= 1e-3, `max abs logit difference ${worst}`);
      const { ppl } = perplexity(model, ref.tokens);
      assert.ok(Math.abs(ppl / ref.ppl - 1) < 1e-4, `perplexity ${ppl}, transformers ${ref.ppl}`);
    },
  );
}

test(
  "qwen3_moe configs with dense MLP layers are refused by name",
  { skip: skipUnlessTiny("qwen3_moe") },
  () => {
    const raw = JSON.parse(readFileSync(join(tinyModel("qwen3_moe"), "config.json"), "utf8"));
    assert.throws(() => parseModelConfig({ ...raw, mlp_only_layers: [1] }), /mlp_only_layers/);
    assert.throws(
      () => parseModelConfig({ ...raw, num_experts_per_tok: 9 }),
      /num_experts_per_tok 9 is more than/,
    );
    const c = parseModelConfig(raw);
    assert.deepEqual([c.intermediateSize, c.experts], [96, { count: 8, topK: 2, normalizeTopK: true }]);
  },
);
