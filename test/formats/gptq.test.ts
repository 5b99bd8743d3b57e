import { test } from "node:test";
import assert from "node:assert/strict";
import { firstOutOfRange, packCols, packRows, unpackCols, unpackRows } from "../../src/formats/bitpack.js";
import {
  packGptq,
  unpackGptq,
  qzerosV1ToV2,
  qzerosV2ToV1,
  hasActOrder,
  gptqShapeProblem,
} from "../../src/formats/gptq.js";
import { dequantize, dequantizeAs } from "../../src/formats/dequantize.js";
import { floatsToBf16s, floatsToHalfs } from "../../src/tensor/dtype.js";
import { Bits, numGroups } from "../../src/formats/types.js";
import { GptqError } from "../../src/util/errors.js";
import { randomLayer, referenceWeights, rng } from "./helpers.js";

/** Bit-by-bit reference of one little-endian stream: value i at bits [b·i, b·i + b). */
function naiveStream(values: number[], bits: number): number[] {
  const words = new Array<number>((values.length * bits) / 32).fill(0);
  values.forEach((v, i) => {
    for (let j = 0; j < bits; j++) if ((v >> j) & 1) words[(i * bits + j) >> 5] |= 1 << ((i * bits + j) & 31);
  });
  return words;
}

for (const bits of [2, 3, 4, 8] as Bits[]) {
  test(`${bits}-bit packRows/packCols match a bit-by-bit stream and invert`, () => {
    const r = rng(bits);
    const rows = 64;
    const cols = 96;
    const v = Uint8Array.from({ length: rows * cols }, () => Math.floor(r() * (1 << bits)));
    const byRows = packRows(v, rows, cols, bits);
    const wordsPerCol = (rows * bits) / 32;
    for (let c = 0; c < cols; c++) {
      const col = Array.from({ length: rows }, (_, i) => v[i * cols + c]);
      const ref = naiveStream(col, bits);
      for (let w = 0; w < wordsPerCol; w++)
        assert.equal(byRows[w * cols + c], ref[w], `column ${c} word ${w}`);
    }
    assert.deepEqual(unpackRows(byRows, rows, cols, bits), v);
    // values at an odd byte offset take the byte-at-a-time loop (4 bits: not the word-at-a-time one)
    const shifted = new Uint8Array(v.length + 1).subarray(1);
    shifted.set(v);
    assert.deepEqual(packRows(shifted, rows, cols, bits), byRows);
    const byCols = packCols(v, rows, cols, bits);
    const wpr = (cols * bits) / 32;
    for (let i = 0; i < rows; i++) {
      const ref = naiveStream(Array.from(v.subarray(i * cols, (i + 1) * cols)), bits);
      assert.deepEqual(Array.from(byCols.subarray(i * wpr, (i + 1) * wpr)), ref, `row ${i}`);
    }
    assert.deepEqual(unpackCols(byCols, rows, cols, bits), v);
  });
}

const groupings = [
  { K: 256, groupSize: 128 },
  { K: 256, groupSize: -1 },
  { K: 224, groupSize: 96 }, // partial last group: G = 3, the last holds 32 rows
  { K: 256, groupSize: 32, actOrder: true },
];

for (const bits of [2, 3, 4, 8] as Bits[])
  for (const g of groupings)
    for (const version of ["v1", "v2"] as const) {
      const N = 96;
      const name = `${bits}-bit K=${g.K} group ${g.groupSize}${g.actOrder ? " act-order" : ""} ${version}`;
      test(`${name}: pack -> unpack round trip, dequantize matches the float64 reference`, () => {
        const layer = randomLayer({
          N,
          bits,
          ...g,
          zeros: version === "v1" ? "asym" : "asym0",
          seed: bits * 7 + g.K,
        });
        if (g.actOrder) assert.ok(hasActOrder(layer.gIdx, layer.groupSize));
        const t = packGptq(layer, version);
        const G = numGroups(g.K, g.groupSize);
        assert.equal(t.qweight.length, ((g.K * bits) / 32) * N);
        assert.equal(t.qzeros.length, (G * N * bits) / 32);
        const back = unpackGptq(t, layer, version);
        assert.deepEqual(back.codes, layer.codes);
        assert.deepEqual(back.zeros, layer.zeros);
        assert.deepEqual(back.scales, layer.scales);
        assert.deepEqual(back.gIdx, layer.gIdx);
        const W = dequantize(back);
        const ref = referenceWeights(layer);
        for (let i = 0; i < W.length; i++) assert.equal(W[i], Math.fround(ref[i]));
      });
    }

for (const bits of [2, 3, 4, 8] as Bits[])
  test(`${bits}-bit v1 <-> v2 on packed words equals packing each version`, () => {
    // every zero from 1 to 2^b - 1, so 3-bit zeros whose low bits are all ones straddle words too
    const layer = randomLayer({ K: 64, N: 64, bits, groupSize: 16, zeros: "asym", seed: 3 });
    const G = 4;
    for (let i = 0; i < layer.zeros.length; i++) layer.zeros[i] = 1 + (i % ((1 << bits) - 1));
    const v1 = packGptq(layer, "v1").qzeros;
    const v2 = packGptq(layer, "v2").qzeros;
    assert.deepEqual(qzerosV1ToV2(v1, G, 64, bits), v2);
    assert.deepEqual(qzerosV2ToV1(v2, G, 64, bits), v1);
  });

test("v1 refuses an asymmetric zero point of 0; v2 stores it", () => {
  const layer = randomLayer({ K: 64, N: 32, bits: 4, groupSize: 32, zeros: "asym", seed: 9 });
  layer.zeros[33] = 0;
  assert.throws(
    () => packGptq(layer, "v1"),
    (e: Error) => {
      assert.ok(e instanceof GptqError);
      assert.match(e.message, /zero point 0 of group 1, output 1.*gptq_v2/);
      return true;
    },
  );
  const v2 = packGptq(layer, "v2");
  assert.equal(unpackGptq(v2, layer, "v2").zeros[33], 0);
  assert.throws(() => qzerosV2ToV1(v2.qzeros, 2, 32, 4), /zero point 0/);
});

test("v1 qzeros holding 2^b - 1 (a wrapped zero of 0) are refused on unpack", () => {
  const layer = randomLayer({ K: 64, N: 32, bits: 4, groupSize: 32, zeros: "asym", seed: 10 });
  layer.zeros.fill(15);
  const v2 = packGptq(layer, "v2"); // read as v1, every stored 15 would mean a zero of 16
  assert.throws(() => unpackGptq(v2, layer, "v1"), /impossible/);
  assert.throws(() => qzerosV1ToV2(v2.qzeros, 2, 32, 4), /not a valid v1 zero/);
});

test("shapes the packing cannot hold are refused with the fix", () => {
  const cases: [number, number, Bits, RegExp][] = [
    [48, 32, 3, /in_features 48 is not a multiple of 32.*pad in_features to 64/],
    [64, 40, 3, /out_features 40 is not a multiple of 32/],
    [60, 32, 4, /in_features 60 is not a multiple of 8/],
    [64, 12, 4, /out_features 12 is not a multiple of 8/],
    [64, 30, 2, /out_features 30 is not a multiple of 16/],
    [66, 32, 8, /in_features 66 is not a multiple of 4/],
  ];
  for (const [K, N, bits, re] of cases) {
    assert.match(gptqShapeProblem({ inFeatures: K, outFeatures: N, bits, groupSize: -1 }) ?? "", re);
    const layer = randomLayer({ K, N, bits, groupSize: -1, seed: 1 });
    assert.throws(
      () => packGptq(layer, "v2"),
      (e: Error) => e instanceof GptqError && re.test(e.message),
    );
  }
  const l = randomLayer({ K: 64, N: 32, bits: 4, groupSize: 32 });
  assert.throws(() => packGptq({ ...l, bits: 5 as Bits }, "v2"), /unsupported bit width 5/);
});

test("codes, zeros and g_idx out of range are refused, not packed into neighbours", () => {
  const l = randomLayer({ K: 64, N: 32, bits: 4, groupSize: 32 });
  const codes = l.codes.slice();
  codes[70] = 16;
  assert.throws(() => packGptq({ ...l, codes }, "v2"), /code 16 at row 2, column 6 does not fit in 4 bits/);
  const gIdx = l.gIdx.slice();
  gIdx[5] = 2;
  assert.throws(() => packGptq({ ...l, gIdx }, "v2"), /g_idx\[5\] = 2 is outside the 2 groups/);
  const t = packGptq(l, "v2");
  assert.throws(
    () => unpackGptq({ ...t, qweight: t.qweight.subarray(1) }, l, "v2"),
    /qweight has 255 elements, expected \[8, 32\]/,
  );
});

test("dequantizeAs stores the weights as F16 / BF16 bits equal to converting the fp32 matrix", () => {
  const layer = randomLayer({
    K: 96,
    N: 40,
    bits: 8,
    groupSize: 32,
    zeros: "asym0",
    actOrder: true,
    seed: 21,
  });
  const W = dequantize(layer);
  assert.deepEqual(dequantizeAs(layer, "F16"), floatsToHalfs(W));
  assert.deepEqual(dequantizeAs(layer, "BF16"), floatsToBf16s(W));
  assert.deepEqual(dequantizeAs(layer, "F32"), W);
});

test("firstOutOfRange finds the first wide value at any alignment", () => {
  const buf = new Uint8Array(64).fill(3);
  for (let off = 0; off < 5; off++)
    for (const at of [0, 1, 5, 17, 40]) {
      const v = buf.slice().subarray(off, off + 45);
      assert.equal(firstOutOfRange(v, 2), -1);
      if (at < v.length) {
        v[at] = 4;
        v[Math.min(at + 3, v.length - 1)] = 200;
        assert.equal(firstOutOfRange(v, 2), at, `offset ${off}, at ${at}`);
      }
    }
  assert.equal(firstOutOfRange(Uint8Array.of(255, 255), 8), -1);
});
