/**
 * Checks on an output made before any work, so a command that cannot write its result refuses in a
 * second instead of after hours: the output is absent or an empty folder, the folder it goes in is (or
 * will be created under) a writable folder and not under a regular file, and the bytes it will write
 * fit the free space there.
 */
import { Stats, accessSync, constants, readdirSync, statSync, statfsSync } from "node:fs";
import { dirname } from "node:path";
import { DTYPE_BYTES, DType } from "../tensor/dtype.js";
import { numel } from "../tensor/tensor.js";
import { GptqError } from "../util/errors.js";

/** "93.2 MB", "512 kB", "17 bytes" (powers of 1000, as disk sizes are sold). */
export function formatBytes(n: number): string {
  if (n < 1e3) return `${n} byte${n === 1 ? "" : "s"}`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = n / 1e3;
  let u = 0;
  while (v >= 1e3 && u < units.length - 1) {
    v /= 1e3;
    u++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

/**
 * Bytes that safetensors files (and their index) holding these tensors take: the data, plus a generous
 * allowance for each tensor's header and index entries.
 */
export function tensorFileBytes(tensors: readonly { name: string; dtype: DType; shape: number[] }[]): number {
  let total = 0;
  for (const t of tensors) total += numel(t.shape) * DTYPE_BYTES[t.dtype] + 2 * t.name.length + 256;
  return total;
}

function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw e;
  }
}

/** The nearest of `path` and its parents that exists, with its stats. */
export function existingAncestor(path: string): { path: string; stats: Stats } {
  for (let p = path; ; p = dirname(p)) {
    const stats = statOrUndefined(p);
    if (stats) return { path: p, stats };
    if (dirname(p) === p) throw new GptqError(`no part of ${path} exists`);
  }
}

/** Bytes an unprivileged process may still write in the file system holding `dir`. */
export function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}

/** Refuses when `bytes` will not fit the free space of the file system holding `dir` (which exists). */
export function checkFreeSpace(dir: string, bytes: number, what: string): void {
  const free = freeBytes(dir);
  if (bytes > free)
    throw new GptqError(
      `not enough space for ${what}: it needs about ${formatBytes(bytes)}, ${formatBytes(free)} are free in ${dir}; free some space or write somewhere else`,
    );
}

/**
 * Refuses `dir` as a place to create `what` in: it must be a folder the process may write to. The
 * access(2) error (EACCES; EROFS for a read-only file system) is thrown as the system gave it, with
 * `path` set to `what`, the path the user named.
 */
function checkWritable(dir: string, stats: Stats, what: string): void {
  if (!stats.isDirectory())
    throw new GptqError(
      `cannot write ${what}: ${dir} is a file, not a folder (ENOTDIR); choose a path that is not under a file`,
    );
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (e) {
    (e as NodeJS.ErrnoException).path = what;
    throw e;
  }
}

/**
 * Checks, before any work, that a new output folder `out` can be written: it is absent or an empty
 * folder, the folder it goes in exists or can be created (no part of the path is a regular file) and
 * is writable, and, given `bytes` (an estimate of what will be written), that they fit the free space.
 */
export function checkOutputDir(out: string, bytes?: number): void {
  const own = statOrUndefined(out);
  if (own && !own.isDirectory())
    throw new GptqError(`output ${out} is a file; choose a new folder (absent or empty)`);
  if (own && readdirSync(out).length > 0)
    throw new GptqError(`output ${out} already exists and is not empty; choose another path`);
  const parent = existingAncestor(dirname(out));
  checkWritable(parent.path, parent.stats, out);
  if (bytes !== undefined) checkFreeSpace(parent.path, bytes, out);
}

/**
 * Checks, before any work, that files can be replaced inside the existing folder `dir` (atomically:
 * each written beside its old version, then renamed), and that `bytes` fit its free space.
 */
export function checkWritableDir(dir: string, bytes?: number): void {
  const stats = statOrUndefined(dir);
  if (!stats) throw new GptqError(`${dir} does not exist`);
  checkWritable(dir, stats, dir);
  if (bytes !== undefined) checkFreeSpace(dir, bytes, dir);
}
