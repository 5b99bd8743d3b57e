// One place answers "can kernel K run this layer": the shape rules `check` lists, the GPU, the layer's data.
import { test } from "node:test";
import assert from "node:assert/strict";
import { canRun, deviceCapability, layerQuery } from "../../src/kernels/can-run.js";
import {
  GPTQ_TS_DEQUANT,
  GPTQ_TS_KERNELS,
  GPTQ_TS_W4A16,
  pickKernel,
  sortsIntoGroups,
  w4a16LayerVerdict,
} from "../../src/kernels/gptq-ts.js";
import { checkKernel } from "../../src/kernels/registry.js";
import { KernelQuery } from "../../src/kernels/types.js";
import { QuantizedLinear } from "../../src/formats/types.js";
import { randomLayer } from "../formats/helpers.js";

const q: KernelQuery = {
  inFeatures: 4096,
  outFeatures: 4096,
  bits: 4,
  groupSize: 128,
  sym: true,
  actOrder: false,
};

/** A 4-bit symmetric layer (zero points all 8), act-order rows shuffled when asked. */
const layer4 = (actOrder = false, K = 256, groupSize = 64): QuantizedLinear =>
  randomLayer({ K, N: 128, bits: 4, groupSize, zeros: "sym", actOrder, seed: 3 });

test("W4A16 with a device: refused below sm_90 with the reason, taken on sm_90 and later", () => {
  assert.deepEqual(canRun(GPTQ_TS_W4A16, q), { ok: true });
  const sm80 = canRun(GPTQ_TS_W4A16, q, { sm: 80 });
  assert.equal(sm80.ok, false);
  assert.equal(sm80.reason, "needs sm_90 or later, this GPU is sm_80");
  assert.match(sm80.fix ?? "", /sm_90 or later GPU/);
  assert.equal(
    canRun(GPTQ_TS_W4A16, q, deviceCapability("sm_86")).reason,
    "needs sm_90 or later, this GPU is sm_86",
  );
  for (const arch of ["sm_90a", "sm_100a", "sm_120"])
    assert.deepEqual(canRun(GPTQ_TS_W4A16, q, deviceCapability(arch)), { ok: true }, arch);
  assert.deepEqual(deviceCapability("sm_90a"), { sm: 90, arch: "sm_90a" });
  // the shape rules come first: an 8-bit layer is refused for its bits whatever the GPU
  assert.match(canRun(GPTQ_TS_W4A16, { ...q, bits: 8 }, { sm: 80 }).reason ?? "", /^8-bit is not supported/);
  // the dequant path runs anywhere
  assert.deepEqual(canRun(GPTQ_TS_DEQUANT, q, { sm: 80 }), { ok: true });
});

test("dispatch picks by the same rule: W4A16 on sm_90, dequant below, a forced W4A16 refused below", () => {
  assert.equal(pickKernel(q), GPTQ_TS_W4A16);
  assert.equal(pickKernel(q, undefined, { sm: 90 }), GPTQ_TS_W4A16);
  assert.equal(pickKernel(q, undefined, { sm: 80 }), GPTQ_TS_DEQUANT);
  assert.throws(
    () => pickKernel(q, "gptq-ts-w4a16", { sm: 80, arch: "sm_80" }),
    /^Error: gptq-ts-w4a16: needs sm_90 or later, this GPU is sm_80 \(run it on an sm_90 or later GPU/,
  );
  // `check`'s verdict, on a device: the failing kernel's fix names the kernels that do run the layer
  const v = checkKernel(GPTQ_TS_W4A16, q, GPTQ_TS_KERNELS, { sm: 80 });
  assert.deepEqual(v, {
    ok: false,
    reason: "needs sm_90 or later, this GPU is sm_80",
    fix: "run it on an sm_90 or later GPU (H100, H200); or use kernel gptq-ts-dequant",
    alternatives: ["gptq-ts-dequant"],
  });
  // without a device or data, `check`'s verdict is the query's (with the kernels that run it as it is)
  const q3 = { ...q, bits: 3 as const };
  assert.equal(checkKernel(GPTQ_TS_W4A16, q3).reason, GPTQ_TS_W4A16.supports(q3).reason);
});

test("an unpacked layer: its zero points and g_idx are checked, not only its query", () => {
  const sym = layer4();
  assert.deepEqual(layerQuery(sym), {
    inFeatures: 256,
    outFeatures: 128,
    bits: 4,
    groupSize: 64,
    sym: true,
    actOrder: false,
  });
  assert.deepEqual(canRun(GPTQ_TS_W4A16, sym), { ok: true });
  assert.equal(canRun(GPTQ_TS_W4A16, sym, { sm: 80 }).ok, false);
  assert.equal(pickKernel(sym), GPTQ_TS_W4A16);

  // asymmetric: refused, with the fix to quantize symmetric
  const asym = randomLayer({ K: 256, N: 128, bits: 4, groupSize: 64, zeros: "asym", seed: 3 });
  assert.equal(layerQuery(asym).sym, false);
  const a = canRun(GPTQ_TS_W4A16, asym, { sm: 90 });
  assert.equal(a.reason, "asymmetric zero points are not supported (symmetric only)");
  assert.match(a.fix ?? "", /quantize symmetric/);
  assert.equal(pickKernel(asym), GPTQ_TS_DEQUANT);

  // act-order whose g_idx sorts into groups of 64 rows: taken (rows are stored sorted by group)
  const act = layer4(true);
  assert.equal(layerQuery(act).actOrder, true);
  assert.deepEqual(canRun(GPTQ_TS_W4A16, act, { sm: 90 }), { ok: true });

  // act-order whose groups do not hold 64 rows each: the query passes, the layer does not
  const odd = layer4(true);
  const row = odd.gIdx.indexOf(1);
  odd.gIdx[row] = 0; // group 0 now holds 65 rows, group 1 63
  assert.equal(GPTQ_TS_W4A16.supports(layerQuery(odd)).ok, true, "a query cannot see it");
  const o = canRun(GPTQ_TS_W4A16, odd, { sm: 90 });
  assert.equal(o.ok, false);
  assert.equal(o.reason, "g_idx does not sort into contiguous groups of group_size rows");
  assert.match(o.fix ?? "", /each group holds group_size rows/);
  assert.equal(pickKernel(odd), GPTQ_TS_DEQUANT);
  assert.deepEqual(canRun(GPTQ_TS_DEQUANT, odd), { ok: true });
});

test("what the W4A16 layout packs: a partial last group too, which the dispatch rule still refuses", () => {
  const partial = layer4(false, 400, 128);
  assert.deepEqual(w4a16LayerVerdict(partial), { ok: true });
  assert.equal(
    canRun(GPTQ_TS_W4A16, partial).reason,
    "group size 128 does not divide in_features 400 (no partial groups)",
  );
  assert.match(w4a16LayerVerdict({ ...partial, bits: 8 }).reason ?? "", /^8-bit is not supported/);
  assert.match(
    w4a16LayerVerdict(layer4(false, 264, 64)).reason ?? "",
    /in_features 264 is not a multiple of 16/,
  );
});

test("g_idx sorts into contiguous groups: each group holds group_size rows, the last one the rest", () => {
  const seq = (K: number, g: number) => Int32Array.from({ length: K }, (_, k) => Math.floor(k / g));
  assert.ok(sortsIntoGroups(seq(256, 64), 64));
  assert.ok(sortsIntoGroups(seq(400, 128), 128), "partial last group");
  assert.ok(sortsIntoGroups(seq(256, 64).reverse(), 64), "any order of the rows");
  assert.ok(sortsIntoGroups(new Int32Array(96), -1));
  assert.ok(!sortsIntoGroups(Int32Array.of(0, 0, 0, 1), 2), "3 rows in group 0");
  assert.ok(!sortsIntoGroups(Int32Array.of(0, 0, 2, 2), 2), "group 1 missing");
  assert.ok(!sortsIntoGroups(Int32Array.of(0, 0, -1, 1), 2), "negative group");
  assert.ok(!sortsIntoGroups(Int32Array.of(0, 1, 0, 0), -1), "one group only");
});
