/**
 * `activations: "f16"` on the CPU path: every calibration input the Hessians and fp-target's cross term
 * see is fp16-representable (as the GPU path stores them), and without it they are not.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ParallelCross, ParallelHessian } from "../../src/backend/cpu/dense.js";
import { DecoderModel } from "../../src/model/decoder.js";
import { CrossAccumulator } from "../../src/quant/fp-target.js";
import { HessianAccumulator } from "../../src/quant/hessian.js";
import { quantizeModel } from "../../src/pipeline/quantize-model.js";
import { writeSyntheticLlama } from "../../src/pipeline/synthetic.js";
import { floatToHalf, halfToFloat } from "../../src/tensor/dtype.js";
import { PLAIN_GPTQ } from "../helpers/configs.js";
import { TINY_SPEC, syntheticTokens } from "../helpers/synthetic.js";

/** counts of the inputs seen: all values fp16-representable, or not */
interface Seen {
  halfs: number;
  wider: number;
}

function representable(x: Float32Array): boolean {
  for (let i = 0; i < x.length; i++) if (halfToFloat(floatToHalf(x[i])) !== x[i]) return false;
  return true;
}

/** Runs `fn` with every accumulator's `add` recording what it is given. */
function watching(fn: () => void): Seen {
  const seen: Seen = { halfs: 0, wider: 0 };
  const note = (x: Float32Array) => (representable(x) ? seen.halfs++ : seen.wider++);
  const classes = [HessianAccumulator, ParallelHessian, CrossAccumulator, ParallelCross] as const;
  const saved = classes.map((c) => c.prototype.add);
  for (const c of classes) {
    const add = c.prototype.add as (...a: unknown[]) => void;
    c.prototype.add = function (this: unknown, ...args: unknown[]) {
      for (const a of args) if (a instanceof Float32Array) note(a);
      return add.apply(this, args);
    } as never;
  }
  try {
    fn();
  } finally {
    classes.forEach((c, i) => (c.prototype.add = saved[i] as never));
  }
  return seen;
}

test("activations f16: the Hessians and the cross term see fp16 values; by default they see fp32 ones", () => {
  const dir = mkdtempSync(join(tmpdir(), "gptq-activations-"));
  try {
    const spec = { ...TINY_SPEC, numLayers: 2 };
    writeSyntheticLlama(dir, spec);
    // 16 x 128 tokens: enough for fp-target on every group (32 tokens per input of 48)
    const calib = syntheticTokens(spec, 16, 128, 3);
    const opts = { ...PLAIN_GPTQ, fpTarget: true };
    const f16 = watching(() => quantizeModel(DecoderModel.load(dir), calib, { ...opts, activations: "f16" }));
    const f32 = watching(() => quantizeModel(DecoderModel.load(dir), calib, opts));
    assert.equal(f16.wider, 0);
    assert.ok(f16.halfs > 0);
    assert.ok(f32.wider > 0, "fp32 activations are not all fp16 values");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
