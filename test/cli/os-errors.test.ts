// Operating-system failures, run as a user runs the CLI: a read-only target, a full disk, an output under
// a regular file, two writers of one output, a run killed mid-write; and too few calibration tokens. Each
// failure is one line and exit 1, is found before any work where it can be, and leaves nothing behind.
// Tests that need a tmpfs mount (root, and a kernel that permits it) skip visibly where they cannot.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statfsSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { syntheticConfig, writeSyntheticLlama, writeTokenFile } from "../../src/pipeline/synthetic.js";
import { quantizeCheckpoint } from "../../src/pipeline/quantize-checkpoint.js";
import { treeBytes } from "../../src/io/atomic.js";
import { CliResult, assertOneLineError, gptq } from "../helpers/cli.js";
import { PROJECT_ROOT } from "../helpers/shared.js";
import { fpEntries, llamaExtras, llamaLayers, writeCheckpointDir } from "../helpers/checkpoints.js";
import { syntheticTokens } from "../helpers/synthetic.js";
import { PLAIN_GPTQ } from "../helpers/configs.js";
import { TINY_SPEC } from "../helpers/synthetic.js";

const MAIN = join(PROJECT_ROOT, "dist/src/cli/main.js");
const SPEC = TINY_SPEC;
const GATE = "model.layers.0.mlp.gate_proj";
const UP = "model.layers.0.mlp.up_proj";

const root = mkdtempSync(join(tmpdir(), "gptq-os-"));
const mounts: string[] = [];
after(() => {
  for (const m of mounts) spawnSync("umount", [m]);
  rmSync(root, { recursive: true, force: true });
});

// an unquantized model, its calibration tokens, and the model quantized (for convert, split...)
const fp = join(root, "fp");
writeSyntheticLlama(fp, SPEC);
const tokens = join(root, "tokens.safetensors");
writeTokenFile(tokens, {
  calibration_tokens: syntheticTokens(SPEC, 8, 16, 1),
  one_sequence: syntheticTokens(SPEC, 1, 16, 2),
});
const q = join(root, "q");
await quantizeCheckpoint({
  modelDir: fp,
  outDir: q,
  options: { ...PLAIN_GPTQ, method: "rtn", groupSize: 16 },
  format: "gptq",
  pad: "auto",
});

/** Every writing command, writing to `out`. */
function writers(out: string): string[][] {
  return [
    ["quantize", fp, "--out", out, "--method", "rtn"],
    ["convert", q, out, "--to", "gptq_v2"],
    ["dequantize", q, out],
    ["split", q, out, "--layer", GATE, "--sizes", "16,32", "--names", "g1,g2"],
    ["merge", q, out, "--layers", `${GATE},${UP}`, "--name", "model.layers.0.mlp.gate_up_proj"],
    ["pad", fp, out, "--multiple", "64"],
  ];
}

/** Temporary files or folders in `dir` (what a failed or killed run would leave). */
function temporaries(dir: string): string[] {
  return readdirSync(dir).filter((n) => /\.tmp-\d+-/.test(n));
}

/** Mounts a tmpfs on a new folder `name` under the test root; a skip reason where that is not allowed. */
function mountTmpfs(name: string, options: string): { dir: string; skip: string | false } {
  const dir = join(root, name);
  mkdirSync(dir);
  const r = spawnSync("mount", ["-t", "tmpfs", "-o", options, "tmpfs", dir], { encoding: "utf8" });
  if (r.status === 0) {
    mounts.push(dir);
    return { dir, skip: false };
  }
  const why = (r.stderr || r.error?.message || `exit ${r.status}`).trim();
  const skip = `SKIPPED: cannot mount a tmpfs (-o ${options}) here, which this test needs: ${why}`;
  console.warn(skip);
  return { dir, skip };
}

/** Runs the CLI without waiting, collecting what it prints. */
function gptqAsync(...args: string[]): { pid: number; done: Promise<CliResult> } {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const done = new Promise<CliResult>((resolve) =>
    child.on("close", (code, signal) => resolve({ code: code ?? (signal ? -1 : -2), stdout, stderr })),
  );
  return { pid: child.pid!, done };
}

/**
 * An unquantized checkpoint whose copy takes a while to write (a 32768 x 512 fp16 embedding and head:
 * 64 MB), stored sparse so making it costs nothing. `pad --multiple 1` copies it.
 */
function slowModel(): string {
  const dir = join(root, "slow");
  if (existsSync(dir)) return dir;
  const hidden = 512;
  const spec = {
    ...SPEC,
    hiddenSize: hidden,
    intermediateSize: 1024,
    numHeads: 8,
    numKvHeads: 8,
    vocabSize: 32768,
  };
  return writeCheckpointDir(
    dir,
    [
      ...llamaExtras(hidden, spec.vocabSize),
      { name: "model.layers.0.post_attention_layernorm.weight", dtype: "F16", shape: [hidden] },
      ...llamaLayers(0, hidden, 1024).flatMap(fpEntries),
    ],
    { "config.json": syntheticConfig(spec) },
  );
}

test("an output under a regular file: every writing command refuses in one line before any work", () => {
  const dir = join(root, "under-file");
  mkdirSync(dir);
  const file = join(dir, "notes.txt");
  writeFileSync(file, "x");
  for (const args of writers(join(file, "out"))) {
    const line = assertOneLineError(gptq(...args), 1);
    assert.equal(
      line,
      `gptq ${args[0]}: error: cannot write ${file}/out: ${file} is a file, not a folder (ENOTDIR); choose a path that is not under a file`,
    );
  }
  assert.match(assertOneLineError(gptq("fix-config", file), 1), /^gptq fix-config: error: .*notes\.txt/);
  assert.deepEqual(readdirSync(dir), ["notes.txt"]);

  // the stack trace only with GPTQ_DEBUG=1
  const debug = spawnSync(process.execPath, [MAIN, ...writers(join(file, "out"))[0]], {
    encoding: "utf8",
    env: { ...process.env, GPTQ_DEBUG: "1" },
  });
  assert.equal(debug.status, 1);
  assert.match(
    debug.stderr,
    /^gptq quantize: error: cannot write .*\(ENOTDIR\).*\n.*Error: cannot write[^]*\n {4}at /,
  );
});

test("an output that exists: quantize refuses before calibrating or quantizing anything", () => {
  const out = join(root, "taken");
  mkdirSync(out);
  writeFileSync(join(out, "keep.txt"), "mine");
  const r = gptq("quantize", fp, "--out", out, "--calib", tokens);
  assert.equal(
    assertOneLineError(r, 1),
    `gptq quantize: error: output ${out} already exists and is not empty; choose another path`,
  );
  assert.deepEqual(readdirSync(out), ["keep.txt"]);
});

test("a read-only target (a read-only tmpfs): one line naming the output, exit 1, before any work", (t) => {
  const { dir, skip } = mountTmpfs("ro", "ro,size=1m");
  if (skip) return t.skip(skip);
  for (const args of writers(join(dir, "out"))) {
    const line = assertOneLineError(gptq(...args), 1);
    assert.equal(
      line,
      `gptq ${args[0]}: error: cannot write ${dir}/out: read-only file system (EROFS); write somewhere else`,
    );
  }
  assert.deepEqual(readdirSync(dir), []);

  // fix-config rewrites files in place: a checkpoint on a read-only disk is refused before writing
  const { dir: rw, skip: skip2 } = mountTmpfs("ro2", "size=1m");
  if (skip2) return t.skip(skip2);
  const ckpt = join(rw, "q");
  cpSync(q, ckpt, { recursive: true });
  rmSync(join(ckpt, "quantize_config.json")); // so there is something to fix
  const remount = spawnSync("mount", ["-o", "remount,ro", rw], { encoding: "utf8" });
  if (remount.status !== 0) {
    const why = `SKIPPED (fix-config part): cannot remount read-only: ${remount.stderr.trim()}`;
    console.warn(why);
    return t.skip(why);
  }
  assert.equal(
    assertOneLineError(gptq("fix-config", ckpt), 1),
    `gptq fix-config: error: cannot write ${ckpt}: read-only file system (EROFS); write somewhere else`,
  );
  assert.deepEqual(
    readdirSync(ckpt).sort(),
    readdirSync(q)
      .filter((f) => f !== "quantize_config.json")
      .sort(),
  );
});

test("a disk too small for the output (16 kB tmpfs): refused up front by the free-space estimate", (t) => {
  const { dir, skip } = mountTmpfs("small", "size=16k");
  if (skip) return t.skip(skip);
  for (const args of writers(join(dir, "out"))) {
    const r = gptq(...args);
    const line = assertOneLineError(r, 1); // one line: no projection quantized, nothing padded
    assert.match(
      line,
      new RegExp(
        `^gptq ${args[0]}: error: not enough space for ${dir}/out: it needs about [\\d.]+ kB, [\\d.]+ kB are free in ${dir}; free some space or write somewhere else$`,
      ),
    );
  }
  assert.deepEqual(readdirSync(dir), []);
});

test("a disk that fills up mid-write (tmpfs out of inodes): ENOSPC in one line, exit 1, nothing left", (t) => {
  // 3 inodes: the root, the temporary folder and one file; the next file fails with ENOSPC, after the
  // free-space check has passed (there are bytes enough)
  const { dir, skip } = mountTmpfs("full", "size=1m,nr_inodes=3");
  if (skip) return t.skip(skip);
  assert.equal(statfsSync(dir).ffree, 2, "the root folder takes one of the three inodes");
  const pad = gptq("pad", fp, join(dir, "out"), "--multiple", "64");
  assert.equal(
    assertOneLineError(pad, 1),
    `gptq pad: error: cannot write ${dir}/out/config.json: no space left on device (ENOSPC); free some space, or write somewhere else`,
  );
  assert.deepEqual(readdirSync(dir), []);

  // quantize: the work is done, the write fails; one error line after the per-projection log
  const r = gptq("quantize", fp, "--out", join(dir, "out"), "--calib", tokens);
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stderr.trimEnd().split("\n");
  assert.match(
    lines.at(-1)!,
    /^gptq quantize: error: cannot write .*\/out\/\S+: no space left on device \(ENOSPC\); /,
  );
  assert.equal(lines.filter((l) => /^gptq .*error:|internal error|^\s+at /.test(l)).length, 1, r.stderr);
  assert.deepEqual(readdirSync(dir), []);
});

test("two writers of one output at once: one writes it, the other fails in one line, nothing else left", async () => {
  const model = slowModel();
  const dir = join(root, "race");
  mkdirSync(dir);
  const out = join(dir, "out");
  const [a, b] = await Promise.all([
    gptqAsync("pad", model, out, "--multiple", "1").done,
    gptqAsync("pad", model, out, "--multiple", "1").done,
  ]);
  const [ok, failed] = a.code === 0 ? [a, b] : [b, a];
  assert.equal(ok.code, 0, ok.stderr);
  // the loser either found the output already there, or lost the final rename to the winner
  assert.match(
    assertOneLineError(failed, 1),
    new RegExp(
      `^gptq pad: error: (output ${out} already exists and is not empty; choose another path|cannot write ${out}: already exists( and is not empty)? \\((ENOTEMPTY|EEXIST)\\); another process wrote it while this one ran; run one command per output, or choose another)$`,
    ),
  );
  assert.deepEqual(readdirSync(dir), ["out"]);
  assert.deepEqual(readdirSync(out).sort(), ["config.json", "model.safetensors"]);
  rmSync(dir, { recursive: true });
});

test("a run killed with SIGKILL mid-write: the next writing command there removes what it left and says what that freed", async () => {
  const model = slowModel();
  const dir = join(root, "killed");
  mkdirSync(dir);
  const run = gptqAsync("pad", model, join(dir, "out"), "--multiple", "1");
  let finished = false;
  void run.done.then(() => (finished = true));
  const prefix = `.out.tmp-${run.pid}-`;
  let leftover: string | undefined;
  while (!finished && !leftover) {
    const tmp = readdirSync(dir).find((n) => n.startsWith(prefix));
    try {
      if (tmp && treeBytes(join(dir, tmp)) > 0) {
        process.kill(run.pid, "SIGKILL");
        leftover = tmp;
      }
    } catch {
      // the folder changed under us: look again
    }
    await sleep(1);
  }
  await run.done;
  assert.ok(leftover, "pad finished before it could be killed mid-write");
  assert.deepEqual(readdirSync(dir), [leftover], "SIGKILL leaves the temporary folder behind");
  const bytes = treeBytes(join(dir, leftover));
  assert.ok(bytes > 0);

  // any writing command with its output in that folder cleans up, whatever the output's name
  const r = gptq("pad", fp, join(dir, "other"), "--multiple", "64");
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(
    lines[0],
    new RegExp(
      `^gptq pad: removed 1 temporary file or folder left in ${dir} by killed runs \\(${leftover.replace(/\./g, "\\.")}\\): freed [\\d.]+ .?B \\(${bytes} bytes\\)$`,
    ),
  );
  assert.deepEqual(readdirSync(dir), ["other"]);
  assert.deepEqual(temporaries(dir), []);
});

test("too few calibration tokens for a layer's in_features: quantize warns on stderr and in --json, and writes", () => {
  const out = join(root, "few");
  const r = gptq("quantize", fp, "--out", out, "--calib", tokens, "--calib-key", "one_sequence", "--json");
  assert.equal(r.code, 0, r.stderr);
  const want =
    /^16 calibration tokens are fewer than the in_features of q_proj \(32\), k_proj \(32\), v_proj \(32\), o_proj \(32\), gate_proj \(32\), up_proj \(32\), down_proj \(128\) in every layer: .*rank-deficient.*; give at least 128 tokens/;
  const res = JSON.parse(r.stdout);
  assert.equal(res.warnings.length, 1);
  assert.match(res.warnings[0], want);
  const warned = r.stderr.split("\n").filter((l) => l.startsWith("warning: "));
  assert.equal(warned.length, 1, r.stderr);
  assert.equal(warned[0], `warning: ${res.warnings[0]}`);
  assert.ok(existsSync(join(out, "model.safetensors")));

  // 8 x 16 = 128 tokens cover every in_features: no warning
  const enough = gptq("quantize", fp, "--out", join(root, "enough"), "--calib", tokens, "--json");
  assert.equal(enough.code, 0, enough.stderr);
  assert.deepEqual(JSON.parse(enough.stdout).warnings, []);
  assert.ok(!enough.stderr.includes("warning"));
});

test("quantize checks its calibration input before any work: one line each, nothing written", () => {
  const dir = join(root, "inputs");
  mkdirSync(join(dir, "calib-folder"), { recursive: true });
  writeFileSync(join(dir, "calib.txt"), "some text");
  const outOfVocab = join(dir, "oov.safetensors");
  writeTokenFile(outOfVocab, {
    calibration_tokens: [Int32Array.from({ length: 16 }, (_, i) => (i === 15 ? 64 : i))],
  });
  const out = join(dir, "out");
  const cases: [string[], RegExp][] = [
    [["--calib", join(dir, "absent.safetensors")], /calibration file .*absent\.safetensors does not exist$/],
    [["--calib", join(dir, "calib-folder")], /calibration file .*calib-folder is a folder; /],
    [
      ["--calib", join(dir, "calib.txt"), "--calib-key", "x"],
      /--calib-key names a tensor of a \.safetensors token file; /,
    ],
    [["--calib", tokens, "--calib-key", "nope"], /no tensor "nope"; integer \[n, seqlen\] tensors here: /],
    [["--calib", outOfVocab], /token id 64 is outside the model's vocabulary of 64$/],
  ];
  for (const [args, want] of cases)
    assert.match(assertOneLineError(gptq("quantize", fp, "--out", out, ...args), 1), want);
  // calibration options without --calib are a malformed command line
  const r = gptq("quantize", fp, "--out", out, "--method", "rtn", "--nsamples", "4");
  assert.equal(r.code, 2);
  assert.match(
    r.stderr,
    /^gptq quantize: --calib-key, --nsamples and --seqlen describe --calib FILE; give it too\n/,
  );
  assert.ok(!existsSync(out));
});
