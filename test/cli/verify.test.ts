// gptq verify: every tensor read, every problem one line. Good checkpoints of each format pass; each kind
// of corruption (non-finite values, zero points, g_idx, shards against the index, a truncated Marlin B,
// the config) fails with exit 1 and a line naming it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TensorEntry } from "../../src/io/safetensors.js";
import { INDEX_FILE, TensorStore, writeCheckpointTensors } from "../../src/io/store.js";
import { writeQuantConfig } from "../../src/io/checkpoint.js";
import { FORMATS } from "../../src/formats/registry.js";
import { Bits, CheckpointFormat } from "../../src/formats/types.js";
import { floatsToHalfs } from "../../src/tensor/dtype.js";
import { writeSyntheticLlama } from "../../src/pipeline/synthetic.js";
import { verifyCheckpoint } from "../../src/transform/verify.js";
import { quantConfig } from "../helpers/checkpoints.js";
import { gptq } from "../helpers/cli.js";
import { pokeFloat, pokeInt32, shardOf } from "../helpers/corrupt.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";
import { randomLayer } from "../formats/helpers.js";
import { TINY_SPEC } from "../helpers/synthetic.js";

const L = "model.layers.0.mlp.down_proj";
let root: string;
let n = 0;

before(() => {
  root = mkdtempSync(join(tmpdir(), "gptq-verify-"));
});
after(() => rmSync(root, { recursive: true, force: true }));

interface Plan {
  format: CheckpointFormat;
  bits?: Bits;
  zeros?: "sym" | "asym" | "asym0";
  /** bytes per shard (several shards and an index when small) */
  maxShardBytes?: number;
}

/** One quantized layer (K 256, N 128, group 128) with a bias, an embedding, a norm and lm_head. */
function packed(p: Plan): string {
  const dir = join(root, `c${n++}-${p.format}`);
  mkdirSync(dir);
  const bits = p.bits ?? 4;
  const zeros = p.zeros ?? "sym";
  const layer = randomLayer({ K: 256, N: 128, bits, groupSize: 128, zeros, seed: 3 });
  const half = (len: number, f: (i: number) => number) =>
    floatsToHalfs(Float32Array.from({ length: len }, (_, i) => f(i)));
  const entries: TensorEntry[] = [
    {
      name: "model.embed_tokens.weight",
      dtype: "F16",
      shape: [16, 128],
      data: half(2048, (i) => (i % 7) / 8),
    },
  ];
  for (const t of FORMATS[p.format].write(layer)) entries.push({ name: `${L}.${t.suffix}`, ...t });
  entries.push({ name: `${L}.bias`, dtype: "F16", shape: [128], data: half(128, (i) => i / 64) });
  entries.push({
    name: "model.norm.weight",
    dtype: "F32",
    shape: [128],
    data: new Float32Array(128).fill(1),
  });
  entries.push({
    name: "lm_head.weight",
    dtype: "F16",
    shape: [16, 128],
    data: half(2048, (i) => (i % 5) / 4),
  });
  writeCheckpointTensors(dir, entries, { maxShardBytes: p.maxShardBytes });
  writeQuantConfig(dir, quantConfig({ bits, sym: zeros === "sym", checkpointFormat: p.format }));
  return dir;
}

function verify(dir: string) {
  const r = gptq("verify", dir);
  return { ...r, lines: r.stdout.split("\n").filter(Boolean) };
}

function assertProblem(dir: string, pattern: RegExp): void {
  const r = verify(dir);
  assert.equal(r.code, 1, `exit ${r.code}; stdout: ${r.stdout}; stderr: ${r.stderr}`);
  assert.ok(r.lines.length >= 1);
  assert.ok(
    r.lines.some((l) => pattern.test(l)),
    `no line matches ${pattern}:\n${r.stdout}`,
  );
}

for (const [format, zeros] of [
  ["gptq", "asym"],
  ["gptq_v2", "asym0"],
  ["marlin", "sym"],
] as const)
  test(`a good ${format} checkpoint passes: exit 0, one summary line`, () => {
    const r = verify(packed({ format, zeros }));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(r.lines, [`${format === "marlin" ? 6 : 8} tensors in 1 shard checked: no problems`]);
  });

test("a good sharded checkpoint with an index passes, and --json reports it", () => {
  const dir = packed({ format: "gptq", maxShardBytes: 20_000 });
  const r = gptq("verify", dir, "--json");
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.ok, true);
  assert.ok(j.shards > 1);
  assert.equal(j.tensors, 8);
  assert.deepEqual(j.problems, []);
});

test("a good unquantized checkpoint passes (synthetic, and stories260K when ../shared has it)", (t) => {
  const fp = join(root, "fp");
  writeSyntheticLlama(fp, {
    ...TINY_SPEC,
    seed: 1,
  });
  const r = verify(fp);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.lines[0], /^12 tensors in 1 shard checked: no problems$/);
  const skip = skipUnlessShared("models", "stories260K");
  if (skip) return t.diagnostic(skip);
  const s = verify(sharedPath("models", "stories260K"));
  assert.equal(s.code, 0, s.stdout + s.stderr);
  assert.match(s.lines[0], /^\d+ tensors in 1 shard checked: no problems$/);
});

test("a NaN scale is refused, naming the tensor, its layer and the index; --json too", () => {
  const dir = packed({ format: "gptq" });
  pokeFloat(dir, `${L}.scales`, 128 + 5, "NaN");
  assertProblem(
    dir,
    /^model\.layers\.0\.mlp\.down_proj\.scales has a non-finite value \(NaN\) at \[1, 5\]; the checkpoint is corrupt/,
  );
  const j = JSON.parse(gptq("verify", dir, "--json").stdout);
  assert.equal(j.ok, false);
  assert.equal(j.problems.length, 1, JSON.stringify(j.problems));
  assert.equal(j.problems[0].tensor, `${L}.scales`);
  assert.equal(j.problems[0].layer, L);
});

test("a NaN in Marlin's s is refused", () => {
  const dir = packed({ format: "marlin" });
  pokeFloat(dir, `${L}.s`, 77, "NaN");
  assertProblem(dir, /down_proj\.s has a non-finite value \(NaN\) at \[0, 77\]/);
});

test("an Inf bias, and a -Inf in lm_head and a NaN in the embedding, are each refused", () => {
  const dir = packed({ format: "gptq_v2", zeros: "asym0" });
  pokeFloat(dir, `${L}.bias`, 7, "Inf");
  pokeFloat(dir, "lm_head.weight", 129, "-Inf");
  pokeFloat(dir, "model.embed_tokens.weight", 3, "NaN");
  const r = verify(dir);
  assert.equal(r.code, 1);
  assert.equal(r.lines.length, 3, r.stdout);
  assert.match(r.stdout, /down_proj\.bias has a non-finite value \(Inf\) at \[7\]/);
  assert.match(r.stdout, /lm_head\.weight has a non-finite value \(-Inf\) at \[1, 1\]/);
  assert.match(r.stdout, /embed_tokens\.weight has a non-finite value \(NaN\) at \[0, 3\]/);
});

test("a v1 zero point out of range (8-bit qzeros holding 255: zero 256) is refused", () => {
  const dir = packed({ format: "gptq", bits: 8, zeros: "asym" });
  const store = TensorStore.open(dir);
  const word = (store.read(`${L}.qzeros`).data as Int32Array)[0];
  store.close();
  pokeInt32(dir, `${L}.qzeros`, 0, word | 0xff);
  assertProblem(
    dir,
    /^layer model\.layers\.0\.mlp\.down_proj: GPTQ v1 qzeros hold 255 at group 0, output 0: a zero point of 256 is impossible/,
  );
});

test("g_idx outside the groups is refused", () => {
  const dir = packed({ format: "gptq" });
  pokeInt32(dir, `${L}.g_idx`, 10, 5);
  assertProblem(dir, /^layer model\.layers\.0\.mlp\.down_proj: g_idx\[10\] is 5, outside the 2 groups/);
});

test("g_idx with a group of the wrong size is refused", () => {
  const dir = packed({ format: "gptq" });
  pokeInt32(dir, `${L}.g_idx`, 0, 1);
  assertProblem(
    dir,
    /^layer model\.layers\.0\.mlp\.down_proj: g_idx puts 127 rows in group 0, expected 128 \(group size 128/,
  );
});

test("a shard the index names but the directory lacks is refused", () => {
  const dir = packed({ format: "gptq", maxShardBytes: 20_000 });
  const shard = shardOf(dir, "lm_head.weight");
  unlinkSync(shard);
  assertProblem(
    dir,
    new RegExp(
      `^shard ${shard.split("/").pop()!.replace(/\./g, "\\.")} is missing: ${INDEX_FILE.replace(/\./g, "\\.")} places \\d+ tensors? in it`,
    ),
  );
});

test("a shard file the index does not name is refused", () => {
  const dir = packed({ format: "gptq", maxShardBytes: 20_000 });
  const path = join(dir, INDEX_FILE);
  const index = JSON.parse(readFileSync(path, "utf8"));
  const shard = shardOf(dir, "lm_head.weight").split("/").pop()!;
  for (const [k, v] of Object.entries(index.weight_map)) if (v === shard) delete index.weight_map[k];
  writeFileSync(path, JSON.stringify(index));
  assertProblem(
    dir,
    new RegExp(`^shard ${shard.replace(/\./g, "\\.")} is missing from model\\.safetensors\\.index\\.json`),
  );
});

test("a tensor the index places in a shard that does not store it is refused", () => {
  const dir = packed({ format: "gptq", maxShardBytes: 20_000 });
  const path = join(dir, INDEX_FILE);
  const index = JSON.parse(readFileSync(path, "utf8"));
  const shard = Object.values(index.weight_map)[0] as string;
  index.weight_map["model.layers.0.mlp.up_proj.weight"] = shard;
  writeFileSync(path, JSON.stringify(index));
  assertProblem(
    dir,
    /^tensor model\.layers\.0\.mlp\.up_proj\.weight: model\.safetensors\.index\.json places it in model-\d+-of-\d+\.safetensors, which does not store it$/,
  );
});

test("a truncated Marlin B is refused, naming it", () => {
  const dir = packed({ format: "marlin" });
  const store = TensorStore.open(dir);
  const b = store.info(`${L}.B`);
  store.close();
  truncateSync(join(dir, "model.safetensors"), b.start + (b.end - b.start) / 2);
  assertProblem(dir, /tensor "model\.layers\.0\.mlp\.down_proj\.B" data_offsets .* run past/);
});

test("a config that contradicts the tensors is refused (what inspect checks)", () => {
  const dir = packed({ format: "gptq" });
  writeQuantConfig(dir, quantConfig({ bits: 8, checkpointFormat: "gptq" }));
  assertProblem(
    dir,
    /layer model\.layers\.0\.mlp\.down_proj: the config says bits 8, but the tensors are 4-bit/,
  );
});

test("the library reports the same, without the CLI", () => {
  const dir = packed({ format: "gptq" });
  pokeInt32(dir, `${L}.g_idx`, 3, -1);
  const r = verifyCheckpoint(dir);
  assert.equal(r.ok, false);
  assert.equal(r.tensors, 8);
  assert.equal(r.shards, 1);
  assert.deepEqual(
    r.problems.map((p) => p.layer),
    [L],
  );
});

test("usage: one directory, or exit 2", () => {
  assert.equal(gptq("verify").code, 2);
  assert.equal(gptq("verify", "a", "b").code, 2);
  const r = gptq("verify", join(root, "nope"));
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no such directory/);
});
