/**
 * The tiny checkpoints of ../shared/models/tiny/ (one per family, saved by transformers) and their
 * reference: transformers' fp32 logits for fixed tokens, the perplexity of those tokens, and calibration
 * tokens.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { readAllTensors } from "../../src/io/safetensors.js";
import { DecoderModel } from "../../src/model/decoder.js";
import { perplexity } from "../../src/model/perplexity.js";
import { quantizeCheckpoint } from "../../src/pipeline/quantize-checkpoint.js";
import { convertCheckpoint } from "../../src/transform/convert.js";
import { tmpDir } from "./checkpoints.js";
import { gptq } from "./cli.js";
import { PLAIN_GPTQ } from "./configs.js";
import { sharedPath, skipUnlessShared } from "./shared.js";

export const TINY_REFERENCE = sharedPath("models", "tiny", "reference.safetensors");

/** the checkpoint folder of a family */
export function tinyModel(family: string): string {
  return sharedPath("models", "tiny", family);
}

/** false when the family's checkpoint and the reference are present, else the skip reason */
export function skipUnlessTiny(family: string): string | false {
  return (
    skipUnlessShared("models", "tiny", family) || skipUnlessShared("models", "tiny", "reference.safetensors")
  );
}

export interface TinyReference {
  /** the evaluation sequences */
  tokens: Int32Array[];
  /** transformers' logits for each sequence, T x vocab */
  logits: Float32Array[];
  /** calibration sequences */
  calibration: Int32Array[];
  /** the perplexity of `tokens` under the reference logits */
  ppl: number;
}

function rows<T extends Int32Array | Float32Array>(data: T, n: number): T[] {
  const size = data.length / n;
  return Array.from({ length: n }, (_, i) => data.subarray(i * size, (i + 1) * size) as T);
}

export function tinyReference(family: string): TinyReference {
  const { tensors, metadata } = readAllTensors(TINY_REFERENCE);
  const report = JSON.parse(metadata.report) as { families: Record<string, { ppl_tokens: number }> };
  const tokens = tensors.get("tokens")!;
  const calibration = tensors.get("calibration")!;
  const logits = tensors.get(`logits.${family}`)!;
  return {
    tokens: rows(tokens.data as Int32Array, tokens.shape[0]),
    logits: rows(logits.data as Float32Array, logits.shape[0]),
    calibration: rows(calibration.data as Int32Array, calibration.shape[0]),
    ppl: report.families[family].ppl_tokens,
  };
}

/** max |a - b| over two arrays of one length */
export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** ||a - b|| / ||b|| */
function relativeError(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

/** The fp32 forward of `dir` against transformers' logits for the family's reference tokens. */
export function assertReferenceLogits(dir: string, ref: TinyReference): number {
  const model = DecoderModel.load(dir);
  const diff = Math.max(...ref.tokens.map((t, i) => maxAbsDiff(model.forward(t), ref.logits[i])));
  assert.ok(diff <= 1e-3, `max |logits - transformers'| = ${diff}`);
  return diff;
}

/** `gptq eval --json` on the reference tokens */
export function evalReference(dir: string): number {
  const r = gptq("eval", dir, "--tokens", TINY_REFERENCE, "--key", "tokens", "--json");
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { ppl: number }).ppl;
}

export interface FamilyTestOptions {
  /** group sizes to quantize at with GPTQ 4-bit (default 32 and 128) */
  groups?: number[];
  /** kernels every quantized layer must pass (`gptq check --require`) */
  require?: string[];
}

/**
 * The checks every family passes: the fp32 forward reproduces transformers' logits, `gptq eval` its
 * perplexity; GPTQ 4-bit at each group size quantizes (calibrated on the reference's calibration tokens),
 * writes the fused projections as stored, and the result evaluates close to the fp model, passes
 * `gptq check` and converts to the other GPTQ version with the same perplexity.
 */
export function familyTests(family: string, opts: FamilyTestOptions = {}): void {
  const skip = skipUnlessTiny(family);
  const dir = tinyModel(family);

  test(
    `${family}: the fp32 forward reproduces transformers' logits, and gptq eval its perplexity`,
    { skip },
    () => {
      const ref = tinyReference(family);
      assertReferenceLogits(dir, ref);
      const ppl = evalReference(dir);
      assert.ok(Math.abs(ppl / ref.ppl - 1) < 1e-5, `perplexity ${ppl}, transformers' ${ref.ppl}`);
    },
  );

  for (const groupSize of opts.groups ?? [32, 128])
    test(
      `${family}: GPTQ 4-bit group ${groupSize} quantizes, evaluates, passes check and converts`,
      { skip },
      async () => {
        const ref = tinyReference(family);
        const root = tmpDir(`tiny-${family}`);
        try {
          const out = join(root, "q");
          const res = await quantizeCheckpoint({
            modelDir: dir,
            outDir: out,
            options: { ...PLAIN_GPTQ, groupSize },
            calib: { file: TINY_REFERENCE, key: "calibration", nsamples: 8 },
            format: "auto",
            pad: "none",
          });
          // every stored projection of every layer, fused ones as stored
          const fp = DecoderModel.load(dir);
          const stored = fp.layers.flatMap((l) => Object.keys(l.linears).map((n) => l.linearPrefix(n)));
          assert.deepEqual(res.reports.map((r) => r.name).sort(), stored.sort());
          // each projection's outputs on the calibration tokens stay within a few percent...
          for (const r of res.reports)
            assert.ok(r.relError < 0.05, `${r.name}: relative output error ${r.relError}`);
          // ...and the written checkpoint computes a model near the fp one: random weights make the logits
          // sensitive (8-bit gives about 1/16 of the 4-bit error, as the step size predicts)
          const q = DecoderModel.load(out);
          const err = Math.max(...ref.tokens.map((t) => relativeError(q.forward(t), fp.forward(t))));
          assert.ok(err > 0 && err < 0.6, `relative logit error of the quantized model ${err}`);
          const ppl = perplexity(q, ref.tokens).ppl;
          assert.ok(Math.abs(Math.log(ppl / ref.ppl)) < 0.25, `quantized perplexity ${ppl}, fp ${ref.ppl}`);
          const check = gptq(
            "check",
            out,
            "--json",
            ...(opts.require ?? []).flatMap((k) => ["--require", k]),
          );
          assert.equal(check.code, 0, check.stderr);
          const layers = (JSON.parse(check.stdout) as { layers: { name: string }[] }).layers;
          assert.equal(layers.length, stored.length);
          const other = res.format === "gptq" ? "gptq_v2" : "gptq";
          await convertCheckpoint(out, join(root, "c"), other);
          assert.equal(perplexity(DecoderModel.load(join(root, "c")), ref.tokens).ppl, ppl);
        } finally {
          rmSync(root, { recursive: true, force: true });
        }
      },
    );
}
