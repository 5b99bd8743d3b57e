// Bit-exact reproduction of the reference packers' outputs (../shared/fixtures), in both directions.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readAllTensors } from "../../src/io/safetensors.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { halfsToFloats } from "../../src/tensor/dtype.js";
import { packGptq, unpackGptq, qzerosV1ToV2, qzerosV2ToV1 } from "../../src/formats/gptq.js";
import { packMarlin, unpackMarlin } from "../../src/formats/marlin.js";
import { gptqToMarlin, marlinToGptq } from "../../src/formats/repack.js";
import { dequantize } from "../../src/formats/dequantize.js";
import { Bits, QuantizedLinear } from "../../src/formats/types.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";

interface Case {
  name: string;
  [key: string]: unknown;
}

function load(file: string): { cases: Case[]; get: (c: Case, t: string) => Tensor } | undefined {
  if (skipUnlessShared("fixtures", file)) return undefined;
  const { tensors, metadata } = readAllTensors(sharedPath("fixtures", file));
  return {
    cases: JSON.parse(metadata.cases) as Case[],
    get(c, t) {
      const x = tensors.get(`${c.name}/${t}`);
      assert.ok(x, `fixture tensor ${c.name}/${t}`);
      return x;
    },
  };
}

/** [rows, cols] -> [cols, rows] (the fixtures' inputs are in PyTorch's [N, K] / [N, G] layout). */
function transpose<T extends Int32Array | Uint16Array>(t: Tensor, make: (n: number) => T): T {
  const [r, c] = t.shape;
  const src = t.data as ArrayLike<number>;
  const out = make(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = src[i * c + j];
  return out;
}

function same(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++)
    if (actual[i] !== expected[i])
      assert.fail(`${what}: element ${i} is ${actual[i]}, expected ${expected[i]}`);
}

const gptqFile = "public-gptq-pack.safetensors";
const gptq = load(gptqFile);

test("public-gptq-pack holds the 24 cases", { skip: !gptq && "fixtures absent" }, () => {
  assert.equal(gptq!.cases.length, 24);
});

for (const c of gptq?.cases ?? []) {
  const K = c.infeatures as number;
  const N = c.outfeatures as number;
  const bits = c.bits as Bits;
  const groupSize = c.group_size as number;
  const get = (t: string) => gptq!.get(c, t);
  const shape = { inFeatures: K, outFeatures: N, bits, groupSize };
  const input = (): QuantizedLinear => ({
    ...shape,
    codes: Uint8Array.from(transpose(get("in.intweight"), (n) => new Int32Array(n))),
    scales: halfsToFloats(transpose(get("in.scales"), (n) => new Uint16Array(n))),
    zeros: Uint8Array.from(transpose(get("in.zeros"), (n) => new Int32Array(n))),
    gIdx: get("in.g_idx").data as Int32Array,
  });
  const stored = () => ({
    qweight: get("out.qweight").data as Int32Array,
    qzeros: get("out.qzeros").data as Int32Array,
    scales: get("out.scales").data as Uint16Array,
    gIdx: get("out.g_idx").data as Int32Array,
  });

  test(`${c.name}: pack reproduces AutoGPTQ's v1 tensors`, () => {
    const t = packGptq(input(), "v1");
    const ref = stored();
    same(t.qweight, ref.qweight, "qweight");
    same(t.qzeros, ref.qzeros, "qzeros");
    same(t.scales, ref.scales, "scales (fp16 bits)");
    same(t.gIdx, ref.gIdx, "g_idx");
  });

  test(`${c.name}: unpack recovers the inputs`, () => {
    const layer = unpackGptq(stored(), shape, "v1");
    const ref = input();
    same(layer.codes, ref.codes, "codes");
    same(layer.zeros, ref.zeros, "zeros");
    same(new Uint32Array(layer.scales.buffer), new Uint32Array(ref.scales.buffer), "scales");
    same(layer.gIdx, ref.gIdx, "g_idx");
    // and the weights are the fixture's W = scales * (intweight - zeros), computed here independently
    const W = dequantize(layer);
    const iw = get("in.intweight").data as Int32Array; // [N, K]
    const sc = halfsToFloats(get("in.scales").data as Uint16Array); // [N, G]
    const zs = get("in.zeros").data as Int32Array; // [N, G]
    const G = get("in.scales").shape[1];
    for (let n = 0; n < N; n++)
      for (let k = 0; k < K; k++) {
        const g = ref.gIdx[k];
        const w = Math.fround(sc[n * G + g] * (iw[n * K + k] - zs[n * G + g]));
        if (W[n * K + k] !== w) assert.fail(`W[${n}, ${k}] = ${W[n * K + k]}, expected ${w}`);
      }
  });

  test(`${c.name}: v1 <-> v2 on the packed zeros`, () => {
    const ref = stored();
    const G = ref.scales.length / N;
    const v2 = qzerosV1ToV2(ref.qzeros, G, N, bits);
    same(v2, packGptq(input(), "v2").qzeros, "v2 qzeros");
    same(qzerosV2ToV1(v2, G, N, bits), ref.qzeros, "back to v1");
  });
}

const marlinFile = "public-marlin-pack.safetensors";
const marlin = load(marlinFile);

for (const c of marlin?.cases ?? []) {
  const K = c.k as number;
  const N = c.n as number;
  const groupSize = c.group_size as number;
  const get = (t: string) => marlin!.get(c, t);
  const gptqT = () => ({
    qweight: get("gptq.qweight").data as Int32Array,
    qzeros: get("gptq.qzeros").data as Int32Array,
    scales: get("gptq.scales").data as Uint16Array,
    gIdx: get("gptq.g_idx").data as Int32Array,
  });
  const marlinT = () => ({ B: get("marlin.B").data as Int32Array, s: get("marlin.s").data as Uint16Array });
  const shape = { inFeatures: K, outFeatures: N, bits: 4 as const, groupSize };

  test(`${c.name}: GPTQ v1 -> Marlin reproduces the IST-DASLab packer`, () => {
    const m = gptqToMarlin(gptqT(), shape, "v1");
    same(m.B, marlinT().B, "B");
    same(m.s, marlinT().s, "s");
  });

  test(`${c.name}: Marlin -> GPTQ v1 reproduces AutoGPTQ's packer`, () => {
    const g = marlinToGptq(marlinT(), shape, "v1");
    const ref = gptqT();
    same(g.qweight, ref.qweight, "qweight");
    same(g.qzeros, ref.qzeros, "qzeros");
    same(g.scales, ref.scales, "scales");
    same(g.gIdx, ref.gIdx, "g_idx");
  });

  test(`${c.name}: Marlin unpack gives the input codes and scales`, () => {
    const layer = unpackMarlin(marlinT(), shape);
    same(layer.codes, Uint8Array.from(transpose(get("in.intweight"), (n) => new Int32Array(n))), "codes");
    same(new Uint16Array(packMarlin(layer).s), marlinT().s, "s round trip");
    const inScales = get("in.scales").data as Uint16Array; // already [G, N]
    same(new Uint32Array(layer.scales.buffer), new Uint32Array(halfsToFloats(inScales).buffer), "scales");
  });
}
