import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildDirAtomic } from "../../src/io/atomic.js";

test("buildDirAtomic: a failed build leaves nothing, not even the parent folders it created", async () => {
  const root = mkdtempSync(join(tmpdir(), "gptq-atomic-"));
  try {
    const out = join(root, "a", "b", "out");
    await assert.rejects(
      buildDirAtomic(out, (dir) => {
        writeFileSync(join(dir, "half"), "x");
        throw new Error("boom");
      }),
      /boom/,
    );
    assert.deepEqual(readdirSync(root), []);
    const made = await buildDirAtomic(out, (dir) => {
      writeFileSync(join(dir, "f"), "y");
      return 7;
    });
    assert.equal(made, 7);
    assert.deepEqual(readdirSync(out), ["f"]);
    assert.deepEqual(readdirSync(join(root, "a", "b")), ["out"], "no temporary sibling left");
    await assert.rejects(
      buildDirAtomic(out, () => 0),
      /already exists and is not empty/,
    );
    assert.ok(existsSync(join(out, "f")));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("buildDirAtomic removes the temporary siblings of killed builds, and only those", async () => {
  const root = mkdtempSync(join(tmpdir(), "gptq-atomic-"));
  try {
    const out = join(root, "out");
    const dead = spawnSync(process.execPath, ["-e", "0"]).pid!; // exited: its pid is free
    const abandoned = join(root, `.out.tmp-${dead}-0badf00d`);
    const running = join(root, `.out.tmp-${process.ppid}-0000beef`); // a live process's build
    const unrelated = join(root, `.other.tmp-${dead}-0badf00d`);
    for (const d of [abandoned, running, unrelated]) {
      mkdirSync(d);
      writeFileSync(join(d, "half"), "x");
    }
    await buildDirAtomic(out, (dir) => writeFileSync(join(dir, "f"), "y"));
    assert.deepEqual(
      readdirSync(root).sort(),
      [".other.tmp-" + dead + "-0badf00d", `.out.tmp-${process.ppid}-0000beef`, "out"].sort(),
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
