// Fixes `check` prints are things gptq-ts can do (a gptq command or a kernel that takes the layer as it
// is), and the printed `gptq pad` commands do make the layer pass; the peers' loader rules (torch's CPU
// int4 kernel, GPTQModel's loader) in `check`; `quantize` pads to full groups, warns about Marlin
// kernels that cannot run its Marlin output and says which runtimes take what it wrote.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { GPTQMODEL_LOADER, writtenByGptqModel } from "../../src/kernels/rules/gptqmodel.js";
import { TORCH_INT4_CPU } from "../../src/kernels/rules/torch.js";
import { DEMO_SPEC, writeSyntheticLlama } from "../../src/pipeline/synthetic.js";
import { gptqEntries, llamaLayers, tmpDir, writeCheckpointDir } from "../helpers/checkpoints.js";
import { gptq } from "../helpers/cli.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";

const root = tmpDir("check-fixes");
test.after(() => rmSync(root, { recursive: true, force: true }));

type Verdict = { ok: boolean; reason?: string; fix?: string; note?: string };
interface Report {
  layers: { name: string; inFeatures: number; outFeatures: number; kernels: Record<string, Verdict> }[];
}

function checkJson(...args: string[]): Report {
  const r = gptq("check", ...args, "--json");
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Report;
}

const KERNEL_FIX = /^use kernel [a-z0-9-]+( or [a-z0-9-]+)*$/;
const COMMAND_FIX =
  /^(re-quantize from the unquantized model: )?(gptq (pad|quantize|convert|fix-config) [^;]*?)(, then gptq (quantize|pad) [^;]*)*$/;

/** Every alternative of every fix is a gptq command or named kernels; returns them all. */
function assertActionable(rep: Report): string[] {
  const all: string[] = [];
  for (const l of rep.layers)
    for (const [k, v] of Object.entries(rep.layers[0].kernels).map(([k]) => [k, l.kernels[k]] as const)) {
      if (v.ok || !v.fix) continue;
      for (const alt of v.fix.split("; or ")) {
        assert.ok(
          KERNEL_FIX.test(alt) || COMMAND_FIX.test(alt) || /^gptq convert .*, then use kernel /.test(alt),
          `${l.name} ${k}: "${alt}" is neither a gptq command nor a kernel`,
        );
        assert.doesNotMatch(alt, /hidden_size|heads/, `${l.name} ${k}: offers to pad a fixed dimension`);
        all.push(alt);
      }
    }
  return all;
}

const layer = (rep: Report, suffix: string) => rep.layers.find((l) => l.name.endsWith(suffix))!;

test("torch's CPU int4 kernel refuses a partial last group (K 176, group 32) and takes K 192", () => {
  const q = { inFeatures: 176, outFeatures: 64, bits: 4 as const, groupSize: 32, sym: true, actOrder: false };
  const v = TORCH_INT4_CPU.supports(q);
  assert.equal(v.ok, false);
  assert.equal(v.reason, "group size 32 does not divide in_features 176 (no partial groups)");
  assert.match(v.fix!, /pad in_features to 192/);
  assert.deepEqual(TORCH_INT4_CPU.supports({ ...q, inFeatures: 192 }), { ok: true });
  assert.equal(TORCH_INT4_CPU.supports({ ...q, inFeatures: 192, groupSize: 16 }).ok, false, "group 16");
  assert.equal(TORCH_INT4_CPU.supports({ ...q, inFeatures: 192, bits: 8 }).ok, false, "8-bit");
  assert.equal(TORCH_INT4_CPU.supports({ ...q, inFeatures: 128, groupSize: -1 }).ok, true);
});

test("GPTQModel's loader: asymmetric v1 refused unless meta.quantizer names gptqmodel; v2 and symmetric taken", () => {
  const ck = { dir: "m", format: "gptq" as const, sym: false, quantizer: ["gptq-ts:0.1.0"] };
  const v = GPTQMODEL_LOADER.supportsCheckpoint!(ck);
  assert.equal(v.ok, false);
  assert.match(v.reason!, /asymmetric GPTQ v1 written by another tool \(meta.quantizer says gptq-ts:0.1.0\)/);
  assert.equal(v.fix, "gptq convert m <out> --to gptq_v2");
  assert.match(GPTQMODEL_LOADER.supportsCheckpoint!({ ...ck, quantizer: [] }).reason!, /no meta.quantizer/);
  assert.equal(GPTQMODEL_LOADER.supportsCheckpoint!({ ...ck, quantizer: ["gptqmodel:2.1.0"] }).ok, true);
  assert.equal(GPTQMODEL_LOADER.supportsCheckpoint!({ ...ck, format: "gptq_v2" }).ok, true);
  assert.equal(GPTQMODEL_LOADER.supportsCheckpoint!({ ...ck, sym: true }).ok, true);
  assert.equal(writtenByGptqModel(["optimum:1.2", "GPTQModel:1.0"]), true);
  assert.equal(writtenByGptqModel(["autogptq"]), false);
});

test("check on an asymmetric v1 checkpoint: gptqmodel fails with the convert command, which works", () => {
  const write = (name: string, version: "v1" | "v2", meta?: object) =>
    writeCheckpointDir(
      join(root, name),
      llamaLayers(0, 128, 256).flatMap((l) =>
        gptqEntries(l, { bits: 4, groupSize: 128, sym: false, version, zero: 3 }),
      ),
      {
        "quantize_config.json": {
          bits: 4,
          group_size: 128,
          sym: false,
          desc_act: false,
          checkpoint_format: version === "v1" ? "gptq" : "gptq_v2",
          ...(meta ? { meta } : {}),
        },
      },
    );
  const asym = write("asym", "v1", { quantizer: ["gptq-ts:0.1.0"] });
  const rep = checkJson(asym, "--kernel", "gptqmodel", "--kernel", "exllama");
  const v = layer(rep, "q_proj").kernels.gptqmodel;
  assert.equal(v.ok, false);
  assert.match(v.reason!, /meta.quantizer says gptq-ts:0.1.0\): GPTQModel refuses it/);
  assert.equal(v.fix, `gptq convert ${asym} <out> --to gptq_v2`);
  assert.equal(layer(rep, "q_proj").kernels.exllama.ok, true, "the other loaders are not concerned");
  const v2 = join(root, "asym-v2");
  const c = gptq("convert", asym, v2, "--to", "gptq_v2");
  assert.equal(c.code, 0, c.stderr);
  assert.ok(checkJson(v2, "--kernel", "gptqmodel").layers.every((l) => l.kernels.gptqmodel.ok));
  // the same file as GPTQModel writes it (its name in meta.quantizer), and one without any meta
  const own = write("asym-gptqmodel", "v1", { quantizer: ["gptqmodel:2.1.0"] });
  assert.ok(checkJson(own, "--kernel", "gptqmodel").layers.every((l) => l.kernels.gptqmodel.ok));
  const bare = checkJson(write("asym-bare", "v1"), "--kernel", "gptqmodel");
  assert.match(layer(bare, "q_proj").kernels.gptqmodel.reason!, /no meta.quantizer/);
});

test("quantize --format marlin warns which Marlin kernels cannot run the result, on stderr and in --json", () => {
  const fp = join(root, "synthetic-m");
  writeSyntheticLlama(fp, DEMO_SPEC);
  const text = gptq("quantize", fp, "--out", join(root, "m1"), "--method", "rtn", "--format", "marlin");
  assert.equal(text.code, 0, text.stderr);
  assert.match(
    text.stderr,
    /warning: the Marlin files will be written, but kernel marlin-ist \(AutoGPTQ \/ IST-DASLab Marlin\) cannot run \d+ of 14 layers \(first: .*out_features \d+ is not a multiple of 256\)/,
  );
  assert.match(text.stdout, /\nruntimes: every layer runs in .*marlin-ist \(\d+\/14\)/);
  const json = gptq(
    "quantize",
    fp,
    "--out",
    join(root, "m2"),
    "--method",
    "rtn",
    "--format",
    "marlin",
    "--json",
  );
  assert.equal(json.code, 0, json.stderr);
  const res = JSON.parse(json.stdout);
  assert.ok(res.warnings.some((w: string) => /kernel marlin-ist .* cannot run/.test(w)));
  assert.ok(res.runtimes.refuse.some((r: { name: string }) => r.name === "marlin-ist"));
  assert.ok(res.runtimes.accept.includes("gptq-ts-dequant"));
  // GPTQ output says nothing about Marlin
  const g = gptq("quantize", fp, "--out", join(root, "m3"), "--method", "rtn");
  assert.doesNotMatch(g.stderr, /Marlin/);
});

const storiesSkip = skipUnlessShared("models", "stories260K");

test(
  "stories260K: every fix is a command or a kernel; the kv heads are not offered as padding; the printed pad command makes down_proj pass",
  { skip: storiesSkip },
  () => {
    const dir = sharedPath("models", "stories260K");
    const rep = checkJson(dir, "--bits", "4", "--group-size", "32");
    const fixes = assertActionable(rep);
    assert.ok(fixes.some((f) => f.startsWith("gptq pad ")));
    // k_proj: out 32 is num_key_value_heads x head_dim; cuda-old's out % 64 cannot be had by padding
    const k = layer(rep, "k_proj").kernels["cuda-old"];
    assert.equal(k.ok, false);
    assert.match(k.note!, /^out_features 32 is num_key_value_heads x head_dim, which cannot be padded to 64/);
    assert.match(k.fix!, KERNEL_FIX);
    // down_proj K 172 with group 32: torch's CPU kernel; the printed pad command gives full groups
    const down = layer(rep, "down_proj").kernels["torch-int4-cpu"];
    assert.equal(down.ok, false);
    const pad = /^gptq pad (\S+) <padded> (--multiple \d+)/.exec(down.fix!);
    assert.ok(pad, down.fix);
    const padded = join(root, "stories-padded");
    const r = gptq("pad", pad[1], padded, ...pad[2].split(" "));
    assert.equal(r.code, 0, r.stderr);
    const after = checkJson(padded, "--bits", "4", "--group-size", "32");
    assert.equal(layer(after, "down_proj").inFeatures, 192);
    for (const name of ["torch-int4-cpu", "exllama", "xnnpack-a8w4"])
      assert.equal(layer(after, "down_proj").kernels[name].ok, true, name);
    // the same for every pad command printed for down_proj
    for (const [name, v] of Object.entries(layer(rep, "down_proj").kernels)) {
      // every option of the printed command: --multiple, and --hidden-multiple where the stream is too narrow
      const m = v.fix && /^gptq pad \S+ <padded> ((?:--[\w-]+ \d+ ?)+)/.exec(v.fix);
      if (!m) continue;
      const out = join(root, `stories-${name}`);
      const flags = m[1].trim().split(" ");
      assert.equal(gptq("pad", dir, out, ...flags).code, 0);
      // and the group size the command quantizes with (a kernel that needs another one says so)
      const group = /then gptq quantize .*--group-size (-?\d+)/.exec(v.fix!)?.[1] ?? "32";
      const d = layer(checkJson(out, "--bits", "4", "--group-size", group, "--kernel", name), "down_proj");
      assert.equal(d.kernels[name].ok, true, `${name} after gptq pad ${flags.join(" ")}`);
      rmSync(out, { recursive: true, force: true });
    }
  },
);

test(
  "a quantized stories260K: fixes re-quantize from the unquantized model, and say so",
  { skip: storiesSkip },
  () => {
    const out = join(root, "s4");
    const q = gptq(
      "quantize",
      sharedPath("models", "stories260K"),
      "--out",
      out,
      "--method",
      "rtn",
      "--group-size",
      "32",
    );
    assert.equal(q.code, 0, q.stderr);
    const rep = checkJson(out);
    const fixes = assertActionable(rep);
    const commands = fixes.filter((f) => !KERNEL_FIX.test(f));
    assert.ok(commands.length > 0);
    for (const f of commands)
      assert.match(f, /^re-quantize from the unquantized model: gptq (pad|quantize) <fp-model>/);
  },
);

test(
  "Falcon: fixes re-quantize or change kernel, never pad (LayerNorm hidden size; pad does not rewrite its MLP)",
  { skip: skipUnlessShared("models", "tiny", "falcon") },
  () => {
    const dir = sharedPath("models", "tiny", "falcon");
    const rep = checkJson(dir, "--bits", "4", "--group-size", "512");
    const fixes = assertActionable(rep);
    assert.ok(
      fixes.every((f) => !/gptq pad/.test(f)),
      fixes.join("\n"),
    );
    // dense_4h_to_h's K 768 takes group 256: quantize reads Falcon through the family table
    assert.ok(
      fixes.some((f) => /^gptq quantize \S+falcon --out <out> --bits 4 --group-size 256$/.test(f)),
      fixes.join("\n"),
    );
    const notes = rep.layers.flatMap((l) => Object.values(l.kernels).map((v) => v.note ?? ""));
    assert.ok(
      notes.some((n) =>
        /ffn_hidden_size, which cannot be padded to 1024: gptq pad rewrites only separate/.test(n),
      ),
      notes.join("\n"),
    );
    assert.ok(
      notes.some((n) =>
        /hidden_size, which cannot be padded .*LayerNorm takes the mean and variance/.test(n),
      ),
    );
    // and pad itself refuses Falcon
    assert.notEqual(gptq("pad", dir, join(root, "falcon-pad"), "--multiple", "1024").code, 0);
  },
);
