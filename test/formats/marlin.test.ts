import { test } from "node:test";
import assert from "node:assert/strict";
import { packMarlin, unpackMarlin, marlinLayerProblem } from "../../src/formats/marlin.js";
import { packGptq } from "../../src/formats/gptq.js";
import { gptqToMarlin, marlinToGptq } from "../../src/formats/repack.js";
import { GptqError } from "../../src/util/errors.js";
import { randomLayer } from "./helpers.js";

for (const [K, N, groupSize] of [
  [256, 128, 128],
  [384, 192, -1],
  [128, 64, 128], // one group of 128: stored with the per-channel scale order, as Marlin does
  [160, 64, 128], // partial last group
] as const)
  test(`Marlin ${K}x${N} group ${groupSize}: pack -> unpack and GPTQ round trips`, () => {
    const layer = randomLayer({ K, N, bits: 4, groupSize, zeros: "sym", seed: K + N });
    const m = packMarlin(layer);
    assert.equal(m.B.length, (K / 16) * 2 * N);
    const back = unpackMarlin(m, layer);
    assert.deepEqual(back.codes, layer.codes);
    assert.deepEqual(back.scales, layer.scales);
    assert.deepEqual(back.zeros, layer.zeros);
    assert.deepEqual(back.gIdx, layer.gIdx);
    const g = packGptq(layer, "v1");
    assert.deepEqual(gptqToMarlin(g, layer, "v1"), m);
    assert.deepEqual(marlinToGptq(m, layer, "v2"), packGptq(layer, "v2"));
  });

test("Marlin refuses what it cannot store, saying why", () => {
  const ok = () => randomLayer({ K: 256, N: 128, bits: 4, groupSize: 128, zeros: "sym" });
  const cases: [ReturnType<typeof ok>, RegExp][] = [
    [randomLayer({ K: 256, N: 128, bits: 4, groupSize: 128, zeros: "asym" }), /symmetric only.*zero point/],
    [randomLayer({ K: 256, N: 128, bits: 4, groupSize: 128, zeros: "sym", actOrder: true }), /act-order/],
    [randomLayer({ K: 256, N: 128, bits: 8, groupSize: 128, zeros: "sym" }), /4-bit weights only, not 8-bit/],
    [randomLayer({ K: 256, N: 128, bits: 4, groupSize: 64, zeros: "sym" }), /group size 128 or -1, not 64/],
    [
      randomLayer({ K: 264, N: 128, bits: 4, groupSize: -1, zeros: "sym" }),
      /in_features 264.*multiple of 16/,
    ],
    [
      randomLayer({ K: 256, N: 96, bits: 4, groupSize: 128, zeros: "sym" }),
      /out_features 96.*multiple of 64/,
    ],
  ];
  assert.equal(marlinLayerProblem(ok()), undefined);
  for (const [layer, re] of cases) {
    assert.match(marlinLayerProblem(layer) ?? "", re);
    assert.throws(
      () => packMarlin(layer),
      (e: Error) => e instanceof GptqError && re.test(e.message),
    );
  }
  const m = packMarlin(ok());
  assert.throws(
    () => unpackMarlin({ ...m, s: m.s.subarray(1) }, { inFeatures: 256, outFeatures: 128, groupSize: 128 }),
    /Marlin s has 255 elements/,
  );
});
