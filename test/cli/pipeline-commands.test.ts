import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SyntheticSpec, writeSyntheticLlama, writeTokenFile } from "../../src/pipeline/synthetic.js";
import { syntheticTokens } from "../helpers/synthetic.js";
import { PROJECT_ROOT } from "../helpers/shared.js";
import { CudaDevice } from "../../src/backend/cuda/device.js";

const MAIN = join(PROJECT_ROOT, "dist", "src", "cli", "main.js");
const SPEC: SyntheticSpec = {
  hiddenSize: 32,
  intermediateSize: 44,
  numLayers: 1,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 64,
  seed: 9,
};

function gptq(...args: string[]) {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: "utf8" });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("quantize -> eval -> inspect -> check -> convert, and pad, from the command line", () => {
  const dir = mkdtempSync(join(tmpdir(), "gptq-cli-"));
  try {
    const fp = join(dir, "fp");
    writeSyntheticLlama(fp, SPEC);
    const tokens = join(dir, "tokens.safetensors");
    writeTokenFile(tokens, {
      calibration_tokens: syntheticTokens(SPEC, 8, 16, 1),
      evaluation_tokens: syntheticTokens(SPEC, 2, 16, 2),
    });
    const q = join(dir, "q");
    const r = gptq(
      "quantize",
      fp,
      "--out",
      q,
      "--bits",
      "4",
      "--group-size",
      "16",
      "--asym",
      "--calib",
      tokens,
      // plain GPTQ: no zero point of 0 here, so it writes v1 and the v2 conversion below has work to do
      "--preset",
      "fast",
      "--json",
    );
    assert.equal(r.code, 0, r.err);
    const res = JSON.parse(r.out);
    assert.deepEqual([res.pad.from, res.pad.to], [44, 48]);
    assert.equal(res.layers, 7);
    assert.match(r.err, /layer +0 down_proj +48->32 +rel\. output error/);

    const e = gptq("eval", q, "--tokens", tokens, "--json");
    assert.equal(e.code, 0, e.err);
    const ev = JSON.parse(e.out);
    assert.equal(ev.tokens, 2 * 15);
    assert.ok(ev.ppl > 1 && Number.isFinite(ev.ppl));

    assert.equal(gptq("inspect", q).code, 0);
    assert.match(gptq("check", q).out, /summary:/);
    const c = gptq("convert", q, join(dir, "v2"), "--to", "gptq_v2", "--verify");
    assert.equal(c.code, 0, c.err);

    const bad = gptq("quantize", fp, "--out", join(dir, "x"), "--pad", "none", "--calib", tokens);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /^gptq quantize: error: intermediate_size 44 .*--pad auto/);
    assert.ok(!existsSync(join(dir, "x")));
    assert.equal(gptq("quantize", fp, "--out", join(dir, "y"), "--bits", "5").code, 2);

    // the algorithm's extra searches reach the pipeline and are recorded in the config's meta
    const x = join(dir, "extra");
    const xr = gptq(
      "quantize",
      fp,
      "--out",
      x,
      "--bits",
      "4",
      "--group-size",
      "16",
      "--asym",
      "--calib",
      tokens,
      "--split-range",
      "--fresh-groups",
      "--refine",
      "1",
    );
    assert.equal(xr.code, 0, xr.err);
    const meta = JSON.parse(readFileSync(join(x, "quantize_config.json"), "utf8")).meta;
    assert.deepEqual([meta.split_range, meta.fresh_groups, meta.refine], [true, true, 1]);
    const rtnRefine = gptq("quantize", fp, "--out", join(dir, "z"), "--method", "rtn", "--refine", "1");
    assert.equal(rtnRefine.code, 1);
    assert.match(rtnRefine.err, /--refine need GPTQ/);

    const p = gptq("pad", fp, join(dir, "padded"), "--multiple", "16", "--json");
    assert.equal(p.code, 0, p.err);
    assert.equal(JSON.parse(p.out).to, 48);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("quantize --device: cuda without a GPU is refused before any work; auto falls back to the CPU and says so", () => {
  const dir = mkdtempSync(join(tmpdir(), "gptq-cli-"));
  try {
    const fp = join(dir, "fp");
    writeSyntheticLlama(fp, SPEC);
    const tokens = join(dir, "tokens.safetensors");
    writeTokenFile(tokens, { calibration_tokens: syntheticTokens(SPEC, 4, 16, 1) });
    assert.equal(gptq("quantize", fp, "--out", join(dir, "g"), "--device", "gpu").code, 2);
    const gpu = CudaDevice.available();
    if (!gpu) {
      const r = gptq("quantize", fp, "--out", join(dir, "c"), "--calib", tokens, "--device", "cuda");
      assert.equal(r.code, 1);
      assert.equal(
        r.err,
        "gptq quantize: error: --device cuda: no CUDA GPU found (no driver, or no device); use --device cpu\n",
      );
      assert.ok(!existsSync(join(dir, "c")));
    }
    const a = gptq("quantize", fp, "--out", join(dir, "a"), "--calib", tokens, "--json");
    assert.equal(a.code, 0, a.err);
    assert.equal(JSON.parse(a.out).device.kind, gpu ? "cuda" : "cpu");
    const s = gptq("quantize", fp, "--out", join(dir, "s"), "--calib", tokens, "--device", "cpu");
    assert.equal(s.code, 0, s.err);
    assert.match(s.out, /^device: cpu$/m);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
