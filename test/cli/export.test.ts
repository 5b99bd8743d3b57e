import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeSyntheticLlama, writeTokenFile } from "../../src/pipeline/synthetic.js";
import { assertOneLineError, gptq } from "../helpers/cli.js";
import { ORT } from "../helpers/onnxruntime.js";
import { PROJECT_ROOT } from "../helpers/shared.js";
import { TINY_SPEC, syntheticTokens } from "../helpers/synthetic.js";

const dir = mkdtempSync(join(tmpdir(), "gptq-export-cli-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
const fp = join(dir, "fp");
writeSyntheticLlama(fp, TINY_SPEC);
const tokens = join(dir, "tokens.safetensors");
writeTokenFile(tokens, { evaluation_tokens: syntheticTokens(TINY_SPEC, 2, 24, 2) });
const q = join(dir, "q");
const made = gptq(
  "quantize",
  fp,
  "--out",
  q,
  "--bits",
  "4",
  "--group-size",
  "16",
  "--asym",
  "--method",
  "rtn",
);
assert.equal(made.code, 0, made.stderr);

test("export --to onnx writes the folder and says how the model was checked", () => {
  const out = join(dir, "onnx-text");
  const r = gptq("export", q, out, "--to", "onnx", "--tokens", tokens);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^exported .* 7 MatMulNBits, 1 fp32 Gemm; \d+ files, model \d+ bytes\n/);
  if (ORT)
    assert.match(
      r.stdout,
      /checked with onnxruntime-node [\d.]+ on 24 tokens: logits within \S+ of the project's forward in one run, \S+ through the key\/value cache/,
    );
  else assert.match(r.stdout, /not checked: onnxruntime-node/);
  assert.ok(existsSync(join(out, "onnx", "model.onnx")));

  const j = gptq("export", q, join(dir, "onnx-json"), "--to", "onnx", "--json");
  assert.equal(j.code, 0, j.stderr);
  const res = JSON.parse(j.stdout);
  assert.deepEqual([res.quantized, res.dense, res.externalDataBytes], [7, 1, 0]);
  if (ORT) assert.ok(res.verification.fullRelDiff <= 1e-3 && res.verification.tokens === 16);

  const fast = gptq(
    "export",
    q,
    join(dir, "onnx-int8"),
    "--to",
    "onnx",
    "--accuracy-level",
    "4",
    "--no-verify",
  );
  assert.equal(fast.code, 0, fast.stderr);
  assert.match(fast.stdout, /not checked: not asked for \(--no-verify\)/);
});

test("without onnxruntime-node the export still works and says the check was skipped", () => {
  // the built CLI alone, beside a node_modules that holds only its dependency
  const bare = join(dir, "bare");
  cpSync(join(PROJECT_ROOT, "dist", "src"), join(bare, "dist", "src"), { recursive: true });
  writeFileSync(join(bare, "package.json"), '{ "type": "module" }\n');
  mkdirSync(join(bare, "node_modules"));
  symlinkSync(join(PROJECT_ROOT, "node_modules", "koffi"), join(bare, "node_modules", "koffi"), "dir");
  const out = join(dir, "onnx-bare");
  const r = spawnSync(
    process.execPath,
    [join(bare, "dist", "src", "cli", "main.js"), "export", q, out, "--to", "onnx"],
    {
      encoding: "utf8",
    },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /not checked: onnxruntime-node is not installed/);
  assert.ok(existsSync(join(out, "onnx", "model.onnx")));
});

test("export: a malformed command line exits 2; a bad request exits 1 with one line", () => {
  for (const args of [
    [q, join(dir, "x")],
    [q, join(dir, "x"), "--to", "gguf"],
    [q, "--to", "onnx"],
    [q, join(dir, "x"), "--to", "onnx", "--accuracy-level", "3"],
    [q, join(dir, "x"), "--to", "onnx", "--accuracy-level", "4"],
    [q, join(dir, "x"), "--to", "onnx", "--key", "k"],
    [q, join(dir, "x"), "--to", "onnx", "--tokens", tokens, "--no-verify"],
  ]) {
    const r = gptq("export", ...args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
  }
  assert.match(
    assertOneLineError(gptq("export", q, join(dir, "onnx-text"), "--to", "onnx"), 1),
    /already exists/,
  );
  assert.match(
    assertOneLineError(gptq("export", join(dir, "nope"), join(dir, "x"), "--to", "onnx"), 1),
    /nope/,
  );
  assert.ok(!existsSync(join(dir, "x")));
});
