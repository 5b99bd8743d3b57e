import {
  closeSync,
  fsyncSync,
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
import { dirname, basename, join } from "node:path";
import { randomBytes } from "node:crypto";

/** A sibling temporary path, so the final rename stays on one file system. */
export function tempSibling(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // alive, owned by someone else
  }
}

/**
 * Temporary siblings of `path` left by a process that was killed mid-build (a signal gives synchronous
 * writers no chance to clean up): removed once their process is gone, so they never pile up.
 */
export function removeAbandonedSiblings(path: string): string[] {
  const dir = dirname(path);
  const prefix = `.${basename(path)}.tmp-`;
  const removed: string[] = [];
  if (!existsSync(dir)) return removed;
  for (const name of readdirSync(dir)) {
    if (!name.startsWith(prefix)) continue;
    const m = /^(\d+)-[0-9a-f]{8}$/.exec(name.slice(prefix.length));
    if (!m || Number(m[1]) === process.pid || processAlive(Number(m[1]))) continue;
    rmSync(join(dir, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

/**
 * Writes a file through a temporary sibling and renames it into place: a reader never sees a
 * half-written file, and a failure leaves nothing behind.
 */
export function writeFileAtomic(path: string, write: (fd: number) => void): void {
  const tmp = tempSibling(path);
  const fd = openSync(tmp, "w");
  try {
    write(fd);
    fsyncSync(fd);
    closeSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  renameSync(tmp, path);
}

export function writeTextAtomic(path: string, text: string): void {
  writeFileAtomic(path, (fd) => {
    const b = Buffer.from(text);
    let done = 0;
    while (done < b.length) done += writeSync(fd, b, done, b.length - done);
  });
}

/**
 * Builds an output directory in a temporary sibling and renames it into place when `build` succeeds;
 * on failure the temporary directory is removed and `out` is untouched. `out` must not exist yet
 * (or be an empty directory), so no input is ever overwritten.
 */
export async function buildDirAtomic<T>(out: string, build: (tmpDir: string) => Promise<T> | T): Promise<T> {
  if (existsSync(out) && readdirSync(out).length > 0)
    throw new GptqError(`output ${out} already exists and is not empty; choose another path`);
  // the first parent folder created here, if any, goes too when the build fails
  const createdParent = mkdirSync(dirname(out), { recursive: true });
  removeAbandonedSiblings(out);
  const tmp = tempSibling(out);
  mkdirSync(tmp);
  try {
    const result = await build(tmp);
    if (existsSync(out)) rmdirSync(out); // empty (checked above); rmdir refuses anything else
    renameSync(tmp, out);
    return result;
  } catch (e) {
    rmSync(createdParent ?? tmp, { recursive: true, force: true });
    throw e;
  }
}
