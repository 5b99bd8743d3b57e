/** `gptq bench --device cpu`: every kernel and batch timed, ONNX Runtime beside ours when it loads. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { gptq } from "../helpers/cli.js";
import { loadOrt } from "../../src/backend/cpu/ort.js";

test("bench --device cpu --json: a row per kernel, batch and engine", () => {
  const r = gptq(
    "bench",
    "--device",
    "cpu",
    "--shapes",
    "256x96",
    "--batch",
    "1,5",
    "--group",
    "64",
    "--json",
  );
  assert.equal(r.code, 0, r.stderr);
  const rows = JSON.parse(r.stdout) as {
    kernel: string;
    engine: string;
    M: number;
    K: number;
    N: number;
    ms: number;
  }[];
  const engines = loadOrt() ? ["gptq-ts", "onnxruntime"] : ["gptq-ts"];
  assert.equal(rows.length, 3 * 2 * engines.length);
  for (const kernel of ["w4a16", "a8w4", "dense"])
    for (const M of [1, 5])
      for (const engine of engines) {
        const row = rows.find((x) => x.kernel === kernel && x.M === M && x.engine === engine);
        assert.ok(row, `${kernel} M=${M} ${engine}`);
        assert.equal(row.K, 256);
        assert.equal(row.N, 96);
        assert.ok(row.ms > 0 && Number.isFinite(row.ms));
      }
});

test("bench --device cpu prints the machine, the engines and the table", () => {
  const r = gptq("bench", "--device", "cpu", "--shapes", "128x64", "--batch", "2", "--threads", "1");
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split("\n");
  assert.match(lines[0], /^CPU: .*, 1 threads; /);
  assert.match(lines[0], loadOrt() ? /onnxruntime-node \d/ : /ONNX Runtime columns left out/);
  assert.equal(lines.filter((l) => /^\| (w4a16|a8w4|dense) \| 2 x 128 -> 64 \|/.test(l)).length, 3);
});
