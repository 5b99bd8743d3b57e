import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  detectFormat,
  groupSizeFor,
  inferQuantConfig,
  listLinearWeights,
  listQuantizedLayers,
  openCheckpoint,
  readQuantConfig,
  readQuantConfigDetailed,
  writeQuantConfig,
  clearQuantConfig,
} from "../../src/io/checkpoint.js";
import { TensorStore } from "../../src/io/store.js";
import {
  GptqPlan,
  fpEntries,
  gptqEntries,
  llamaExtras,
  llamaLayers,
  marlinEntries,
  tmpDir,
  writeCheckpointDir,
  quantConfig,
} from "../helpers/checkpoints.js";

function withDir(f: (dir: string) => void): void {
  const dir = tmpDir();
  try {
    f(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const SMALL = llamaLayers(0, 256, 512);
const sym4: GptqPlan = { bits: 4, groupSize: 128, sym: true, version: "v1" };
const autoGptqConfig = { bits: 4, group_size: 128, desc_act: false, sym: true, damp_percent: 0.01 };

test("reads AutoGPTQ's quantize_config.json with its defaults (v1, gptq)", () =>
  withDir((dir) => {
    writeCheckpointDir(
      dir,
      SMALL.flatMap((l) => gptqEntries(l, sym4)),
      { "quantize_config.json": autoGptqConfig },
    );
    const r = readQuantConfigDetailed(dir)!;
    assert.deepEqual(r.config, {
      bits: 4,
      groupSize: 128,
      sym: true,
      descAct: false,
      staticGroups: false,
      trueSequential: true,
      dampPercent: 0.01,
      quantMethod: "gptq",
      checkpointFormat: "gptq",
    });
    assert.deepEqual(r.sources, ["quantize_config.json"]);
    assert.deepEqual(r.missing, []);
  }));

test("reads GPTQModel's aliases (format, method, meta) and legacy is_marlin_format", () =>
  withDir((dir) => {
    const meta = { quantizer: ["gptqmodel:1.0"] };
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({
        model_type: "llama",
        quantization_config: {
          bits: 8,
          group_size: -1,
          sym: false,
          act_order: true,
          format: "gptq_v2",
          method: "gptq",
          meta,
        },
      }),
    );
    const c = readQuantConfig(dir)!;
    assert.equal(c.bits, 8);
    assert.equal(c.groupSize, -1);
    assert.equal(c.sym, false);
    assert.equal(c.descAct, true);
    assert.equal(c.checkpointFormat, "gptq_v2");
    assert.deepEqual(c.meta, meta);
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({ quantization_config: { bits: 4, is_marlin_format: true } }),
    );
    const r = readQuantConfigDetailed(dir)!;
    assert.equal(r.config.checkpointFormat, "marlin");
    assert.deepEqual(
      r.missing,
      ["group_size", "sym", "desc_act"],
      "vLLM needs all four keys: say which are absent",
    );
  }));

test("refuses files that disagree, other methods and bad values, each with a clear message", () =>
  withDir((dir) => {
    writeFileSync(join(dir, "quantize_config.json"), JSON.stringify(autoGptqConfig));
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({ quantization_config: { ...autoGptqConfig, group_size: 64 } }),
    );
    assert.throws(
      () => readQuantConfig(dir),
      /quantize_config.json says group_size 128 but config.json#quantization_config says 64; run `gptq fix-config/,
    );
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({ quantization_config: { quant_method: "awq", bits: 4 } }),
    );
    assert.throws(() => readQuantConfig(dir), /quant_method is "awq"; gptq-ts reads GPTQ checkpoints only/);
    writeFileSync(join(dir, "config.json"), "{}");
    writeFileSync(join(dir, "quantize_config.json"), JSON.stringify({ bits: 5 }));
    assert.throws(() => readQuantConfig(dir), /bits is 5; expected one of 2, 3, 4, 8/);
    writeFileSync(join(dir, "quantize_config.json"), JSON.stringify({ bits: 4, checkpoint_format: "exl2" }));
    assert.throws(() => readQuantConfig(dir), /checkpoint_format is "exl2"/);
    writeFileSync(join(dir, "quantize_config.json"), "{ bits: 4 }");
    assert.throws(() => readQuantConfig(dir), /invalid JSON/);
  }));

test("writes both files atomically with every required key, keeping config.json's other keys", () =>
  withDir((dir) => {
    const model = { architectures: ["LlamaForCausalLM"], hidden_size: 256, rope_scaling: { factor: 2 } };
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({
        ...model,
        quantization_config: {
          bits: 4,
          format: "gptq",
          is_marlin_format: false,
          modules_in_block_to_quantize: [["q"]],
        },
      }),
    );
    const cfg = quantConfig({ checkpointFormat: "marlin" });
    writeQuantConfig(dir, cfg);
    assert.deepEqual(
      readdirSync(dir).sort(),
      ["config.json", "quantize_config.json"],
      "no temporary file left",
    );
    const written = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    for (const [k, v] of Object.entries(model)) assert.deepEqual(written[k], v);
    const q = written.quantization_config;
    for (const k of ["bits", "group_size", "desc_act", "sym", "quant_method", "checkpoint_format"])
      assert.ok(k in q, k);
    assert.equal(q.format, "marlin", "an alias left by another writer is made to agree");
    assert.equal(q.is_marlin_format, true);
    assert.deepEqual(q.modules_in_block_to_quantize, [["q"]]);
    const qc = JSON.parse(readFileSync(join(dir, "quantize_config.json"), "utf8"));
    assert.equal(qc.checkpoint_format, "marlin");
    assert.deepEqual(readQuantConfig(dir), cfg);
    clearQuantConfig(dir);
    assert.deepEqual(readdirSync(dir), ["config.json"]);
    assert.equal(readQuantConfig(dir), undefined);
    assert.equal(JSON.parse(readFileSync(join(dir, "config.json"), "utf8")).hidden_size, 256);
  }));

test("lists GPTQ layers with shapes, bits and groups from the tensors, in natural order", () =>
  withDir((dir) => {
    const layers = [...llamaLayers(10, 256, 512), ...llamaLayers(2, 256, 512)];
    writeCheckpointDir(dir, [
      ...layers.flatMap((l) => gptqEntries(l, { ...sym4, bits: 3 })),
      ...llamaExtras(256, 1000),
    ]);
    const store = TensorStore.open(dir);
    try {
      assert.equal(detectFormat(store), "gptq");
      const got = listQuantizedLayers(store);
      assert.equal(got.length, 14);
      assert.equal(got[0].name, "model.layers.2.mlp.down_proj");
      const down = got.find((l) => l.name === "model.layers.10.mlp.down_proj")!;
      assert.deepEqual(
        {
          K: down.inFeatures,
          N: down.outFeatures,
          bits: down.bits,
          G: down.groups,
          g: down.groupSize,
          act: down.actOrder,
        },
        { K: 512, N: 256, bits: 3, G: 4, g: 128, act: false },
      );
    } finally {
      store.close();
    }
  }));

test("act-order is read from g_idx, a partial last group is recognised", () =>
  withDir((dir) => {
    const l = [{ name: "a.q_proj", K: 288, N: 64 }];
    writeCheckpointDir(
      dir,
      gptqEntries(l[0], { bits: 8, groupSize: 256, sym: false, version: "v2", actOrder: true }),
      {
        "quantize_config.json": {
          bits: 8,
          group_size: 256,
          sym: false,
          desc_act: true,
          checkpoint_format: "gptq_v2",
        },
      },
    );
    const ck = openCheckpoint(dir);
    try {
      assert.equal(ck.format, "gptq_v2");
      assert.deepEqual(
        ck.layers.map((x) => [x.inFeatures, x.outFeatures, x.groups, x.groupSize, x.actOrder]),
        [[288, 64, 2, 256, true]],
      );
    } finally {
      ck.close();
    }
  }));

test("Marlin layers and unquantized linears are listed; embeddings, norms and lm_head are not", () =>
  withDir((dir) => {
    writeCheckpointDir(
      dir,
      SMALL.flatMap((l) => marlinEntries(l, 128)),
      {
        "quantize_config.json": { ...autoGptqConfig, checkpoint_format: "marlin" },
      },
    );
    const ck = openCheckpoint(dir);
    assert.equal(ck.format, "marlin");
    assert.deepEqual(
      ck.layers.find((l) => l.name.endsWith("down_proj"))!,
      {
        name: "model.layers.0.mlp.down_proj",
        inFeatures: 512,
        outFeatures: 256,
        bits: 4,
        groups: 4,
        groupSize: 128,
        actOrder: false,
        format: "marlin",
        hasBias: false,
      },
    );
    ck.close();
    rmSync(dir, { recursive: true });
    writeCheckpointDir(dir, [...SMALL.flatMap(fpEntries), ...llamaExtras(256, 1000)]);
    const store = TensorStore.open(dir);
    assert.equal(detectFormat(store), "fp");
    const lin = listLinearWeights(store);
    assert.deepEqual(
      lin.map((l) => l.name),
      SMALL.map((l) => l.name).sort((a, b) => a.localeCompare(b, "en", { numeric: true })),
    );
    assert.equal(lin.find((l) => l.name.endsWith("down_proj"))!.inFeatures, 512);
    store.close();
    rmSync(dir, { recursive: true });
    const bert = [
      "bert.encoder.layer.0.attention.output.dense",
      "bert.encoder.layer.0.intermediate.dense",
      "h.0.attn.c_attn",
    ];
    writeCheckpointDir(dir, [
      ...bert.map((name) => ({ name: `${name}.weight`, dtype: "F32" as const, shape: [64, 64] })),
      { name: "bert.embeddings.word_embeddings.weight", dtype: "F32", shape: [100, 64] },
      { name: "bert.encoder.layer.0.attention.output.LayerNorm.weight", dtype: "F32", shape: [64] },
      { name: "h.0.ln_1.weight", dtype: "F32", shape: [64] },
      { name: "wte.weight", dtype: "F32", shape: [100, 64] },
      { name: "output.weight", dtype: "F32", shape: [100, 64] },
      { name: "h.0.attn.c_attn.bias", dtype: "F32", shape: [64] },
    ]);
    const s2 = TensorStore.open(dir);
    assert.deepEqual(
      listLinearWeights(s2).map((l) => l.name),
      bert,
    );
    s2.close();
  }));

test("Marlin B/s under a plain gptq config names the layer, both sides and the fix", () =>
  withDir((dir) => {
    writeCheckpointDir(
      dir,
      SMALL.flatMap((l) => marlinEntries(l, 128)),
      { "quantize_config.json": autoGptqConfig },
    );
    assert.throws(
      () => openCheckpoint(dir),
      (e: Error) =>
        e.name === "GptqError" &&
        e.message.includes("layer model.layers.0.mlp.down_proj") &&
        e.message.includes('config says checkpoint_format "gptq"') &&
        e.message.includes("Marlin-packed (B, s)") &&
        e.message.includes(`gptq fix-config ${dir}`),
    );
    const fixed = inferQuantConfig(dir)!;
    assert.equal(fixed.checkpointFormat, "marlin");
    assert.equal(fixed.groupSize, 128);
    assert.equal(fixed.dampPercent, 0.01, "what the tensors cannot tell is kept");
    writeQuantConfig(dir, fixed);
    openCheckpoint(dir).close();
  }));

test("bits, group size, act-order and v1/v2 that contradict the tensors are refused", () =>
  withDir((dir) => {
    const entries = SMALL.flatMap((l) => gptqEntries(l, sym4));
    const cases: [object, RegExp][] = [
      [{ ...autoGptqConfig, bits: 8 }, /config says bits 8, but the tensors are 4-bit/],
      [
        { ...autoGptqConfig, group_size: 64 },
        /down_proj: the config says group_size 64 \(8 groups over in_features 512\), but the tensors are 4 groups/,
      ],
      [{ ...autoGptqConfig, checkpoint_format: "gptq_v2" }, /v1: every stored zero point is 7/],
      [{ ...autoGptqConfig, bits: 4, checkpoint_format: "marlin" }, /tensors are GPTQ-packed/],
    ];
    writeCheckpointDir(dir, entries);
    for (const [cfg, re] of cases) {
      writeFileSync(join(dir, "quantize_config.json"), JSON.stringify(cfg));
      assert.throws(() => openCheckpoint(dir), re);
    }
    writeFileSync(join(dir, "quantize_config.json"), JSON.stringify(autoGptqConfig));
    openCheckpoint(dir).close();
    writeCheckpointDir(
      dir,
      SMALL.flatMap((l) => gptqEntries(l, { ...sym4, version: "v2" })),
    );
    assert.throws(
      () => openCheckpoint(dir),
      /checkpoint_format "gptq" \(v1, which stores zero − 1 = 7\), but the tensors are v2/,
    );
    assert.equal(inferQuantConfig(dir)!.checkpointFormat, "gptq_v2");
    writeCheckpointDir(
      dir,
      SMALL.flatMap((l) => gptqEntries(l, { ...sym4, actOrder: true })),
    );
    assert.throws(() => openCheckpoint(dir), /desc_act false, but the tensors are act-order/);
    assert.equal(inferQuantConfig(dir)!.descAct, true);
    writeCheckpointDir(
      dir,
      SMALL.flatMap((l) => gptqEntries(l, { ...sym4, sym: false })),
    );
    assert.throws(() => openCheckpoint(dir), /sym true, but the tensors are asymmetric/);
    assert.equal(inferQuantConfig(dir)!.sym, false);
  }));

test("quantized tensors without a config, and a config without quantized tensors, are refused", () =>
  withDir((dir) => {
    writeCheckpointDir(
      dir,
      SMALL.flatMap((l) => gptqEntries(l, sym4)),
    );
    assert.throws(
      () => openCheckpoint(dir),
      /GPTQ tensors are stored .* but there is no quantize_config.json/,
    );
    assert.deepEqual(inferQuantConfig(dir), {
      bits: 4,
      groupSize: 128,
      sym: true,
      descAct: false,
      staticGroups: false,
      trueSequential: true,
      quantMethod: "gptq",
      checkpointFormat: "gptq",
    });
    rmSync(dir, { recursive: true });
    writeCheckpointDir(dir, SMALL.flatMap(fpEntries), {
      "config.json": { quantization_config: autoGptqConfig },
    });
    assert.throws(() => openCheckpoint(dir), /no quantized tensors are stored/);
    assert.equal(inferQuantConfig(dir), undefined);
  }));

test("a mix of GPTQ and Marlin layers is refused", () =>
  withDir((dir) => {
    writeCheckpointDir(dir, [...gptqEntries(SMALL[0], sym4), ...marlinEntries(SMALL[1], 128)]);
    const store = TensorStore.open(dir);
    assert.throws(() => detectFormat(store), /two formats: .*q_proj as GPTQ .*k_proj as Marlin/);
    store.close();
  }));

test("group size from in_features and group count", () => {
  assert.equal(groupSizeFor(4544, 36), 128); // partial last group
  assert.equal(groupSizeFor(4544, 71), 64);
  assert.equal(groupSizeFor(288, 2), 256);
  assert.equal(groupSizeFor(4096, 1), -1);
  assert.equal(groupSizeFor(172, 6), 32);
  assert.equal(groupSizeFor(100, 200), undefined);
});

test("a v1 asymmetric zero point of 0 that overflowed when packed is reported as a warning", () =>
  withDir((dir) => {
    const cfg = { bits: 4, group_size: 128, sym: false, desc_act: false };
    writeCheckpointDir(
      dir,
      SMALL.flatMap((l) => gptqEntries(l, { ...sym4, sym: false, zero: 0 })),
      {
        "quantize_config.json": cfg,
      },
    );
    const ck = openCheckpoint(dir);
    ck.close();
    assert.equal(ck.warnings.length, 1);
    assert.match(ck.warnings[0], /a stored v1 zero point of 15 means a zero of 0 overflowed when packed/);
    writeCheckpointDir(
      dir,
      SMALL.flatMap((l) => gptqEntries(l, { ...sym4, sym: false, zero: 3 })),
    );
    const ok = openCheckpoint(dir);
    ok.close();
    assert.deepEqual(ok.warnings, []);
  }));

test("writeQuantConfig creates config.json when the directory has none", () =>
  withDir((dir) => {
    const cfg = inferQuantConfig(
      writeCheckpointDir(
        dir,
        SMALL.flatMap((l) => gptqEntries(l, sym4)),
      ),
    )!;
    writeQuantConfig(dir, cfg);
    assert.deepEqual(Object.keys(JSON.parse(readFileSync(join(dir, "config.json"), "utf8"))), [
      "quantization_config",
    ]);
    openCheckpoint(dir).close();
  }));

test("layers mixing v1 and v2 zero points, and empty matrices, are refused", () =>
  withDir((dir) => {
    writeCheckpointDir(dir, [
      ...gptqEntries(SMALL[0], sym4),
      ...gptqEntries(SMALL[1], { ...sym4, version: "v2" }),
    ]);
    assert.throws(
      () => inferQuantConfig(dir),
      /stores symmetric zero points as v1 \(zero − 1\) but .* as v2/,
    );
    writeCheckpointDir(dir, gptqEntries({ name: "x", K: 0, N: 64 }, sym4));
    const store = TensorStore.open(dir);
    assert.throws(() => listQuantizedLayers(store), /layer x: qweight is \[0, 64\], an empty matrix/);
    store.close();
  }));
