// Option parsing as documented: a negative number is an option's value (`--group-size -1`), and a
// negative the option does not allow is a usage error (exit 2) that names the option, never node's
// "argument is ambiguous". Layer numbers in quantize's progress are 0-based, as in the tensor names.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { COMMANDS } from "../../src/cli/commands/index.js";
import { linearLine, stepLabel } from "../../src/cli/commands/quantize.js";
import { writeSyntheticLlama } from "../../src/pipeline/synthetic.js";
import { UsageError } from "../../src/util/errors.js";
import { tmpDir } from "../helpers/checkpoints.js";
import { gptq } from "../helpers/cli.js";

const SPEC = {
  hiddenSize: 32,
  intermediateSize: 64,
  numLayers: 1,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 64,
  seed: 5,
};

/** The command refuses `args` with a usage error whose message is `message`, before touching any file. */
async function usageError(args: string[], message: string | RegExp): Promise<void> {
  const cmd = COMMANDS.find((c) => c.name === args[0])!;
  await assert.rejects(
    async () => cmd.run(args.slice(1)),
    (e: unknown) => {
      assert.ok(e instanceof UsageError, `${args.join(" ")}: ${String(e)}`);
      if (typeof message === "string") assert.equal(e.message, message);
      else assert.match(e.message, message);
      return true;
    },
  );
}

test("--group-size -1 means one group, given as two words or with =", () => {
  const root = tmpDir("opts");
  try {
    const fp = join(root, "fp");
    writeSyntheticLlama(fp, SPEC);
    for (const [i, args] of [["--group-size", "-1"], ["--group-size=-1"]].entries()) {
      const out = join(root, `q${i}`);
      const r = gptq("quantize", fp, "--out", out, "--method", "rtn", ...args, "--json");
      assert.equal(r.code, 0, r.stderr);
      const config = JSON.parse(readFileSync(join(out, "quantize_config.json"), "utf8"));
      assert.equal(config.group_size, -1);
    }
    const c = gptq("check", fp, "--group-size", "-1", "--json");
    assert.equal(c.code, 0, c.stderr);
    assert.equal(JSON.parse(c.stdout).scheme.groupSize, -1);
    const p = gptq("pad", fp, join(root, "p"), "--kernel", "ort", "--group-size", "-1", "--json");
    assert.equal(p.code, 0, p.stderr);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("a negative number an option does not allow is a usage error naming the option (exit 2)", async () => {
  // as the user sees it: exit 2, the message, then the usage, and nothing about "ambiguous" arguments
  for (const args of [
    ["quantize", "m", "--out", "o", "--group-size", "-2"],
    ["check", "m", "--group-size", "-2"],
  ]) {
    const r = gptq(...args);
    assert.equal(r.code, 2, `${args.join(" ")}: exit ${r.code}; stderr: ${r.stderr}`);
    assert.equal(
      r.stderr.split("\n")[0],
      `gptq ${args[0]}: --group-size must be a positive number of input rows, or -1 for one group, got -2`,
    );
    assert.match(r.stderr, new RegExp(`\nusage: gptq ${args[0]} `));
    assert.doesNotMatch(r.stderr, /ambiguous/);
  }
  const group = (v: string) =>
    `--group-size must be a positive number of input rows, or -1 for one group, got ${v}`;
  await usageError(["quantize", "m", "--out", "o", "--group-size", "-2"], group("-2"));
  await usageError(["quantize", "m", "--out", "o", "--group-size=-128"], group("-128"));
  await usageError(["quantize", "m", "--out", "o", "--group-size", "0"], group("0"));
  await usageError(["check", "m", "--group-size", "-2"], group("-2"));
  await usageError(["pad", "a", "b", "--kernel", "ort", "--group-size", "-3"], group("-3"));
  await usageError(["quantize", "m", "--out", "o", "--damp", "-0.5"], "--damp must be at least 0, got -0.5");
  await usageError(["quantize", "m", "--out", "o", "--refine", "-1"], "--refine must be at least 0, got -1");
  await usageError(
    ["quantize", "m", "--out", "o", "--nsamples", "-4"],
    "--nsamples must be at least 1, got -4",
  );
  await usageError(["quantize", "m", "--out", "o", "--seqlen", "-4"], "--seqlen must be at least 2, got -4");
  await usageError(["quantize", "m", "--out", "o", "--bits", "-4"], "--bits must be 2, 3, 4 or 8, got -4");
  await usageError(["check", "m", "--tp", "-2"], "--tp must be at least 1, got -2");
  await usageError(["pad", "a", "b", "--multiple", "-8"], "--multiple must be at least 1, got -8");
  await usageError(["bench", "--batch", "-1"], "--batch values must be positive");
  await usageError(["bench", "--group", "-2"], "--group must be 32, 64, a multiple of 128, or -1");
  await usageError(["bench", "--device", "tpu"], '--device must be cuda or cpu, got "tpu"');
  await usageError(["bench", "--device", "cpu", "--group", "24"], "--group must be a multiple of 16, or -1");
  await usageError(
    ["bench", "--device", "cpu", "--sweep"],
    "--kernel and --sweep time CUDA kernels: drop --device cpu",
  );
  await usageError(["bench", "--device", "cpu", "--threads", "0"], "--threads must be at least 1, got 0");
  await usageError(["quantize", "m", "--out", "o", "--threads", "0"], "--threads must be at least 1, got 0");
  await usageError(["eval", "m", "--tokens", "t", "--threads", "-1"], "--threads must be at least 1, got -1");
  await usageError(
    ["eval", "m", "--tokens", "t", "--engine", "gpu"],
    '--engine must be auto, onnxruntime or gptq-ts, got "gpu"',
  );
  await usageError(
    ["eval", "m", "--tokens", "t", "--device", "cuda", "--engine", "gptq-ts"],
    "--engine chooses a CPU engine: drop it with --device cuda",
  );
  // a dash that is not a number is still an option
  await usageError(["quantize", "m", "--out", "o", "--nosuch"], /^Unknown option '--nosuch'/);
});

test("quantize's progress bar and its per-projection lines number decoder layers from 0", () => {
  const step = stepLabel({
    type: "step",
    layer: 0,
    layers: 5,
    step: "q/k/v",
    done: 0,
    total: 20,
    elapsed: 0,
    eta: NaN,
  });
  assert.equal(step, "layer 0 of 0..4 q/k/v  elapsed 0.0s  left --");
  const line = linearLine({
    name: "model.layers.0.self_attn.q_proj",
    layer: 0,
    linear: "q_proj",
    inFeatures: 64,
    outFeatures: 64,
    relError: 0.0125,
    relErrorOf: "outputs",
    seconds: 0,
  });
  assert.equal(line, "layer  0 q_proj    64->64  rel. output error 1.250e-2");
});
