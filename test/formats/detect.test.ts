// Every format finds its layers among a checkpoint's tensor names and inspects each from its headers.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  DETECTABLE_FORMATS,
  FORMATS,
  FormatTraits,
  detectLayers,
  packedText,
  resolveFormat,
} from "../../src/formats/registry.js";
import { HeaderLookup, TensorHeader } from "../../src/formats/headers.js";
import { CHECKPOINT_FORMATS, groupSizeFor } from "../../src/formats/types.js";
import { DType } from "../../src/tensor/dtype.js";
import { Tensor, toInt32 } from "../../src/tensor/tensor.js";
import { randomLayer } from "./helpers.js";

const names = (prefixes: string[], suffixes: string[]) =>
  prefixes.flatMap((p) => suffixes.map((s) => `${p}.${s}`));
const GPTQ_NAMES = names(["m.0.q_proj", "m.0.k_proj"], ["qweight", "qzeros", "scales", "g_idx", "bias"]);
const MARLIN_NAMES = names(["m.1.q_proj", "m.1.k_proj"], ["B", "s", "workspace"]);
const FP_NAMES = ["m.embed_tokens.weight", "m.2.q_proj.weight", "m.norm.weight"];

/** Headers of one layer from a table of suffix -> [dtype, shape]. */
const headers =
  (t: Record<string, [DType, number[]]>): HeaderLookup =>
  (suffix) =>
    t[suffix] ? ({ dtype: t[suffix][0], shape: t[suffix][1] } as TensorHeader) : undefined;

test("the registry holds one enum of formats, and detection tells apart one per set of tensors", () => {
  assert.deepEqual(Object.keys(FORMATS), [...CHECKPOINT_FORMATS]);
  assert.deepEqual(
    DETECTABLE_FORMATS.map((f) => f.name),
    ["gptq", "marlin"],
  );
  for (const f of Object.values(FORMATS)) {
    assert.ok(DETECTABLE_FORMATS.includes(FORMATS[f.detectedAs]), f.name);
    for (const m of f.marker) assert.ok(f.suffixes.includes(m), `${f.name}: marker ${m} is a stored tensor`);
  }
  assert.equal(FORMATS.gptq_v2.detectedAs, "gptq");
  assert.equal(packedText(FORMATS.gptq), "GPTQ-packed (qweight, qzeros, scales, g_idx)");
  assert.equal(packedText(FORMATS.marlin), "Marlin-packed (B, s)");
});

test("each format detects its layers from tensor names alone", () => {
  const all = [...GPTQ_NAMES, ...FP_NAMES];
  assert.deepEqual(FORMATS.gptq.detect(all), ["m.0.q_proj", "m.0.k_proj"]);
  assert.deepEqual(FORMATS.gptq_v2.detect(all), ["m.0.q_proj", "m.0.k_proj"], "v2 stores v1's tensors");
  assert.deepEqual(FORMATS.marlin.detect(all), []);
  assert.deepEqual(FORMATS.marlin.detect([...MARLIN_NAMES, ...FP_NAMES]), ["m.1.q_proj", "m.1.k_proj"]);
  // Marlin's marker is B and s together: a lone B (another model's buffer) is no Marlin layer
  assert.deepEqual(FORMATS.marlin.detect(["m.x.B", "m.y.s"]), []);
  assert.deepEqual(detectLayers(all, "dir"), { format: "gptq", prefixes: ["m.0.q_proj", "m.0.k_proj"] });
  assert.deepEqual(detectLayers([...FP_NAMES, ...MARLIN_NAMES], "dir"), {
    format: "marlin",
    prefixes: ["m.1.q_proj", "m.1.k_proj"],
  });
  assert.deepEqual(detectLayers(FP_NAMES, "dir"), { format: "fp", prefixes: [] });
  assert.deepEqual(detectLayers([], "dir"), { format: "fp", prefixes: [] });
});

test("a checkpoint mixing formats is refused, naming one layer of each", () => {
  assert.throws(
    () => detectLayers([...GPTQ_NAMES, ...MARLIN_NAMES], "/ck"),
    (e: Error) =>
      e.message ===
      "/ck: layers stored in two formats: m.0.q_proj as GPTQ (qweight) and m.1.q_proj as Marlin (B, s); gptq-ts reads one format per checkpoint",
  );
});

test("the config picks among formats that store the same tensors, never across them", () => {
  assert.equal(resolveFormat("gptq"), "gptq");
  assert.equal(resolveFormat("gptq", "gptq_v2"), "gptq_v2");
  assert.equal(resolveFormat("gptq", "marlin"), "gptq");
  assert.equal(resolveFormat("marlin", "gptq_v2"), "marlin");
});

/** Headers of what `write` stores for a layer of this shape. */
const layoutHeaders = (f: FormatTraits, shape: Parameters<FormatTraits["layout"]>[0]): HeaderLookup => {
  const t = f.layout(shape);
  return (suffix) => t.find((x) => x.suffix === suffix);
};

for (const f of Object.values(FORMATS))
  test(`${f.name}: inspecting the headers of what it writes gives back the layer's shape`, () => {
    const shapes =
      f.name === "marlin"
        ? [
            { inFeatures: 512, outFeatures: 128, bits: 4 as const, groupSize: 128 },
            { inFeatures: 4544, outFeatures: 64, bits: 4 as const, groupSize: 128 },
            { inFeatures: 256, outFeatures: 192, bits: 4 as const, groupSize: -1 },
          ]
        : [
            { inFeatures: 512, outFeatures: 128, bits: 4 as const, groupSize: 128 },
            { inFeatures: 288, outFeatures: 64, bits: 8 as const, groupSize: 256 },
            { inFeatures: 96, outFeatures: 32, bits: 3 as const, groupSize: 32 },
            { inFeatures: 64, outFeatures: 64, bits: 2 as const, groupSize: -1 },
          ];
    for (const shape of shapes) {
      const header = layoutHeaders(f, shape);
      const dims = f.inspect("m.0.q_proj", header);
      const G = shape.groupSize === -1 ? 1 : Math.ceil(shape.inFeatures / shape.groupSize);
      assert.deepEqual(dims, {
        inFeatures: shape.inFeatures,
        outFeatures: shape.outFeatures,
        bits: shape.bits,
        groups: G,
      });
      // without g_idx data the group size comes from the group count
      const noIndex: HeaderLookup = (s) => (s === f.groupIndex ? undefined : header(s));
      assert.deepEqual(
        f.grouping("m.0.q_proj", f.inspect("m.0.q_proj", noIndex), noIndex, () =>
          assert.fail("reads nothing"),
        ),
        { groupSize: groupSizeFor(shape.inFeatures, G), actOrder: false },
      );
    }
  });

const GPTQ_OK: Record<string, [DType, number[]]> = {
  qweight: ["I32", [64, 128]], // K 512 at 4 bits
  qzeros: ["I32", [4, 16]],
  scales: ["F16", [4, 128]],
  g_idx: ["I32", [512]],
};

test("GPTQ inspection: each malformed header is refused naming the layer, the tensor and what was expected", () => {
  const p = "m.3.o_proj";
  const cases: [Record<string, [DType, number[]] | undefined>, string][] = [
    [{ qweight: undefined }, `layer ${p}: ${p}.qweight is missing`],
    [{ qzeros: ["F16", [4, 16]] }, `layer ${p}: ${p}.qzeros is F16[4,16], expected a 2-D I32 tensor`],
    [{ scales: ["F16", [512]] }, `layer ${p}: ${p}.scales is F16[512], expected a 2-D F16/BF16/F32 tensor`],
    [
      { scales: ["F16", [4, 64]] },
      `layer ${p}: scales are [4, 64] but qweight has 128 outputs and qzeros 4 groups: expected [4, 128]`,
    ],
    [{ qweight: ["I32", [0, 128]] }, `layer ${p}: qweight is [0, 128], an empty matrix`],
    [
      { qzeros: ["I32", [4, 15]] },
      `layer ${p}: qzeros [4, 15] do not hold 128 zero points at 2, 3, 4 or 8 bits (N * bits / 32 words per group)`,
    ],
    [
      { qweight: ["I32", [65, 128]], qzeros: ["I32", [4, 12]] },
      `layer ${p}: qweight has 65 rows, not a whole number of 3-bit codes`,
    ],
    [
      { qzeros: ["I32", [600, 16]], scales: ["F16", [600, 128]] },
      `layer ${p}: 600 groups for 512 input rows`,
    ],
    [
      { g_idx: ["I32", [500]] },
      `layer ${p}: g_idx has 500 rows but qweight holds 512 (64 words of 8 codes); the packing dropped or added rows: re-pack from the unquantized weights`,
    ],
    [
      { g_idx: ["F32", [512]] },
      `layer ${p}: ${p}.g_idx is F32[512], expected int32[512] (one group index per input row)`,
    ],
    [
      { g_idx: ["I32", [512, 1]] },
      `layer ${p}: ${p}.g_idx is I32[512,1], expected int32[512] (one group index per input row)`,
    ],
  ];
  for (const gptq of [FORMATS.gptq, FORMATS.gptq_v2])
    for (const [change, message] of cases) {
      const t = { ...GPTQ_OK, ...change };
      const header: HeaderLookup = (s) => (t[s] ? { dtype: t[s]![0], shape: t[s]![1] } : undefined);
      assert.throws(
        () => gptq.inspect(p, header),
        (e: Error) => e.message === message,
        message,
      );
    }
  // an int64 g_idx is read as int32
  assert.equal(inspectGptqWith({ g_idx: ["I64", [512]] }).inFeatures, 512);
});

function inspectGptqWith(change: Record<string, [DType, number[]]>) {
  return FORMATS.gptq.inspect("x", headers({ ...GPTQ_OK, ...change }));
}

test("GPTQ grouping: act-order and group size from g_idx, its values checked against the groups", () => {
  const p = "m.3.o_proj";
  const header = headers(GPTQ_OK);
  const dims = FORMATS.gptq.inspect(p, header);
  const read = (g: Int32Array) => (s: string) => {
    assert.equal(s, "g_idx");
    return g;
  };
  const sequential = Int32Array.from({ length: 512 }, (_, k) => k >> 7);
  assert.deepEqual(FORMATS.gptq.grouping(p, dims, header, read(sequential)), {
    groupSize: 128,
    actOrder: false,
  });
  const permuted = Int32Array.from({ length: 512 }, (_, k) => ((k * 7) % 512) >> 7);
  assert.deepEqual(FORMATS.gptq.grouping(p, dims, header, read(permuted)), {
    groupSize: 128,
    actOrder: true,
  });
  const outside = sequential.map((g, k) => (k === 9 ? 4 : g));
  assert.throws(
    () => FORMATS.gptq.grouping(p, dims, header, read(outside)),
    (e: Error) => e.message === `layer ${p}: g_idx[9] is 4, outside the 4 groups that scales hold`,
  );
  // without g_idx, a group count no group size gives is refused
  const { qweight, qzeros, scales } = GPTQ_OK;
  const noIndex = headers({ qweight, qzeros, scales });
  assert.throws(
    () =>
      FORMATS.gptq.grouping(p, { ...dims, inFeatures: 4, groups: 3 }, noIndex, () => assert.fail("no g_idx")),
    (e: Error) => e.message === `layer ${p}: no group size gives 3 groups over 4 rows`,
  );
});

test("GPTQ stored zero points read back as written: v1 zero − 1, v2 as is; Marlin stores none", () => {
  const layer = randomLayer({ K: 256, N: 64, bits: 4, groupSize: 128, zeros: "asym", seed: 5 });
  for (const [f, shift] of [
    [FORMATS.gptq, 1],
    [FORMATS.gptq_v2, 0],
  ] as const) {
    const written = f.write(layer);
    const header: HeaderLookup = (s) => written.find((t) => t.suffix === s);
    const dims = f.inspect("x", header);
    const z = f.storedZeros!(dims, (s) => toInt32(written.find((t) => t.suffix === s) as Tensor));
    assert.deepEqual(
      z,
      layer.zeros.map((v) => v - shift),
    );
  }
  assert.equal(FORMATS.marlin.storedZeros, undefined);
  assert.equal(FORMATS.marlin.groupIndex, undefined);
});

test("Marlin inspection: each malformed header is refused naming the layer", () => {
  const p = "m.4.up_proj";
  const ok: Record<string, [DType, number[]]> = { B: ["I32", [32, 256]], s: ["F16", [4, 128]] };
  const cases: [Record<string, [DType, number[]] | undefined>, string][] = [
    [{ B: undefined }, `layer ${p}: ${p}.B is missing`],
    [{ s: undefined }, `layer ${p}: ${p}.s is missing`],
    [{ B: ["F16", [32, 256]] }, `layer ${p}: ${p}.B is F16[32,256], expected a 2-D I32 tensor`],
    [{ s: ["I32", [4, 128]] }, `layer ${p}: ${p}.s is I32[4,128], expected a 2-D F16/BF16/F32 tensor`],
    [
      { B: ["I32", [32, 200]] },
      `layer ${p}: Marlin B is [32, 200] but s has 128 outputs: expected [32, 256]`,
    ],
    [{ B: ["I32", [0, 256]] }, `layer ${p}: Marlin B is [0, 256], an empty matrix`],
  ];
  for (const [change, message] of cases) {
    const t = { ...ok, ...change };
    const header: HeaderLookup = (s) => (t[s] ? { dtype: t[s]![0], shape: t[s]![1] } : undefined);
    assert.throws(
      () => FORMATS.marlin.inspect(p, header),
      (e: Error) => e.message === message,
      message,
    );
  }
  const dims = FORMATS.marlin.inspect(p, headers(ok));
  assert.deepEqual(dims, { inFeatures: 512, outFeatures: 128, bits: 4, groups: 4 });
  assert.throws(
    () =>
      FORMATS.marlin.grouping(p, { ...dims, groups: 600 }, headers(ok), () => assert.fail("reads nothing")),
    (e: Error) => e.message === `layer ${p}: Marlin s holds 600 groups for 512 input rows`,
  );
});

test("a config that cannot describe Marlin tensors says why; GPTQ takes any scheme its tensors show", () => {
  const scheme = { bits: 4 as const, groupSize: 128, sym: true, descAct: false };
  assert.equal(FORMATS.marlin.configProblem!(scheme), undefined);
  assert.deepEqual(FORMATS.marlin.configProblem!({ ...scheme, descAct: true }), {
    says: "4-bit, sym, desc_act true in Marlin format",
    tensors: "Marlin-packed, which holds only 4-bit symmetric weights without act-order",
  });
  assert.match(FORMATS.marlin.configProblem!({ ...scheme, bits: 8, sym: false })!.says, /^8-bit, asym,/);
  assert.equal(FORMATS.gptq.configProblem, undefined);
});
