import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import {
  SCALE_VARIANTS,
  W4A16_CONFIGS,
  configName,
  instantiations,
  kernelName,
  kernelSource,
  parseConfig,
  sharedBytes,
} from "../../../../src/backend/cuda/w4a16/index.js";

/** A kernel source file (the tests run from dist/, the sources sit in src/). */
const source = (name: string) =>
  readFileSync(fileURLToPath(new URL(`../../../../src/backend/cuda/w4a16/${name}`, import.meta.url)), "utf8");

test("the compiled kernels are generated from the table: one per shape and scale layout, arguments as the row says", () => {
  const seen: string[] = [];
  for (const kind of ["mma", "wgmma"] as const) {
    const file = kernelSource({ kind } as never);
    const macro = kind === "mma" ? "W4A16_MMA" : "W4A16_WGMMA";
    // the source defines the macro and instantiates nothing itself
    assert.match(source(file), new RegExp(`#define ${macro}\\(`));
    assert.doesNotMatch(source(file), new RegExp(`^${macro}\\(`, "m"));
    for (const m of instantiations(kind).matchAll(new RegExp(`^${macro}\\(([^)]*)\\)$`, "gm"))) {
      const args = m[1].split(", ");
      const name = args.pop()!;
      const c = parseConfig(name.replace(/_g(32|64)?$/, ""));
      const groupsPerChunk = Number(args[kind === "mma" ? 4 : 2]);
      const variant = SCALE_VARIANTS.find((v) => v.groupsPerChunk === groupsPerChunk)!;
      assert.equal(name, kernelName(c, variant.name === "g" ? 128 : variant.name === "g64" ? 64 : 32));
      if (kind === "mma") {
        // W, KS, MT, R8, SG, P, AR
        assert.deepEqual(args, [
          String(c.warps),
          String(c.kslices ?? 1),
          String(c.rows === 8 ? 1 : c.rows / 16),
          String(c.rows === 8),
          String(groupsPerChunk),
          String(c.stages),
          String(c.ring ?? 0),
        ]);
      } else {
        // WG, R, SG, P
        assert.deepEqual(args, [
          String(c.warps / 4),
          String(c.rows),
          String(groupsPerChunk),
          String(c.stages),
        ]);
      }
      seen.push(name);
    }
  }
  const expected = W4A16_CONFIGS.flatMap((c) => [128, 64, 32].map((g) => kernelName(c, g)));
  assert.deepEqual([...seen].sort(), [...expected].sort());
  assert.equal(new Set(seen).size, seen.length, "no symbol twice");
});

test("every shape fits a Hopper multiprocessor's shared memory in every scale layout", () => {
  for (const c of W4A16_CONFIGS)
    for (const gs of [128, 64, 32]) assert.ok(sharedBytes(c, gs) <= 227 * 1024, `${configName(c)} g${gs}`);
});
