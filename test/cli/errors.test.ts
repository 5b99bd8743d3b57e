// The CLI's error policy (src/cli/errors.ts) on errors made as Node makes them: every operating-system
// error a user can act on is one line naming the path and what to do, exit 1; the rest are bugs, exit 70.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeOsError, reportError } from "../../src/cli/errors.js";
import { GptqError, UsageError } from "../../src/util/errors.js";

/** An error shaped as node:fs throws it. */
function sysError(code: string, syscall: string, path?: string, dest?: string): NodeJS.ErrnoException {
  const e = new Error(`${code}: failed, ${syscall}${path ? ` '${path}'` : ""}`) as NodeJS.ErrnoException & {
    dest?: string;
  };
  Object.assign(e, { code, errno: -1, syscall });
  if (path !== undefined) e.path = path;
  if (dest !== undefined) e.dest = dest;
  return e;
}

const TMP = ".out.tmp-4242-0a1b2c3d";

test("each operating-system error a user can act on: one line, the path as the user named it, what to do", () => {
  const cases: [NodeJS.ErrnoException, RegExp][] = [
    [
      sysError("EROFS", "mkdir", `mnt/${TMP}`),
      /^cannot write mnt\/out: read-only file system \(EROFS\); write somewhere else$/,
    ],
    [
      sysError("EROFS", "access", "mnt/out"),
      /^cannot write mnt\/out: read-only file system \(EROFS\); write somewhere else$/,
    ],
    [
      sysError("EACCES", "access", "mnt/out"),
      /^cannot write mnt\/out: permission denied \(EACCES\); check the permissions of the folders on its path, or write somewhere else$/,
    ],
    [
      sysError("EACCES", "open", "model/config.json"),
      /^cannot open model\/config.json: permission denied \(EACCES\); check its permissions$/,
    ],
    [sysError("EPERM", "unlink", `x/${TMP}/f`), /^cannot write x\/out\/f: operation not permitted \(EPERM\)/],
    [
      sysError("ENOSPC", "write", `d/${TMP}/model.safetensors`),
      /^cannot write d\/out\/model.safetensors: no space left on device \(ENOSPC\); free some space, or write somewhere else$/,
    ],
    [
      sysError("EDQUOT", "copyfile", "in/tokenizer.json", `d/${TMP}/tokenizer.json`),
      /^cannot write d\/out\/tokenizer.json: disk quota exceeded \(EDQUOT\); free some space/,
    ],
    [
      sysError("ENOTEMPTY", "rename", `d/${TMP}`, "d/out"),
      /^cannot write d\/out: already exists and is not empty \(ENOTEMPTY\); another process wrote it while this one ran; run one command per output, or choose another$/,
    ],
    [
      sysError("EEXIST", "rename", `d/${TMP}`, "d/out"),
      /^cannot write d\/out: already exists \(EEXIST\); another process/,
    ],
    [
      sysError("EMFILE", "open", "m/model-00007-of-00009.safetensors"),
      /^cannot open m\/model-00007-of-00009.safetensors: too many open files \(EMFILE\); raise the limit \(ulimit -n\) and run again$/,
    ],
    [sysError("ENFILE", "open", "m/a"), /too many open files in the system \(ENFILE\)/],
    [
      sysError("ENOENT", "rename", `gone/${TMP}`, "gone/out"),
      /^cannot write gone\/out: its folder does not exist \(removed while this command ran\?\) \(ENOENT\)/,
    ],
    [
      sysError("ENOENT", "open", "calib.txt"),
      /^cannot open calib.txt: no such file or folder \(ENOENT\); check the path$/,
    ],
    [sysError("EISDIR", "open", "calib"), /^cannot open calib: is a folder, not a file \(EISDIR\)/],
    [
      sysError("EIO", "read", "m/model.safetensors"),
      /^cannot read m\/model.safetensors: input\/output error \(EIO\)/,
    ],
    [sysError("ENOSPC", "fsync"), /^cannot write: no space left on device \(ENOSPC\)/],
  ];
  for (const [e, want] of cases) {
    const line = describeOsError(e);
    assert.ok(line !== undefined, `${e.code} ${e.syscall}`);
    assert.match(line, want);
    assert.ok(!line.includes("\n") && !line.includes(".tmp-"), line);
  }
});

test("ENOTDIR names the regular file the path runs through", () => {
  const root = mkdtempSync(join(tmpdir(), "gptq-errors-"));
  try {
    writeFileSync(join(root, "notes.txt"), "x");
    const line = describeOsError(sysError("ENOTDIR", "mkdir", join(root, "notes.txt", "out")));
    assert.equal(
      line,
      `cannot write ${join(root, "notes.txt", "out")}: ${join(root, "notes.txt")} is a file, not a folder (ENOTDIR); choose a path that is not under a file`,
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("exit codes: usage 2, user and operating-system errors 1 (stack only with GPTQ_DEBUG=1), bugs 70", () => {
  const os = sysError("EROFS", "mkdir", `mnt/${TMP}`);
  const plain = reportError("quantize", "usage: gptq quantize", os, false);
  assert.equal(plain.code, 1);
  assert.equal(
    plain.text,
    "gptq quantize: error: cannot write mnt/out: read-only file system (EROFS); write somewhere else\n",
  );
  const debug = reportError("quantize", "usage", os, true);
  assert.equal(debug.code, 1);
  assert.ok(debug.text.startsWith(plain.text) && debug.text.includes("\n    at "), debug.text);

  const user = reportError("convert", "usage", new GptqError("first line\nsecond"), false);
  assert.deepEqual(user, { code: 1, text: "gptq convert: error: first line\n" });
  assert.equal(reportError("convert", "usage: x", new UsageError("bad"), false).code, 2);

  // an errno a user cannot act on, or no errno at all, is a bug and shows the stack
  for (const bug of [sysError("EBADF", "write"), new TypeError("x is undefined"), "a string"]) {
    const r = reportError("pad", "usage", bug, false);
    assert.equal(r.code, 70);
    assert.match(r.text, /^gptq: internal error: /);
    if (bug instanceof Error) assert.ok(r.text.includes("\n    at "));
  }
});
