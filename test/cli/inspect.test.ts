import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  fpEntries,
  gptqEntries,
  llamaExtras,
  llamaLayers,
  marlinEntries,
  tmpDir,
  writeCheckpointDir,
} from "../helpers/checkpoints.js";
import { assertOneLineError, gptq } from "../helpers/cli.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";

const root = tmpDir("cli-inspect");
test.after(() => rmSync(root, { recursive: true, force: true }));

const layers = llamaLayers(0, 256, 512);
const gptqCfg = {
  bits: 4,
  group_size: 64,
  sym: false,
  desc_act: true,
  checkpoint_format: "gptq_v2",
  damp_percent: 0.05,
};

test("inspect --json describes a GPTQ checkpoint from its tensors", () => {
  const dir = writeCheckpointDir(
    join(root, "gptq"),
    [
      ...layers.flatMap((l) =>
        gptqEntries(l, { bits: 4, groupSize: 64, sym: false, version: "v2", actOrder: true }),
      ),
      ...llamaExtras(256, 100),
    ],
    { "config.json": { model_type: "llama", quantization_config: gptqCfg } },
  );
  const r = gptq("inspect", dir, "--json");
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.deepEqual(
    {
      format: j.format,
      bits: j.bits,
      groupSize: j.groupSize,
      sym: j.sym,
      descAct: j.descAct,
      shards: j.shards,
    },
    { format: "gptq_v2", bits: 4, groupSize: 64, sym: false, descAct: true, shards: ["model.safetensors"] },
  );
  assert.equal(j.layers.length, 7);
  assert.deepEqual(j.layers[0], {
    name: "model.layers.0.mlp.down_proj",
    inFeatures: 512,
    outFeatures: 256,
    groups: 8,
    actOrder: true,
  });
  const text = gptq("inspect", dir);
  assert.match(text.stdout, /gptq_v2, 4-bit, group size 64, asymmetric, desc_act true/);
  assert.match(text.stdout, /model.layers.0.mlp.down_proj\s+512\s+256\s+8\s+yes/);
});

test("inspect lists an unquantized checkpoint's linears as format fp", () => {
  const dir = writeCheckpointDir(join(root, "fp"), [...layers.flatMap(fpEntries), ...llamaExtras(256, 100)]);
  const j = JSON.parse(gptq("inspect", dir, "--json").stdout);
  assert.equal(j.format, "fp");
  assert.equal(j.bits, null);
  assert.equal(j.layers.length, 7);
  assert.deepEqual(j.layers[1], {
    name: "model.layers.0.mlp.gate_proj",
    inFeatures: 256,
    outFeatures: 512,
    groups: null,
    actOrder: false,
  });
});

test(
  "inspect reads the real stories260K model",
  { skip: skipUnlessShared("models", "stories260K", "model.safetensors") },
  () => {
    const j = JSON.parse(gptq("inspect", sharedPath("models", "stories260K"), "--json").stdout);
    assert.equal(j.format, "fp");
    assert.equal(j.layers.length, 35, "5 layers x 7 linears; tied embeddings, no lm_head");
    assert.deepEqual(
      j.layers.find((l: { name: string }) => l.name === "model.layers.4.mlp.down_proj"),
      {
        name: "model.layers.4.mlp.down_proj",
        inFeatures: 172,
        outFeatures: 64,
        groups: null,
        actOrder: false,
      },
    );
  },
);

test("a Marlin model under a plain GPTQ config: inspect explains, fix-config repairs, inspect then agrees", () => {
  const dir = writeCheckpointDir(
    join(root, "marlin"),
    layers.flatMap((l) => marlinEntries(l, 128)),
    {
      "config.json": {
        model_type: "llama",
        hidden_size: 256,
        quantization_config: { bits: 4, group_size: 128, desc_act: false, sym: true, quant_method: "gptq" },
      },
      "quantize_config.json": { bits: 4, group_size: 128, desc_act: false, sym: true, damp_percent: 0.01 },
    },
  );
  const st = statSync(join(dir, "model.safetensors"));
  const line = assertOneLineError(gptq("inspect", dir), 1);
  assert.match(
    line,
    /layer model.layers.0.mlp.down_proj: the config says checkpoint_format "gptq", but the tensors are Marlin-packed \(B, s\); run `gptq fix-config/,
  );
  const fix = gptq("fix-config", dir);
  assert.equal(fix.code, 0, fix.stderr);
  assert.match(fix.stdout, /checkpoint_format: "gptq" -> "marlin"/);
  const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  assert.equal(cfg.hidden_size, 256);
  assert.equal(cfg.quantization_config.checkpoint_format, "marlin");
  assert.equal(JSON.parse(readFileSync(join(dir, "quantize_config.json"), "utf8")).damp_percent, 0.01);
  assert.equal(statSync(join(dir, "model.safetensors")).mtimeMs, st.mtimeMs, "tensors untouched");
  const j = JSON.parse(gptq("inspect", dir, "--json").stdout);
  assert.equal(j.format, "marlin");
  assert.equal(j.layers[0].groups, 4);
  assert.match(gptq("fix-config", dir).stdout, /already describes the tensors; nothing to do/);
});

test("fix-config removes a quantization config from an unquantized checkpoint; usage errors exit 2", () => {
  const dir = writeCheckpointDir(join(root, "fp-stale"), layers.flatMap(fpEntries), {
    "config.json": { model_type: "llama", quantization_config: { bits: 4 } },
    "quantize_config.json": { bits: 4 },
  });
  assert.match(assertOneLineError(gptq("inspect", dir), 1), /no quantized tensors are stored/);
  assert.match(gptq("fix-config", dir).stdout, /removed the quantization config/);
  assert.equal(JSON.parse(gptq("inspect", dir, "--json").stdout).format, "fp");
  assert.equal(gptq("fix-config").code, 2);
  assert.equal(gptq("inspect", dir, "--bogus").code, 2);
  assert.equal(gptq("fix-config", "--help").code, 0);
  writeFileSync(join(dir, "config.json"), "{");
  assert.match(assertOneLineError(gptq("fix-config", dir), 1), /config.json: invalid JSON/);
});
