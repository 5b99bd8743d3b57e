import { test } from "node:test";
import assert from "node:assert/strict";
import { KernelRule } from "../../src/kernels/types.js";
import {
  formatTarget,
  fullGroupsTarget,
  kernelTarget,
  multipleTarget,
  planPadding,
} from "../../src/model/pad-plan.js";
import { STORIES_CONFIG } from "../helpers/configs.js";

const STORIES = STORIES_CONFIG;

/** A kernel rule of the usual kind: K and N multiples of fixed sizes. */
function rule(name: string, kMul: number, nMul: number): KernelRule {
  return {
    name,
    description: `test rule K % ${kMul}, N % ${nMul}`,
    ours: false,
    supports: (q) =>
      q.inFeatures % kMul
        ? { ok: false, reason: `in_features ${q.inFeatures} is not a multiple of ${kMul}` }
        : q.outFeatures % nMul
          ? { ok: false, reason: `out_features ${q.outFeatures} is not a multiple of ${nMul}` }
          : { ok: true },
  };
}
const SCHEME = { bits: 4 as const, groupSize: 128, sym: true, actOrder: false };

test("plans the smallest intermediate size that fits: 172 -> 176 (x8), -> 192 (x32), unchanged when it fits", () => {
  assert.equal(planPadding(STORIES, multipleTarget(8)).to, 176);
  assert.equal(planPadding(STORIES, multipleTarget(32)).to, 192);
  assert.equal(planPadding(STORIES, multipleTarget(4)).to, 172);
  // a kernel needing K % 16 and N % 32: gate/up need N = I % 32, down needs K = I % 16 -> 192
  assert.equal(planPadding(STORIES, kernelTarget(rule("k16n32", 16, 32), SCHEME)).to, 192);
});

test("refuses to pad hidden_size, naming the dimension, the layer, the rule and the kernels that accept", () => {
  const strict = kernelTarget(rule("big-tiles", 128, 64), SCHEME);
  const loose = kernelTarget(rule("small-tiles", 32, 32), SCHEME);
  assert.throws(
    () => planPadding(STORIES, strict, [strict, loose]),
    (e: Error) =>
      /q_proj \(64 -> 64\) fails: in_features 64 is not a multiple of 128/.test(e.message) &&
      /hidden_size 64/.test(e.message) &&
      /RMSNorm/.test(e.message) &&
      /accept the model.*kernel small-tiles/.test(e.message) &&
      !/accept the model.*big-tiles/.test(e.message),
  );
  // the key/value width (4 heads x 8) fails an N % 64 rule while hidden (64) passes
  const n64 = kernelTarget(rule("n64", 16, 64), SCHEME);
  assert.throws(() => planPadding(STORIES, n64), /k_proj.*num_key_value_heads x head_dim = 32.*head_dim/);
});

test("--pad auto's target: the packing and full groups, so stories260K's 172 becomes 192 at group 32 (not 176)", () => {
  const scheme = { bits: 4 as const, groupSize: 32, sym: true, descAct: false };
  assert.equal(planPadding(STORIES, formatTarget("gptq", scheme)).to, 176, "packing alone");
  const plan = planPadding(STORIES, fullGroupsTarget(formatTarget("gptq", scheme), 32));
  assert.equal(plan.to, 192);
  assert.equal(plan.target, "gptq 4-bit packing and full groups of 32");
  assert.equal(planPadding(STORIES, fullGroupsTarget(formatTarget("gptq", scheme), 128)).to, 256);
  // group -1: one group over K, always full
  assert.equal(planPadding(STORIES, fullGroupsTarget(formatTarget("gptq", scheme), -1)).to, 176);
});
