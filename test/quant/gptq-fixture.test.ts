/** GPTQ against AutoGPTQ's `fasterquant` outputs (public-gptq-algorithm.safetensors). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { HessianAccumulator, gptqQuantize, quantizeRtn } from "../../src/quant/index.js";
import { dequantize } from "../../src/formats/dequantize.js";
import { ParallelHessian, parallelGptqSteps } from "../../src/backend/cpu/dense.js";
import { cpuGptqBackend } from "../../src/quant/gptq.js";
import type { GptqOptions, GptqResult } from "../../src/quant/index.js";
import { sharedPath, skipUnlessShared } from "../helpers/shared.js";
import { QUALITY_PRESETS } from "../../src/pipeline/presets.js";
import {
  AlgorithmCase,
  AlgorithmFixture,
  loadAlgorithmFixture,
  gram,
  relativeOutputErrorGram,
} from "./data.js";

const FILE = ["fixtures", "public-gptq-algorithm.safetensors"];
const skip = skipUnlessShared(...FILE);

let fixture: AlgorithmFixture | undefined;
let hessian: Float64Array | undefined;
let xtx: Float64Array | undefined;
function load(): { f: AlgorithmFixture; H: Float64Array } {
  if (!fixture || !hessian) {
    fixture = loadAlgorithmFixture(sharedPath(...FILE));
    xtx = gram(fixture.X, fixture.rows, fixture.K);
    // the reference fed X in batches of 128 rows
    const acc = new HessianAccumulator(fixture.K);
    for (let r = 0; r < fixture.rows; r += 128)
      acc.add(fixture.X.subarray(r * fixture.K, (r + 128) * fixture.K), 128);
    hessian = acc.H;
  }
  return { f: fixture, H: hessian };
}

/** GPTQ on a case with extra options, computed once per (case, options) across the tests below. */
const results = new Map<string, GptqResult>();
function quantize(c: AlgorithmCase, extra: Partial<GptqOptions> = {}): GptqResult {
  const key = `${c.name} ${JSON.stringify(extra)}`;
  let r = results.get(key);
  if (!r) {
    const { f, H } = load();
    r = gptqQuantize(f.W, f.N, f.K, H, { ...optionsOf(c), ...extra });
    results.set(key, r);
  }
  return r;
}

function optionsOf(c: AlgorithmCase): GptqOptions {
  return {
    bits: c.bits,
    groupSize: c.group_size,
    sym: c.sym,
    descAct: c.desc_act,
    staticGroups: c.static_groups,
  };
}

/** ||X Q^T - X W^T||^2 / ||X W^T||^2 (through X^T X, computed directly from X) */
function errorOf(f: AlgorithmFixture, Q: Float32Array): number {
  return relativeOutputErrorGram(xtx as Float64Array, f.W, Q, f.N, f.K);
}

test("fixture: every case has identical g_idx and an output error within 1 % of AutoGPTQ's", { skip }, () => {
  const { f } = load();
  assert.equal(f.cases.length, 6);
  for (const c of f.cases) {
    const r = quantize(c);
    assert.deepEqual([...r.layer.gIdx], [...c.gIdx], c.name);
    const ours = errorOf(f, r.Q);
    assert.ok(ours <= c.rel_output_error * 1.01, `${c.name}: ${ours} vs reference ${c.rel_output_error}`);
    // the same weights: most values agree exactly (a few sit on rounding boundaries)
    let same = 0;
    for (let i = 0; i < c.Q.length; i++)
      if (Math.abs(c.Q[i] - r.Q[i]) <= 1e-3 * Math.abs(c.Q[i]) + 1e-6) same++;
    assert.ok(same / c.Q.length > 0.9, `${c.name}: ${same} of ${c.Q.length} weights agree`);
  }
});

test(
  "fixture: the fast preset's GPTQ options are exactly the reference-matching ones above",
  { skip },
  () => {
    const { clip, splitRange, freshGroups, refine } = QUALITY_PRESETS.fast.options;
    for (const c of load().f.cases) {
      const fast = quantize(c, { clip, splitRange, freshGroups, refine });
      const plain = quantize(c);
      assert.deepEqual(fast.layer.codes, plain.layer.codes, c.name);
      assert.deepEqual(fast.layer.scales, plain.layer.scales, c.name);
      assert.deepEqual(fast.layer.zeros, plain.layer.zeros, c.name);
    }
  },
);

test("fixture: our round-to-nearest reproduces the reference's RTN error", { skip }, () => {
  const { f } = load();
  for (const c of f.cases) {
    const e = errorOf(f, dequantize(quantizeRtn(f.W, f.N, f.K, optionsOf(c))));
    assert.ok(Math.abs(e - c.rtn_rel_output_error) < 0.002 * c.rtn_rel_output_error, `${c.name}: ${e}`);
  }
});

test("fixture: GPTQ beats round-to-nearest wherever AutoGPTQ does", { skip }, () => {
  const { f } = load();
  for (const c of f.cases) {
    if (c.rel_output_error >= c.rtn_rel_output_error) continue;
    const ours = errorOf(f, quantize(c).Q);
    assert.ok(ours < c.rtn_rel_output_error, `${c.name}: ${ours} vs RTN ${c.rtn_rel_output_error}`);
  }
});

test(
  "fixture: Hessian-aware clipping beats AutoGPTQ's reference and RTN everywhere, and plain MSE at 4 bits",
  { skip },
  () => {
    const { f } = load();
    for (const c of f.cases) {
      const hessian = quantize(c, { clip: "hessian" });
      assert.deepEqual([...hessian.layer.gIdx], [...c.gIdx], c.name);
      const e = errorOf(f, hessian.Q);
      const msg = `${c.name}: hessian ${e}, reference ${c.rel_output_error}, RTN ${c.rtn_rel_output_error}`;
      assert.ok(e < c.rtn_rel_output_error && e <= c.rel_output_error, msg);
      if (c.bits !== 4) continue;
      const mse = errorOf(f, quantize(c, { mse: true }).Q);
      assert.ok(mse < c.rel_output_error, `${c.name}: mse ${mse} vs reference ${c.rel_output_error}`);
      assert.ok(e < 0.9 * c.rel_output_error && e < 0.9 * mse, `${msg}, mse ${mse}`);
    }
  },
);

test(
  "fixture: GPTQ-loss clipping, fresh group parameters and split ranges each improve on Hessian clipping",
  { skip },
  () => {
    const { f } = load();
    const variants: [string, (c: AlgorithmCase) => boolean, Partial<GptqOptions>][] = [
      ["gptq clip", (c) => c.bits === 4 && !c.desc_act, { clip: "gptq" }],
      [
        "fresh groups",
        (c) => c.group_size > 0 && c.group_size < 128 && !c.static_groups,
        { clip: "hessian", freshGroups: true },
      ],
      ["split range", (c) => !c.sym, { clip: "hessian", splitRange: true }],
    ];
    for (const [name, applies, extra] of variants) {
      for (const c of f.cases.filter(applies)) {
        const hessian = errorOf(f, quantize(c, { clip: "hessian" }).Q);
        const e = errorOf(f, quantize(c, extra).Q);
        assert.ok(e < hessian, `${c.name} ${name}: ${e} vs hessian clip ${hessian}`);
      }
    }
  },
);

test(
  "fixture: refining (least-squares scale refit, then GPTQ again with those scales) lowers the error",
  { skip },
  () => {
    const { f } = load();
    for (const c of f.cases.filter((x) => x.bits === 4)) {
      for (const clip of ["minmax", "hessian"] as const) {
        const extra: Partial<GptqOptions> = clip === "minmax" ? {} : { clip };
        const plain = errorOf(f, quantize(c, extra).Q);
        const refined = quantize(c, { ...extra, refine: 1 });
        assert.deepEqual([...refined.layer.gIdx], [...c.gIdx], c.name);
        const e = errorOf(f, refined.Q);
        assert.ok(e < plain, `${c.name} clip ${clip}: refined ${e} vs ${plain}`);
      }
    }
  },
);

test(
  "fixture: on every core (parallel Hessian, factorisation and lazy updates) GPTQ gives the same layers up to float rounding",
  { skip },
  () => {
    const { f, H } = load();
    const acc = new ParallelHessian(f.K);
    for (let r = 0; r < f.rows; r += 128) acc.add(f.X.subarray(r * f.K, (r + 128) * f.K), 128);
    let diff = 0;
    let max = 0;
    for (let i = 0; i < H.length; i++) {
      diff = Math.max(diff, Math.abs(acc.H[i] - H[i]));
      max = Math.max(max, Math.abs(H[i]));
    }
    assert.ok(diff < 1e-6 * max, `Hessian differs by ${diff / max} of its largest entry`);
    const backend = cpuGptqBackend(parallelGptqSteps());
    for (const c of f.cases) {
      const serial = quantize(c);
      const r = gptqQuantize(f.W, f.N, f.K, acc.H, { ...optionsOf(c), backend });
      assert.deepEqual([...r.layer.gIdx], [...c.gIdx], c.name);
      assert.ok(errorOf(f, r.Q) <= c.rel_output_error * 1.01, c.name);
      let same = 0;
      for (let i = 0; i < r.Q.length; i++)
        if (Math.abs(serial.Q[i] - r.Q[i]) <= 1e-5 * Math.abs(serial.Q[i]) + 1e-7) same++;
      assert.ok(same / r.Q.length > 0.995, `${c.name}: ${same} of ${r.Q.length} weights as on one thread`);
      assert.ok(
        Math.abs(r.loss - serial.loss) <= 1e-3 * serial.loss,
        `${c.name}: loss ${r.loss} vs ${serial.loss}`,
      );
    }
  },
);
