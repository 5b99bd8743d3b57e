import {
  closeSync,
  fsyncSync,
  lstatSync,
  openSync,
  writeSync,
  renameSync,
  rmSync,
  rmdirSync,
  existsSync,
  mkdirSync,
  readdirSync,
} from "node:fs";
import { GptqError } from "../util/errors.js";
import { dirname, basename, join, resolve } from "node:path";
import { randomBytes } from "node:crypto";

/** `.<name>.tmp-<pid>-<8 hex>`: the name tempSibling gives, read back (the name it stands for, the pid). */
const TEMP_NAME = /^\.(.+)\.tmp-(\d+)-[0-9a-f]{8}$/;

/** A sibling temporary path, so the final rename stays on one file system. */
export function tempSibling(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
}

/** The name a temporary sibling stands for and the process that made it; undefined for other names. */
export function parseTempName(name: string): { target: string; pid: number } | undefined {
  const m = TEMP_NAME.exec(name);
  return m ? { target: m[1], pid: Number(m[2]) } : undefined;
}

/** A path with every temporary component (`.out.tmp-123-0a1b2c3d`) read as the name it stands for (`out`). */
export function untempPath(path: string): string {
  return path
    .split(/([/\\])/)
    .map((part) => parseTempName(part)?.target ?? part)
    .join("");
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // alive, owned by someone else
  }
}

/** Bytes of the files under `path` (a file: its size; links are not followed). */
export function treeBytes(path: string): number {
  const s = lstatSync(path);
  if (!s.isDirectory()) return s.size;
  let total = 0;
  for (const name of readdirSync(path)) total += treeBytes(join(path, name));
  return total;
}

export interface Leftovers {
  /** names removed from the folder */
  removed: string[];
  /** bytes they held */
  bytes: number;
}

/**
 * Temporary siblings in `dir` (files or folders named as tempSibling names them) left by a process that
 * was killed mid-write (a signal gives synchronous writers no chance to clean up): removed once their
 * process is gone, whatever output they were for, so they never pile up. A live process's (ours
 * included) are kept; one that cannot be removed is left as it is.
 */
export function removeAbandonedTemporaries(dir: string): Leftovers {
  const out: Leftovers = { removed: [], bytes: 0 };
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return out; // absent or unreadable: nothing of ours can be there
  }
  for (const name of names) {
    const t = parseTempName(name);
    if (!t || t.pid === process.pid || processAlive(t.pid)) continue;
    const p = join(dir, name);
    try {
      const bytes = treeBytes(p);
      rmSync(p, { recursive: true, force: true });
      out.removed.push(name);
      out.bytes += bytes;
    } catch {
      // another user's, or removed meanwhile by another run: not ours to fail on
    }
  }
  return out;
}

/** Adds `path` to an operating-system error that lacks one (write(2), fsync(2) name no file). */
function withPath(e: unknown, path: string): unknown {
  const err = e as NodeJS.ErrnoException;
  if (err instanceof Error && typeof err.code === "string" && err.path === undefined) err.path = path;
  return e;
}

/**
 * Writes a file through a temporary sibling and renames it into place: a reader never sees a
 * half-written file, and a failure leaves nothing behind. An operating-system error carries `path`.
 */
export function writeFileAtomic(path: string, write: (fd: number) => void): void {
  const tmp = tempSibling(path);
  const fd = openSync(tmp, "w");
  try {
    write(fd);
    fsyncSync(fd);
  } catch (e) {
    try {
      closeSync(fd);
    } catch {
      // the write's error is the one to report
    }
    rmSync(tmp, { force: true });
    throw withPath(e, path);
  }
  try {
    closeSync(fd); // a network file system may report a failed write only here
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw withPath(e, path);
  }
}

export function writeTextAtomic(path: string, text: string): void {
  writeFileAtomic(path, (fd) => {
    const b = Buffer.from(text);
    let done = 0;
    while (done < b.length) done += writeSync(fd, b, done, b.length - done);
  });
}

/** Removes `dir` and its parents up to and including `top` while they are empty. */
function removeEmptyFolders(dir: string, top: string): void {
  const stop = resolve(top);
  for (let d = resolve(dir); d.length >= stop.length; d = dirname(d)) {
    try {
      rmdirSync(d);
    } catch {
      return; // not empty: another process's files are there now
    }
    if (d === stop) return;
  }
}

/**
 * Builds an output directory in a temporary sibling and renames it into place when `build` succeeds;
 * on failure the temporary directory is removed and `out` is untouched. `out` must not exist yet
 * (or be an empty directory), so no input is ever overwritten; if another process creates it meanwhile,
 * the rename fails (ENOTEMPTY or EEXIST) and that process's output stays as it is.
 */
export async function buildDirAtomic<T>(out: string, build: (tmpDir: string) => Promise<T> | T): Promise<T> {
  if (existsSync(out) && readdirSync(out).length > 0)
    throw new GptqError(`output ${out} already exists and is not empty; choose another path`);
  // the first parent folder created here, if any, goes too when the build fails (if still empty)
  const createdParent = mkdirSync(dirname(out), { recursive: true });
  removeAbandonedTemporaries(dirname(out));
  const tmp = tempSibling(out);
  mkdirSync(tmp);
  try {
    const result = await build(tmp);
    if (existsSync(out)) rmdirSync(out); // empty (checked above); rmdir refuses anything else
    renameSync(tmp, out);
    return result;
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    if (createdParent) removeEmptyFolders(dirname(out), createdParent);
    throw e;
  }
}
