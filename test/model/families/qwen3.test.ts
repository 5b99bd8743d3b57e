// qwen3: see test/helpers/tiny.ts for what every family passes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { gptq } from "../../helpers/cli.js";
import { familyTests, skipUnlessTiny, tinyModel } from "../../helpers/tiny.js";

familyTests("qwen3");

test(
  "qwen3: inspect names the family; check --tp splits o_proj and down_proj by in_features, as the table's roles say",
  { skip: skipUnlessTiny("qwen3") },
  () => {
    const dir = tinyModel("qwen3");
    const inspect = JSON.parse(gptq("inspect", dir, "--json").stdout) as {
      model: { modelType: string; family: string };
    };
    assert.deepEqual([inspect.model.modelType, inspect.model.family], ["qwen3", "qwen3"]);
    const r = gptq("check", dir, "--tp", "2", "--json");
    assert.equal(r.code, 0, r.stderr);
    const layers = (JSON.parse(r.stdout) as { layers: { name: string; shard: { splits: string } }[] }).layers;
    for (const l of layers.filter((x) => x.name.startsWith("model.layers.")))
      assert.equal(l.shard.splits, /\.(o_proj|down_proj)$/.test(l.name) ? "in" : "out", l.name);
  },
);
