/**
 * The device-resident pipeline's planning, on the CPU: when the unquantized model must run alongside
 * (fp-target asked for, and some projection group with the calibration tokens it needs).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DecoderModel } from "../../src/model/decoder.js";
import { fpModelNeeded } from "../../src/pipeline/quantize-model.js";
import { TOKENS_PER_INPUT } from "../../src/pipeline/quantize-model.js";
import { writeSyntheticLlama } from "../../src/pipeline/synthetic.js";
import { PLAIN_GPTQ } from "../helpers/configs.js";
import { TINY_SPEC } from "../helpers/synthetic.js";

test("the fp model runs alongside only with fp-target and a projection group that has the tokens for it", () => {
  const dir = mkdtempSync(join(tmpdir(), "gptq-fp-model-"));
  try {
    writeSyntheticLlama(dir, TINY_SPEC);
    const layer = DecoderModel.load(dir).layers[0];
    const fp = { ...PLAIN_GPTQ, fpTarget: true };
    // the 32-input groups (q/k/v, o, gate/up) are the first to have enough: 32 per input
    const least = TOKENS_PER_INPUT.fpTarget * TINY_SPEC.hiddenSize;
    assert.equal(fpModelNeeded(fp, layer, least), true);
    assert.equal(fpModelNeeded(fp, layer, least - 1), false);
    assert.equal(fpModelNeeded({ ...fp, fpTarget: false }, layer, 100 * least), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
