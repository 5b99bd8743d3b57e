import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import {
  LayerShape,
  SparseEntry,
  fpEntries,
  gptqEntries,
  llamaLayers,
  marlinEntries,
  tmpDir,
  writeCheckpointDir,
} from "../helpers/checkpoints.js";
import { assertOneLineError, gptq } from "../helpers/cli.js";

const root = tmpDir("cli-check");
test.after(() => rmSync(root, { recursive: true, force: true }));

interface Report {
  layers: {
    name: string;
    inFeatures: number;
    outFeatures: number;
    kernels: Record<string, { ok: boolean; reason?: string; fix?: string; note?: string }>;
  }[];
}

function checkJson(...args: string[]): Report {
  const r = gptq("check", ...args, "--json");
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Report;
}

const layer = (rep: Report, suffix: string) => rep.layers.find((l) => l.name.endsWith(suffix))!;

/** Falcon-7B's first block at its real shapes (bf16, sparse: headers only are read). */
function falcon(): string {
  const h = 4544;
  const p = "transformer.h.0";
  const shapes: LayerShape[] = [
    { name: `${p}.self_attention.query_key_value`, K: h, N: 4672 },
    { name: `${p}.self_attention.dense`, K: h, N: h },
    { name: `${p}.mlp.dense_h_to_4h`, K: h, N: 4 * h },
    { name: `${p}.mlp.dense_4h_to_h`, K: 4 * h, N: h },
  ];
  const extras: SparseEntry[] = [
    { name: "transformer.word_embeddings.weight", dtype: "BF16", shape: [65024, h] },
    { name: `${p}.input_layernorm.weight`, dtype: "BF16", shape: [h] },
    { name: "lm_head.weight", dtype: "BF16", shape: [65024, h] },
  ];
  return writeCheckpointDir(join(root, "falcon-7b"), [...extras, ...shapes.flatMap(fpEntries)], {
    // Falcon-7B's config, with the one block written here
    "config.json": {
      model_type: "falcon",
      hidden_size: h,
      num_attention_heads: 71,
      multi_query: true,
      new_decoder_architecture: false,
      parallel_attn: true,
      num_hidden_layers: 1,
      vocab_size: 65024,
      bias: false,
      alibi: false,
    },
  });
}

test("Falcon-7B, planned 4-bit group 128: exllama wants group 64 or in 4608, Marlin wants in % 128", () => {
  const dir = falcon();
  const rep = checkJson(dir, "--bits", "4", "--group-size", "128", "--sym");
  assert.deepEqual(
    rep.layers.map((l) => l.name),
    [
      "transformer.h.0.mlp.dense_4h_to_h",
      "transformer.h.0.mlp.dense_h_to_4h",
      "transformer.h.0.self_attention.dense",
      "transformer.h.0.self_attention.query_key_value",
    ],
    "linears only: no embedding, norm or lm_head",
  );
  const dense = layer(rep, "self_attention.dense");
  assert.deepEqual([dense.inFeatures, dense.outFeatures], [4544, 4544]);
  assert.equal(dense.kernels.exllama.ok, false);
  assert.equal(
    dense.kernels.exllama.reason,
    "group size 128 does not divide in_features 4544 (no partial groups)",
  );
  // Falcon is quantized at group 64; hidden_size is under LayerNorm, so padding is never the fix
  assert.match(
    dense.kernels.exllama.fix!,
    /^gptq quantize \S+falcon-7b --out <out> --bits 4 --group-size 64; or use kernel /,
  );
  assert.ok(rep.layers.every((l) => Object.values(l.kernels).every((k) => !/gptq pad/.test(k.fix ?? ""))));
  assert.match(
    layer(rep, "dense_h_to_4h").kernels.exllama.note!,
    /in_features 4544 is hidden_size, which cannot be padded to 4608: LayerNorm takes the mean and variance/,
  );
  assert.equal(dense.kernels.marlin.reason, "in_features 4544 is not a multiple of 128");
  assert.match(
    dense.kernels.marlin.note!,
    /^in_features 4544 is num_attention_heads x head_dim, which cannot be padded to 4608/,
  );
  assert.equal(layer(rep, "dense_4h_to_h").kernels.marlin.ok, true);
  assert.equal(layer(rep, "dense_4h_to_h").kernels.exllama.ok, true);
  const g64 = checkJson(dir, "--group-size", "64", "--kernel", "exllama");
  assert.ok(g64.layers.every((l) => l.kernels.exllama.ok && Object.keys(l.kernels).length === 1));
  const r = gptq("check", dir, "--require", "exllama");
  assert.match(assertOneLineError(r, 1), /^gptq check: error: 3 of 4 layers fail kernel exllama \(first: /);
  assert.match(
    r.stdout,
    /fix: gptq quantize \S+ --out <out> --bits 4 --group-size 64/,
    "the report is still printed",
  );
});

test("Qwen1.5-14B (intermediate 13696): AutoGPTQ Marlin fails gate/up out % 256, vLLM Marlin fails down_proj at tp 2", () => {
  // A GPTQ 4-bit checkpoint of one block at real shapes; only g_idx and one qzeros hold data.
  const layers = llamaLayers(0, 5120, 13696);
  const dir = writeCheckpointDir(
    join(root, "qwen14b-gptq"),
    layers.flatMap((l) => gptqEntries(l, { bits: 4, groupSize: 128, sym: true, version: "v1" })),
    {
      "quantize_config.json": { bits: 4, group_size: 128, sym: true, desc_act: false },
      "config.json": {
        model_type: "qwen2",
        hidden_size: 5120,
        intermediate_size: 13696,
        num_attention_heads: 40,
        num_key_value_heads: 40,
        num_hidden_layers: 1,
        vocab_size: 152064,
      },
    },
  );
  const one = checkJson(dir);
  assert.deepEqual((one as unknown as { scheme: object }).scheme, {
    bits: 4,
    groupSize: 128,
    sym: true,
    planned: false,
  });
  assert.ok(
    one.layers.every((l) => l.kernels.marlin.ok),
    "13696 = 107 * 128: vLLM Marlin runs it on one GPU",
  );
  const up = layer(one, "up_proj").kernels["marlin-ist"];
  assert.deepEqual([up.ok, up.reason], [false, "out_features 13696 is not a multiple of 256"]);
  // quantized: padding means quantizing the unquantized model again, padded
  assert.match(
    up.fix!,
    /^re-quantize from the unquantized model: gptq pad <fp-model> <padded> --multiple 256, then gptq quantize <padded> --out <out> --bits 4 --group-size 128; or use kernel /,
  );
  const down = layer(one, "down_proj").kernels["marlin-ist"];
  assert.equal(down.ok, true, "down_proj: in 13696 % 128 == 0 and out 5120 % 256 == 0");
  const tp2 = checkJson(dir, "--tp", "2", "--kernel", "marlin");
  const d = layer(tp2, "down_proj").kernels.marlin;
  assert.deepEqual([d.ok, d.reason], [false, "in_features 6848 is not a multiple of 128"]);
  assert.match(
    d.fix!,
    /^re-quantize from the unquantized model: gptq pad <fp-model> <padded> --multiple 256, then /,
  );
  assert.equal(layer(tp2, "up_proj").kernels.marlin.ok, true, "column-parallel: 6848 outputs per rank, % 64");
  assert.equal(layer(tp2, "o_proj").kernels.marlin.ok, true, "row-parallel: 2560 inputs per rank");
  const r = gptq("check", dir, "--tp", "2", "--require", "marlin");
  assert.match(
    assertOneLineError(r, 1),
    /1 of 7 layers fail kernel marlin \(first: model.layers.0.mlp.down_proj: /,
  );
  assert.match(
    gptq("check", dir, "--tp", "3").stdout,
    /q_proj: in 5120, out 5120.*\n.*FAIL  out_features 5120 cannot be split evenly across 3 tensor-parallel ranks\n.*note: out_features 5120 is num_attention_heads x head_dim, which cannot be padded to 5121: padding head_dim/,
  );
});

test("a 288-wide model with group 256", () => {
  const layers = llamaLayers(0, 288, 768, 288);
  const dir = writeCheckpointDir(join(root, "w288"), layers.flatMap(fpEntries), {
    "config.json": {
      model_type: "llama",
      hidden_size: 288,
      intermediate_size: 768,
      num_attention_heads: 6,
      num_hidden_layers: 1,
      vocab_size: 32000,
    },
  });
  const rep = checkJson(dir, "--group-size", "256");
  const q = layer(rep, "q_proj").kernels;
  assert.equal(q.exllama.reason, "group size 256 does not divide in_features 288 (no partial groups)");
  assert.match(
    q.exllama.fix!,
    new RegExp(
      `^gptq quantize ${dir} --out <out> --bits 4 --group-size 32; or gptq pad ${dir} <padded> --hidden-multiple 256, then gptq quantize <padded> --out <out> --bits 4 --group-size 256; or use kernel `,
    ),
  );
  // hidden_size is padded keeping RMSNorm exact (gptq pad --hidden-multiple): no note
  assert.equal(q.exllama.note, undefined);
  assert.equal(q.marlin.reason, "group size 256 is not supported (only -1, 32, 64 or 128)");
  assert.match(q.marlin.fix!, /^use kernel /);
  assert.match(
    q.marlin.note!,
    /^out_features 288 is num_attention_heads x head_dim, which cannot be padded to 320/,
  );
  assert.equal(q["xnnpack-a8w4"].ok, false);
  assert.equal(q.ort.ok, true);
  const down = layer(rep, "down_proj").kernels;
  assert.equal(down.exllama.ok, true, "768 = 3 * 256");
  assert.equal(down.marlin.reason, "group size 256 is not supported (only -1, 32, 64 or 128)");
});

test("check refuses a planned scheme on a quantized checkpoint, bad options and unknown kernels", () => {
  const dir = writeCheckpointDir(join(root, "small"), llamaLayers(0, 256, 512).flatMap(fpEntries));
  const bad = gptq("check", dir, "--kernel", "nope");
  assert.equal(bad.code, 2);
  assert.match(bad.stderr.split("\n")[0], /^gptq check: unknown kernel "nope"; known kernels: marlin, /);
  assert.equal(gptq("check", dir, "--bits", "5").code, 2);
  assert.equal(gptq("check", dir, "--sym", "--asym").code, 2);
  assert.equal(gptq("check").code, 2);
  assert.equal(gptq("check", dir, "--tp", "0").code, 2);
  assert.match(assertOneLineError(gptq("check", join(root, "absent")), 1), /no such directory/);
  const h = gptq("check", "--help");
  assert.equal(h.code, 0);
  assert.match(h.stdout, /usage: gptq check <dir>/);
  const q = writeCheckpointDir(
    join(root, "small-q"),
    llamaLayers(0, 256, 512).flatMap((l) =>
      gptqEntries(l, { bits: 4, groupSize: 128, sym: true, version: "v1" }),
    ),
    { "quantize_config.json": { bits: 4, group_size: 128, sym: true, desc_act: false } },
  );
  assert.match(assertOneLineError(gptq("check", q, "--bits", "8"), 1), /already quantized/);
  const text = gptq("check", q, "--kernel", "marlin-ist");
  assert.equal(text.code, 0);
  assert.match(text.stdout, /model.layers.0.mlp.down_proj: in 512, out 256\n  marlin-ist  ok/);
  assert.match(text.stdout, /summary:\n  marlin-ist  7\/7 layers ok/);
});

test("vLLM's Marlin is not chosen when config.json's section lacks sym or desc_act; fix-config repairs it", () => {
  const dir = writeCheckpointDir(
    join(root, "incomplete-config"),
    llamaLayers(0, 256, 512).flatMap((l) =>
      gptqEntries(l, { bits: 4, groupSize: 128, sym: true, version: "v1" }),
    ),
    {
      "config.json": {
        model_type: "llama",
        quantization_config: { bits: 4, group_size: 128, quant_method: "gptq" },
      },
    },
  );
  const rep = checkJson(dir, "--kernel", "marlin", "--kernel", "exllama");
  const v = layer(rep, "q_proj").kernels;
  assert.deepEqual(v.marlin, {
    ok: false,
    reason:
      "the quantization config does not spell out sym, desc_act, so vLLM will not choose its gptq_marlin kernels",
    fix: `gptq fix-config ${dir}`,
  });
  assert.equal(v.exllama.ok, true);
  assert.match(gptq("inspect", dir).stdout, /does not spell out sym, desc_act \(defaults assumed\)/);
  assert.equal(gptq("fix-config", dir).code, 0);
  assert.ok(checkJson(dir, "--kernel", "marlin").layers.every((l) => l.kernels.marlin.ok));
});

test("a Marlin-packed checkpoint: only the Marlin-file loader reads it as is; the others need a conversion", () => {
  const dir = writeCheckpointDir(
    join(root, "marlin-file"),
    llamaLayers(0, 5120, 13696).flatMap((l) => marlinEntries(l, 128)),
    {
      "quantize_config.json": {
        bits: 4,
        group_size: 128,
        sym: true,
        desc_act: false,
        checkpoint_format: "marlin",
      },
    },
  );
  const rep = checkJson(dir, "--kernel", "marlin-ist", "--kernel", "exllama");
  const gate = layer(rep, "gate_proj").kernels;
  assert.equal(gate["marlin-ist"].reason, "out_features 13696 is not a multiple of 256");
  assert.deepEqual(gate.exllama, {
    ok: false,
    reason:
      "the checkpoint is Marlin-packed (B, s); this kernel's loader reads GPTQ tensors (qweight, qzeros, scales)",
    fix: `gptq convert ${dir} <out> --to gptq`,
  });
  assert.ok(layer(rep, "q_proj").kernels["marlin-ist"].ok);
  const down = layer(checkJson(dir, "--kernel", "marlin", "--tp", "2"), "down_proj").kernels.marlin;
  assert.match(down.fix!, /^gptq convert .* --to gptq, then use kernel /);
});
