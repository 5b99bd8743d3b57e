import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DecoderModel } from "../../src/model/decoder.js";
import { QUALITY_PRESETS, resolveQuality } from "../../src/pipeline/presets.js";
import { PipelineOptions, TOKENS_PER_INPUT, quantizeModel } from "../../src/pipeline/quantize-model.js";
import { writeSyntheticLlama } from "../../src/pipeline/synthetic.js";
import { TINY_SPEC, syntheticTokens } from "../helpers/synthetic.js";
import { PLAIN_GPTQ } from "../helpers/configs.js";

const SCHEME = {
  method: "gptq" as const,
  bits: 4 as const,
  groupSize: 16,
  sym: true,
  descAct: false,
  staticGroups: false,
  damp: 0.01,
};

test("resolveQuality: balanced by default, explicit options win, RTN keeps no GPTQ-only option", () => {
  const balanced = resolveQuality(SCHEME);
  assert.equal(balanced.preset, "balanced");
  assert.deepEqual(balanced.options, { ...SCHEME, ...QUALITY_PRESETS.balanced.options });
  assert.deepEqual(balanced.overridden, []);

  const fast = resolveQuality(SCHEME, "fast");
  assert.deepEqual(fast.options, { ...SCHEME, ...QUALITY_PRESETS.fast.options });

  const mixed = resolveQuality({ ...SCHEME, fpTarget: false, refine: 3 }, "best");
  assert.deepEqual(mixed.overridden, ["fpTarget", "refine"]);
  assert.equal(mixed.options.fpTarget, false);
  assert.equal(mixed.options.refine, 3);
  assert.equal(mixed.options.clip, QUALITY_PRESETS.best.options.clip);

  // undefined is "not given": the preset's value stays
  assert.equal(resolveQuality({ ...SCHEME, fpTarget: undefined }, "balanced").options.fpTarget, true);

  const rtn = resolveQuality({ ...SCHEME, method: "rtn" }, "best").options;
  assert.deepEqual([rtn.fpTarget, rtn.freshGroups, rtn.refine, rtn.clip], [false, false, 0, "minmax"]);
  assert.equal(resolveQuality({ ...SCHEME, method: "rtn", clip: "mse" }).options.clip, "mse");

  assert.throws(
    () => resolveQuality(SCHEME, "slow" as never),
    /unknown preset "slow"; use one of fast, balanced, best/,
  );
});

test("data-hungry options fall back per projection group when calibration tokens are too few", () => {
  const dir = mkdtempSync(join(tmpdir(), "gptq-presets-"));
  try {
    writeSyntheticLlama(dir, TINY_SPEC);
    const run = (opts: PipelineOptions, calib: Int32Array[]) =>
      quantizeModel(DecoderModel.load(dir), calib, opts);
    const asked: PipelineOptions = { ...PLAIN_GPTQ, groupSize: 16, fpTarget: true, refine: 1 };
    // 8 x 160 = 1280 tokens: fp-target fits the 32-input projections (1024 needed) but not down_proj's 48
    // inputs (1536 needed); refine fits all of them (64 and 96 needed)
    assert.deepEqual([TOKENS_PER_INPUT.fpTarget, TOKENS_PER_INPUT.refine], [32, 2]);
    const some = run(asked, syntheticTokens(TINY_SPEC, 8, 160, 1));
    for (const r of some.reports)
      if (r.linear === "down_proj")
        assert.equal(r.fallback, "1280 calibration tokens: no fp-target (needs 1536 tokens)");
      else assert.equal(r.fallback, undefined, r.name);

    // 2 x 16 = 32 tokens: every data-hungry option off everywhere, so the result is plain GPTQ's
    const few = syntheticTokens(TINY_SPEC, 2, 16, 2);
    const none = run(asked, few);
    const plain = run({ ...asked, fpTarget: false, refine: 0 }, few);
    assert.equal(
      none.reports.find((r) => r.linear === "q_proj")!.fallback,
      "32 calibration tokens: no fp-target (needs 1024 tokens), no refine (needs 64 tokens)",
    );
    for (const [name, layer] of plain.layers) {
      assert.deepEqual(none.layers.get(name)!.codes, layer.codes, name);
      assert.deepEqual(none.layers.get(name)!.scales, layer.scales, name);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
