// CPU side of `gptq bench`: shape sets, argument errors, and the per-set totals.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BenchResult, SHAPE_SETS, parseShapes, setTotals } from "../../../src/backend/cuda/bench.js";
import { bench } from "../../../src/cli/commands/bench.js";
import { UsageError } from "../../../src/util/errors.js";

test("--shapes takes the Llama-2 sets and KxN", () => {
  const s = parseShapes("llama2-7b,1024x512");
  assert.equal(s.length, 5);
  assert.deepEqual(s[4], { set: "1024x512", K: 1024, N: 512 });
  assert.deepEqual(SHAPE_SETS["llama2-70b"][2], [8192, 57344]);
  assert.throws(() => parseShapes("llama3"), /neither a set/);
});

test("bench refuses bad arguments before touching a GPU", () => {
  assert.throws(() => bench.run(["--group", "100"]), UsageError);
  assert.throws(() => bench.run(["--batch", "0"]), UsageError);
  assert.throws(() => bench.run(["--kernel", "marlin"]), UsageError);
  assert.throws(() => bench.run(["--kernel", "gptq-ts-w4a16:m9"]), /unknown W4A16 configuration/);
});

test("set totals sum the layers of a set and leave KxN rows out", () => {
  const row = (set: string, M: number, cu: number, us: number) => ({
    set,
    K: 1,
    N: 1,
    M,
    config: "c",
    cublasUs: cu,
    oursUs: us,
    oursOverlapUs: 2 * us,
    readUs: us / 2,
    speedup: cu / us,
    weightBytes: 1e6,
    gbps: 0,
    copyShare: 0,
    errOurs: 0,
    errCublas: 0,
  });
  const res: BenchResult = {
    device: "d",
    tuning: { name: "t", fittedOn: "f" },
    copyGBps: 1000,
    launchUs: 1,
    rows: [row("llama2-7b", 1, 10, 5), row("llama2-7b", 1, 30, 5), row("64x64", 1, 1, 1)],
  };
  const lines = setTotals(res);
  assert.equal(lines.length, 3);
  // 2 MB in 10 µs = 200 GB/s = 20 % of 1000 GB/s
  assert.equal(lines[2], "| llama2-7b | 1 | 40.0 | 10.0 | 4.00x | 200 | 20 % | 5.0 | 20.0 | 2.00x |");
});
