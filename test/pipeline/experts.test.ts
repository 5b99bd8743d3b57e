/**
 * Quantizing mixture-of-experts checkpoints (../shared/models/tiny: Mixtral, Qwen3-MoE): each expert from
 * the tokens routed to it, the router left in fp, experts short of tokens rounded and reported; the
 * result loads, evaluates, passes `check` and converts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { after } from "node:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DenseLinear } from "../../src/backend/cpu/linear.js";
import { DecoderModel } from "../../src/model/decoder.js";
import { expertOf } from "../../src/model/families/experts.js";
import { LinearReport, quantizeModel } from "../../src/pipeline/quantize-model.js";
import { quantizeRtn } from "../../src/quant/index.js";
import { TensorStore } from "../../src/io/store.js";
import { assertOneLineError, gptq } from "../helpers/cli.js";
import { PLAIN_GPTQ } from "../helpers/configs.js";
import { skipUnlessTiny, TINY_REFERENCE, tinyModel, tinyReference } from "../helpers/tiny.js";

const dir = mkdtempSync(join(tmpdir(), "gptq-experts-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const CALIB = ["--calib", TINY_REFERENCE, "--calib-key", "calibration"];
const EVAL = ["--tokens", TINY_REFERENCE, "--key", "tokens", "--json"];

/** per layer, the tokens each expert was calibrated on (one count per expert) */
function tokensByLayer(reports: readonly LinearReport[]): Map<number, Map<number, number>> {
  const out = new Map<number, Map<number, number>>();
  for (const r of reports) {
    const e = expertOf(r.linear);
    if (e === undefined) continue;
    assert.ok(r.tokens !== undefined, `${r.name} reports no tokens`);
    const m = out.get(r.layer) ?? new Map<number, number>();
    if (m.has(e))
      assert.equal(m.get(e), r.tokens, `${r.name}: every projection of an expert sees its tokens`);
    out.set(r.layer, m.set(e, r.tokens));
  }
  return out;
}

for (const [family, router] of [
  ["mixtral", "block_sparse_moe.gate"],
  ["qwen3_moe", "mlp.gate"],
] as const) {
  test(
    `${family}: GPTQ 4-bit group 32 per expert; loads, evaluates, checks, converts`,
    { skip: skipUnlessTiny(family) },
    () => {
      const out = join(dir, family);
      const q = gptq(
        "quantize",
        tinyModel(family),
        "--out",
        out,
        "--group-size",
        "32",
        "--device",
        "cpu",
        // plain GPTQ: what is under test is each expert's own Hessian, not a preset's searches
        "--preset",
        "fast",
        ...CALIB,
        "--json",
      );
      assert.equal(q.code, 0, q.stderr);
      const res = JSON.parse(q.stdout) as { layers: number; reports: LinearReport[] };
      // 2 layers x (4 attention + 8 experts x 3)
      assert.equal(res.layers, 56);
      const ref = tinyReference(family);
      const routed = ref.calibration.length * ref.calibration[0].length * 2; // top-2
      for (const [layer, experts] of tokensByLayer(res.reports)) {
        assert.equal(experts.size, 8);
        assert.equal(
          [...experts.values()].reduce((a, b) => a + b, 0),
          routed,
          `layer ${layer}: every token twice`,
        );
      }
      assert.ok(
        res.reports.every((r) => !r.rounded),
        "32 x 48 tokens are enough for every expert",
      );

      const store = TensorStore.open(out);
      try {
        assert.ok(store.has(`model.layers.0.${router}.weight`), "the router stays in fp");
        assert.ok(!store.has(`model.layers.0.${router}.qweight`));
      } finally {
        store.close();
      }
      const fp = JSON.parse(gptq("eval", tinyModel(family), ...EVAL).stdout) as { ppl: number };
      assert.ok(Math.abs(fp.ppl / ref.ppl - 1) < 1e-4, `eval ${fp.ppl}, transformers ${ref.ppl}`);
      const quant = JSON.parse(gptq("eval", out, ...EVAL).stdout) as { ppl: number };
      assert.ok(Math.abs(quant.ppl / fp.ppl - 1) < 0.05, `quantized ${quant.ppl} vs fp ${fp.ppl}`);

      assert.equal(gptq("check", out).code, 0);
      const v2 = join(dir, `${family}-v2`);
      const c = gptq("convert", out, v2, "--to", "gptq_v2");
      assert.equal(c.code, 0, c.stderr);
      assert.equal((JSON.parse(gptq("eval", v2, ...EVAL).stdout) as { ppl: number }).ppl, quant.ppl);
    },
  );
}

test(
  "group 128: Mixtral's 96-wide experts are zero-padded to 128 (exactly: gptq pad keeps the perplexity); Qwen3-MoE's are refused before any work",
  { skip: skipUnlessTiny("mixtral") || skipUnlessTiny("qwen3_moe") },
  () => {
    const ref = tinyReference("mixtral");
    const padded = join(dir, "mixtral-pad");
    const p = gptq("pad", tinyModel("mixtral"), padded, "--kernel", "marlin");
    assert.equal(p.code, 0, p.stderr);
    const fp = JSON.parse(gptq("eval", padded, ...EVAL).stdout) as { ppl: number };
    assert.ok(Math.abs(fp.ppl / ref.ppl - 1) < 1e-4, `padded ${fp.ppl}, transformers ${ref.ppl}`);

    const out = join(dir, "mixtral-128");
    const q = gptq("quantize", tinyModel("mixtral"), "--out", out, "--device", "cpu", ...CALIB, "--json");
    assert.equal(q.code, 0, q.stderr);
    const { pad } = JSON.parse(q.stdout) as { pad: { from: number; to: number } };
    assert.deepEqual([pad.from, pad.to], [96, 128]);
    const quant = JSON.parse(gptq("eval", out, ...EVAL).stdout) as { ppl: number };
    assert.ok(Math.abs(quant.ppl / ref.ppl - 1) < 0.1, `quantized ${quant.ppl} vs fp ${ref.ppl}`);
    assert.equal(gptq("check", out, "--require", "exllama").code, 0);

    const refused = join(dir, "qwen3_moe-128");
    const r = gptq("quantize", tinyModel("qwen3_moe"), "--out", refused, "--device", "cpu", ...CALIB);
    assert.match(
      assertOneLineError(r, 1),
      /experts\.0\.down_proj \(96 -> 128\).*group size 128 does not divide in_features 96/,
    );
    assert.ok(!existsSync(refused));
  },
);

test(
  "check plans the experts, not the router, of an unquantized mixtral",
  { skip: skipUnlessTiny("mixtral") },
  () => {
    const r = gptq("check", tinyModel("mixtral"), "--group-size", "32", "--json");
    const names = (JSON.parse(r.stdout) as { layers: { name: string }[] }).layers.map((l) => l.name);
    assert.equal(names.length, 56);
    assert.ok(names.includes("model.layers.1.block_sparse_moe.experts.7.w2"));
    assert.ok(!names.some((n) => n.endsWith(".gate")), "the router is not quantized");
  },
);

test(
  "experts with fewer routed tokens than inputs are rounded (RTN), and say so",
  { skip: skipUnlessTiny("mixtral") },
  () => {
    const model = DecoderModel.load(tinyModel("mixtral"));
    const weights = new Map(
      Object.entries(model.layer(0).linears).map(([n, l]) => [
        n,
        Float32Array.from((l as DenseLinear).weight),
      ]),
    );
    // one sequence of 48 tokens: 96 routed rows over 8 experts, fewer than any expert's 96 or 128 inputs
    const calibration = [tinyReference("mixtral").calibration[0]];
    const opts = { ...PLAIN_GPTQ, groupSize: 32 };
    const res = quantizeModel(model, calibration, opts);
    const experts = res.reports.filter((r) => expertOf(r.linear) !== undefined);
    assert.equal(experts.length, 48);
    assert.ok(experts.every((r) => r.rounded === true));
    assert.ok(
      res.reports
        .filter((r) => expertOf(r.linear) === undefined)
        .every((r) => !r.rounded && r.tokens === undefined),
    );
    for (const layer of tokensByLayer(res.reports).values())
      assert.equal(
        [...layer.values()].reduce((a, b) => a + b, 0),
        96,
      );
    // layer 0's experts are exactly round-to-nearest of their weights
    for (const r of experts.filter((x) => x.layer === 0)) {
      const want = quantizeRtn(weights.get(r.linear)!, r.outFeatures, r.inFeatures, {
        bits: 4,
        groupSize: 32,
        sym: true,
        clip: "minmax",
      });
      assert.deepEqual(res.layers.get(r.name)!.codes, want.codes, r.name);
    }
  },
);

test(
  "quantize's lines say which expert projections were rounded: exactly those with fewer tokens than inputs",
  { skip: skipUnlessTiny("qwen3_moe") },
  () => {
    const out = join(dir, "few");
    const r = gptq(
      "quantize",
      tinyModel("qwen3_moe"),
      "--out",
      out,
      "--group-size",
      "32",
      "--device",
      "cpu",
      ...CALIB,
      "--nsamples",
      "8",
    );
    assert.equal(r.code, 0, r.stderr);
    const rounded = new Map<string, string[]>();
    let both = 0;
    for (const m of r.stderr.matchAll(
      /layer +(\d+) experts\.(\d+)\.(\w+) +(\d+)->\d+ .* (\d+) tokens(  RTN)?/g,
    )) {
      const [, layer, expert, name, inFeatures, tokens, rtn] = m;
      assert.equal(rtn !== undefined, Number(tokens) < Number(inFeatures), m[0]);
      if (rtn) {
        const key = `layer ${layer} expert ${expert}`;
        rounded.set(key, [...(rounded.get(key) ?? []), name]);
      }
      both++;
    }
    assert.equal(both, 48);
    assert.ok(rounded.size > 0, "8 x 48 tokens leave some experts short");
    const summary = r.stdout.split("\n").find((l) => l.startsWith("experts: "))!;
    const listed = [...rounded].map(([e, names]) => `${e} (${names.join(", ")})`).join(", ");
    assert.ok(summary.endsWith(`RTN (too few tokens for GPTQ): ${listed}`), summary);
  },
);
