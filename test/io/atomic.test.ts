import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildDirAtomic, removeAbandonedTemporaries, writeFileAtomic } from "../../src/io/atomic.js";

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

test("buildDirAtomic removes the temporary siblings of killed builds beside its output, and only those", async () => {
  const root = mkdtempSync(join(tmpdir(), "gptq-atomic-"));
  try {
    const out = join(root, "out");
    const dead = spawnSync(process.execPath, ["-e", "0"]).pid!; // exited: its pid is free
    const abandoned = join(root, `.out.tmp-${dead}-0badf00d`);
    const running = join(root, `.out.tmp-${process.ppid}-0000beef`); // a live process's build
    const otherOutput = join(root, `.other.tmp-${dead}-0badf00d`); // a killed build of another output
    const notOurs = join(root, `.other.tmp-${dead}-notours`);
    for (const d of [abandoned, running, otherOutput, notOurs]) {
      mkdirSync(d);
      writeFileSync(join(d, "half"), "x");
    }
    writeFileSync(join(root, `.config.json.tmp-${dead}-12345678`), "{"); // a killed file write
    await buildDirAtomic(out, (dir) => writeFileSync(join(dir, "f"), "y"));
    assert.deepEqual(
      readdirSync(root).sort(),
      [`.other.tmp-${dead}-notours`, `.out.tmp-${process.ppid}-0000beef`, "out"].sort(),
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("removeAbandonedTemporaries says what it removed and the bytes it freed", () => {
  const root = mkdtempSync(join(tmpdir(), "gptq-atomic-"));
  try {
    const dead = spawnSync(process.execPath, ["-e", "0"]).pid!;
    mkdirSync(join(root, `.out.tmp-${dead}-0badf00d`, "sub"), { recursive: true });
    writeFileSync(join(root, `.out.tmp-${dead}-0badf00d`, "a"), Buffer.alloc(1000));
    writeFileSync(join(root, `.out.tmp-${dead}-0badf00d`, "sub", "b"), Buffer.alloc(234));
    writeFileSync(join(root, `.f.tmp-${dead}-00000001`), Buffer.alloc(66));
    const r = removeAbandonedTemporaries(root);
    assert.deepEqual(r.removed.sort(), [`.f.tmp-${dead}-00000001`, `.out.tmp-${dead}-0badf00d`].sort());
    assert.equal(r.bytes, 1300);
    assert.deepEqual(readdirSync(root), []);
    assert.deepEqual(removeAbandonedTemporaries(join(root, "absent")), { removed: [], bytes: 0 });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("writeFileAtomic: a write that fails (disk full) leaves nothing, and the error names the file", () => {
  const root = mkdtempSync(join(tmpdir(), "gptq-atomic-"));
  try {
    const path = join(root, "model.safetensors");
    // write(2) errors carry no path; this one is made as Node makes them
    const enospc = Object.assign(new Error("ENOSPC: no space left on device, write"), {
      code: "ENOSPC",
      errno: -28,
      syscall: "write",
    });
    assert.throws(
      () =>
        writeFileAtomic(path, () => {
          throw enospc;
        }),
      (e: NodeJS.ErrnoException) => e === enospc && e.path === path,
    );
    assert.deepEqual(readdirSync(root), []);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("buildDirAtomic: when another process writes the same output meanwhile, its output stays and ours goes", async () => {
  const root = mkdtempSync(join(tmpdir(), "gptq-atomic-"));
  try {
    const out = join(root, "new", "out");
    await assert.rejects(
      buildDirAtomic(out, (dir) => {
        writeFileSync(join(dir, "ours"), "x");
        mkdirSync(out); // the other writer renames its finished build into place first
        writeFileSync(join(out, "theirs"), "y");
      }),
      (e: NodeJS.ErrnoException) => e.code === "ENOTEMPTY" || e.code === "EEXIST",
    );
    assert.deepEqual(readdirSync(join(root, "new")), ["out"], "no temporary folder left");
    assert.deepEqual(readdirSync(out), ["theirs"]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
