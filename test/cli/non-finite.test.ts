// NaN and Inf in a checkpoint are refused wherever values are read: scales by dequantize, convert and
// eval (exit 1, one line naming the tensor and the first bad index, nothing left behind), an fp weight
// by quantize before any work, non-finite logits by perplexity.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeSyntheticLlama, writeTokenFile } from "../../src/pipeline/synthetic.js";
import { perplexity } from "../../src/model/perplexity.js";
import { DecoderModel } from "../../src/model/decoder.js";
import { GptqError } from "../../src/util/errors.js";
import { syntheticTokens } from "../helpers/synthetic.js";
import { assertOneLineError, gptq } from "../helpers/cli.js";
import { pokeFloat } from "../helpers/corrupt.js";
import { TINY_SPEC } from "../helpers/synthetic.js";

const SPEC = TINY_SPEC;
const DOWN = "model.layers.0.mlp.down_proj";

let root: string;
let fp: string;
let q: string;
let tokens: string;

before(() => {
  root = mkdtempSync(join(tmpdir(), "gptq-nonfinite-"));
  fp = join(root, "fp");
  writeSyntheticLlama(fp, SPEC);
  tokens = join(root, "tokens.safetensors");
  writeTokenFile(tokens, { evaluation_tokens: syntheticTokens(SPEC, 2, 16, 2) });
  q = join(root, "q");
  const r = gptq("quantize", fp, "--out", q, "--method", "rtn", "--bits", "4", "--group-size", "16");
  assert.equal(r.code, 0, r.stderr);
});

after(() => rmSync(root, { recursive: true, force: true }));

/** A copy of the quantized checkpoint with one scale of down_proj ([3, 32]) made non-finite at [2, 17]. */
function corruptCopy(name: string, value: "NaN" | "Inf"): string {
  const dir = join(root, name);
  cpSync(q, dir, { recursive: true });
  pokeFloat(dir, `${DOWN}.scales`, 2 * 32 + 17, value);
  return dir;
}

/** Nothing but the named entries beside the checkpoints: no output, no temporary sibling. */
function assertNothingLeft(out: string): void {
  assert.ok(!existsSync(out), `${out} was left behind`);
  const stray = readdirSync(root).filter((n) => n.includes(".tmp") || n.startsWith("."));
  assert.deepEqual(stray, []);
}

for (const value of ["NaN", "Inf"] as const) {
  const bad = new RegExp(
    `layer ${DOWN.replace(/\./g, "\\.")}: scales has a non-finite value \\(${value}\\) at \\[2, 17\\]; the checkpoint is corrupt`,
  );

  test(`dequantize refuses a ${value} scale: exit 1, one line naming it, no output`, () => {
    const dir = corruptCopy(`deq-${value}`, value);
    const out = join(root, `deq-${value}-out`);
    const line = assertOneLineError(gptq("dequantize", dir, out), 1);
    assert.match(line, /^gptq dequantize: error: /);
    assert.match(line, bad);
    assertNothingLeft(out);
  });

  test(`convert refuses a ${value} scale: exit 1, one line naming it, no output`, () => {
    const dir = corruptCopy(`conv-${value}`, value);
    const out = join(root, `conv-${value}-out`);
    const line = assertOneLineError(gptq("convert", dir, out, "--to", "gptq_v2"), 1);
    assert.match(line, bad);
    assertNothingLeft(out);
  });

  test(`eval refuses a ${value} scale instead of printing perplexity NaN`, () => {
    const dir = corruptCopy(`eval-${value}`, value);
    const r = gptq("eval", dir, "--tokens", tokens);
    const line = assertOneLineError(r, 1);
    assert.match(line, bad);
    assert.equal(r.stdout, "");
  });
}

test("the uncorrupted checkpoint passes the same commands (the corruption is what fails them)", () => {
  const out = join(root, "deq-good");
  const r = gptq("dequantize", q, out);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /all 7 written weights read back: equal to the source dequantized, and finite/);
  const e = gptq("eval", q, "--tokens", tokens, "--json");
  assert.equal(e.code, 0, e.stderr);
  assert.ok(Number.isFinite(JSON.parse(e.stdout).ppl));
});

test("dequantize to float16 refuses weights that overflow it (finite scales, Inf products)", () => {
  const dir = join(root, "huge");
  cpSync(q, dir, { recursive: true });
  // 60000 x (code - zero) overflows float16 for any |code - zero| >= 2
  pokeFloat(dir, `${DOWN}.scales`, 0, 60000);
  const out = join(root, "huge-out");
  const line = assertOneLineError(gptq("dequantize", dir, out), 1);
  assert.match(
    line,
    /down_proj\.weight dequantizes to a non-finite value \(-?Inf\) at \[\d+, \d+\].*use --dtype float32/,
  );
  assertNothingLeft(out);
  const f32 = gptq("dequantize", dir, join(root, "huge-f32"), "--dtype", "float32");
  assert.equal(f32.code, 0, f32.stderr);
});

test("quantize refuses a NaN fp weight before any work: exit 1 naming the tensor and index, no output", () => {
  // in the last of two layers: reading layer by layer would quantize layer 0 before finding it
  const dir = join(root, "fp-nan");
  writeSyntheticLlama(dir, { ...SPEC, numLayers: 2 });
  pokeFloat(dir, "model.layers.1.mlp.up_proj.weight", 5 * 32 + 7, "NaN");
  const out = join(root, "fp-nan-out");
  const r = gptq("quantize", dir, "--out", out, "--method", "rtn", "--bits", "4", "--group-size", "16");
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stderr.split("\n").filter(Boolean);
  assert.match(
    lines[lines.length - 1],
    /^gptq quantize: error: .*tensor model\.layers\.1\.mlp\.up_proj\.weight has a non-finite value \(NaN\) at \[5, 7\]; the checkpoint is corrupt/,
  );
  assert.ok(!lines.some((l) => /^layer +\d+ /.test(l)), `a projection was quantized first:\n${r.stderr}`);
  assertNothingLeft(out);
});

test("eval refuses a NaN fp weight (an unquantized checkpoint's norm)", () => {
  const dir = join(root, "fp-norm");
  cpSync(fp, dir, { recursive: true });
  pokeFloat(dir, "model.norm.weight", 3, "Inf");
  const line = assertOneLineError(gptq("eval", dir, "--tokens", tokens), 1);
  assert.match(line, /tensor model\.norm\.weight has a non-finite value \(Inf\) at \[3\]/);
});

test("perplexity refuses non-finite logits, naming sequence, position and token", () => {
  const model = DecoderModel.load(fp);
  const V = SPEC.vocabSize;
  const logits = model.logits.bind(model);
  model.logits = (h: Float32Array, rows: number) => {
    const out = logits(h, rows);
    out[1 * V + 9] = NaN;
    return out;
  };
  assert.throws(
    () => perplexity(model, syntheticTokens(SPEC, 1, 8, 3)),
    (e: unknown) =>
      e instanceof GptqError &&
      /logits of sequence 0, position 1 hold a non-finite value \(NaN\) at token 9/.test(e.message),
  );
});
