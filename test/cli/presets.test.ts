// quantize's presets from the command line: the summary and --json name the preset, the options given
// explicitly and every per-layer fallback; explicit options override the preset; bad names are refused.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeSyntheticLlama, writeTokenFile } from "../../src/pipeline/synthetic.js";
import { gptq } from "../helpers/cli.js";
import { TINY_SPEC, syntheticTokens } from "../helpers/synthetic.js";

const root = mkdtempSync(join(tmpdir(), "gptq-presets-cli-"));
after(() => rmSync(root, { recursive: true, force: true }));
const fp = join(root, "fp");
writeSyntheticLlama(fp, TINY_SPEC);
const tokens = join(root, "tokens.safetensors");
// 8 x 160 = 1280 tokens: enough for fp-target on the 32-input projections, not on down_proj's 48 inputs
writeTokenFile(tokens, { calibration_tokens: syntheticTokens(TINY_SPEC, 8, 160, 1) });
const SCHEME = ["--bits", "4", "--group-size", "16", "--calib", tokens];

test("quantize with no quality flags runs the balanced preset and names its fallbacks in text and JSON", () => {
  const text = gptq("quantize", fp, "--out", join(root, "b"), ...SCHEME);
  assert.equal(text.code, 0, text.stderr);
  const lines = text.stdout.split("\n");
  assert.equal(lines[0], "preset: balanced");
  assert.equal(
    lines[1],
    "fallback: down_proj in layer 0: 1280 calibration tokens: no fp-target (needs 1536 tokens)",
  );
  assert.match(
    lines[2],
    /^quantized 7 projections .* with gptq \(hessian clipping\) aimed at fp outputs: 4-bit/,
  );
  const meta = JSON.parse(readFileSync(join(root, "b", "quantize_config.json"), "utf8")).meta;
  assert.equal(meta.preset, "balanced");
  assert.equal(meta.fp_target, true);

  const json = gptq("quantize", fp, "--out", join(root, "bj"), ...SCHEME, "--json");
  assert.equal(json.code, 0, json.stderr);
  const res = JSON.parse(json.stdout);
  assert.equal(res.preset, "balanced");
  assert.deepEqual(res.overridden, []);
  assert.deepEqual(res.fallbacks, [
    "down_proj in layer 0: 1280 calibration tokens: no fp-target (needs 1536 tokens)",
  ]);
  assert.equal(res.options.fpTarget, true);
  const down = res.reports.find((r: { linear: string }) => r.linear === "down_proj");
  assert.equal(down.fallback, "1280 calibration tokens: no fp-target (needs 1536 tokens)");
  // the same run, the same weights
  assert.deepEqual(
    readFileSync(join(root, "bj", "model.safetensors")),
    readFileSync(join(root, "b", "model.safetensors")),
  );
});

test("explicit options replace the preset's: fast equals balanced with every quality option turned off", () => {
  const fast = gptq("quantize", fp, "--out", join(root, "f"), ...SCHEME, "--preset", "fast", "--json");
  assert.equal(fast.code, 0, fast.stderr);
  const f = JSON.parse(fast.stdout);
  assert.equal(f.preset, "fast");
  assert.deepEqual(f.fallbacks, []);
  const off = [
    "--clip",
    "minmax",
    "--no-fp-target",
    "--no-split-range",
    "--no-fresh-groups",
    "--refine",
    "0",
  ];
  const text = gptq("quantize", fp, "--out", join(root, "o"), ...SCHEME, ...off);
  assert.equal(text.code, 0, text.stderr);
  assert.match(
    text.stdout,
    /^preset: balanced \(given explicitly: --clip, --fp-target, --split-range, --fresh-groups, --refine\)\n/,
  );
  assert.deepEqual(
    readFileSync(join(root, "o", "model.safetensors")),
    readFileSync(join(root, "f", "model.safetensors")),
  );
  // and the preset's options differ from fast's: a different result
  assert.notDeepEqual(
    readFileSync(join(root, "b", "model.safetensors")),
    readFileSync(join(root, "f", "model.safetensors")),
  );
});

test("quantize refuses an unknown preset and contradicting flags before any work", () => {
  const out = join(root, "bad");
  const usage = (args: string[], want: RegExp) => {
    const r = gptq("quantize", fp, "--out", out, ...SCHEME, ...args);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr.split("\n")[0], want);
  };
  usage(["--preset", "turbo"], /^gptq quantize: --preset must be fast, balanced, best, got "turbo"$/);
  usage(
    ["--fp-target", "--no-fp-target"],
    /^gptq quantize: --fp-target and --no-fp-target exclude each other$/,
  );
  assert.ok(!existsSync(out));
});
