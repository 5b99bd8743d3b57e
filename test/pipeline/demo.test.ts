import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { runDemo } from "../../src/pipeline/demo.js";

test("demo: GPTQ beats RTN, Marlin conversion computes the same, kernels are checked, temp files removed", async () => {
  const r = await runDemo();
  const by = Object.fromEntries(r.rows.map((x) => [x.name, x]));
  const fp = by["fp32"].ppl;
  assert.ok(fp > 1 && Number.isFinite(fp));
  assert.ok(by["RTN"].ppl > fp, "quantization costs something");
  assert.ok(by["GPTQ"].ppl < by["RTN"].ppl, `GPTQ ${by["GPTQ"].ppl} vs RTN ${by["RTN"].ppl}`);
  assert.ok(by["GPTQ"].relError! < by["RTN"].relError!);
  assert.ok(by["GPTQ fp-target"].ppl < by["GPTQ"].ppl);
  // the Marlin checkpoint holds the very same weights: same logits up to fp32 summation order
  assert.ok(Math.abs(by["GPTQ as Marlin"].ppl - by["GPTQ"].ppl) / by["GPTQ"].ppl < 1e-4);
  assert.equal(
    r.kernels["marlin"].ok,
    r.kernels["marlin"].layers,
    "4-bit sym g128 on these shapes fits vLLM Marlin",
  );
  assert.ok(!existsSync(r.dir), "temporary directory removed");
});
