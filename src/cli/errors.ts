/**
 * The CLI's error policy, in one place: what a failed command prints and the exit code it returns.
 *
 *   UsageError                  the message, then the command's usage                     exit 2
 *   GptqError                   one line                                                  exit 1
 *   operating-system error      one line naming the path, what went wrong and what to do  exit 1
 *     (permissions, a read-only or full disk, a path under a file, another process writing the same
 *     output, too many open files, a folder gone missing; from the error's code, syscall and path)
 *   anything else               a bug: "internal error" and the stack trace               exit 70
 *
 * With GPTQ_DEBUG=1 the stack trace follows the line of exit-1 errors too.
 */
import { statSync } from "node:fs";
import { dirname } from "node:path";
import { untempPath } from "../io/atomic.js";
import { GptqError, UsageError } from "../util/errors.js";

/** Exit codes (sysexits.h's EX_SOFTWARE for bugs). */
export const EXIT_USER = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERNAL = 70;

interface OsError {
  /** what the code means */
  what: string;
  /** what the user can do */
  fix: string;
}

const ELSEWHERE = "write somewhere else";
const OTHER_WRITER =
  "another process wrote it while this one ran; run one command per output, or choose another";

/** The operating-system errors a user can act on. Others (EBADF, EINVAL...) are bugs. */
const OS_ERRORS: Record<string, OsError> = {
  EACCES: { what: "permission denied", fix: `check its permissions, or ${ELSEWHERE}` },
  EPERM: { what: "operation not permitted", fix: `check its permissions, or ${ELSEWHERE}` },
  EROFS: { what: "read-only file system", fix: ELSEWHERE },
  ENOSPC: { what: "no space left on device", fix: `free some space, or ${ELSEWHERE}` },
  EDQUOT: { what: "disk quota exceeded", fix: `free some space, or ${ELSEWHERE}` },
  EFBIG: { what: "file too large for this file system", fix: ELSEWHERE },
  ENOTDIR: { what: "a part of the path is not a folder", fix: "choose a path that is not under a file" },
  EISDIR: { what: "is a folder, not a file", fix: "give a file" },
  EEXIST: { what: "already exists", fix: OTHER_WRITER },
  ENOTEMPTY: { what: "already exists and is not empty", fix: OTHER_WRITER },
  EMFILE: { what: "too many open files", fix: "raise the limit (ulimit -n) and run again" },
  ENFILE: { what: "too many open files in the system", fix: "close other programs and run again" },
  ENOENT: { what: "no such file or folder", fix: "check the path" },
  ENAMETOOLONG: { what: "name too long", fix: "choose a shorter path" },
  ELOOP: { what: "too many levels of symbolic links", fix: "check the links on the path" },
  EIO: { what: "input/output error", fix: "check the disk" },
};

/** System calls that write; an error in any other (stat, read, scandir...) is reported as reading. */
const WRITING = new Set([
  "access", // the up-front check for write permission (io/output.ts)
  "write",
  "writev",
  "mkdir",
  "rename",
  "rmdir",
  "unlink",
  "copyfile",
  "cp",
  "fsync",
  "fdatasync",
  "ftruncate",
  "close",
  "symlink",
  "link",
  "utime",
  "chmod",
]);

/** Node's error for a failed system call; rename and copy name their destination too. */
type SystemError = NodeJS.ErrnoException & { dest?: string };

function isOsError(e: unknown): e is SystemError {
  const err = e as SystemError;
  return e instanceof Error && typeof err.code === "string" && err.code in OS_ERRORS && !!err.syscall;
}

/** Whether the failed call was writing: by its syscall, or an open(2) of one of our temporary files. */
function writing(e: SystemError): boolean {
  if (WRITING.has(e.syscall!)) return true;
  return e.syscall === "open" && !!e.path && untempPath(e.path) !== e.path;
}

/** The nearest of `path` and its parents that exists and is not a folder (what ENOTDIR complains of). */
function fileOnPath(path: string): string | undefined {
  for (let p = path; dirname(p) !== p; p = dirname(p)) {
    try {
      if (!statSync(p).isDirectory()) return p;
    } catch {
      // absent or itself under the file: keep going up
    }
  }
  return undefined;
}

/** One line for an operating-system error a user can act on; undefined for any other error. */
export function describeOsError(e: unknown): string | undefined {
  if (!isOsError(e)) return undefined;
  const code = e.code!;
  const known = OS_ERRORS[code];
  const w = writing(e);
  // a rename or copy fails on its destination when the destination's disk or folder is the problem
  const onDest = e.dest !== undefined && ["EROFS", "ENOSPC", "EDQUOT", "EEXIST", "ENOTEMPTY"].includes(code);
  const raw = onDest ? e.dest : e.path;
  const path = raw === undefined ? undefined : untempPath(raw);
  const verb = w ? "write" : e.syscall === "open" ? "open" : "read";
  const subject = path === undefined ? `cannot ${verb}` : `cannot ${verb} ${path}`;
  let what = known.what;
  let fix = known.fix;
  if (code === "ENOTDIR" && path !== undefined) {
    const file = fileOnPath(path);
    if (file) what = `${file} is a file, not a folder`;
  } else if (code === "ENOENT" && w) {
    what = "its folder does not exist (removed while this command ran?)";
    fix = "check the path and run again";
  } else if ((code === "EACCES" || code === "EPERM") && e.syscall === "access") {
    fix = `check the permissions of the folders on its path, or ${ELSEWHERE}`;
  } else if ((code === "EACCES" || code === "EPERM" || code === "EROFS") && !w) {
    fix = "check its permissions";
  } else if ((code === "EEXIST" || code === "ENOTEMPTY") && !w) {
    fix = "check the path";
  }
  return `${subject}: ${what} (${code}); ${fix}`;
}

export interface ErrorReport {
  /** what goes to stderr, newline-terminated */
  text: string;
  code: number;
}

/**
 * What `gptq <command>` prints for an error thrown by its run, and its exit code. `debug` (GPTQ_DEBUG=1)
 * adds the stack trace to the one-line reports.
 */
export function reportError(
  command: string,
  usage: string,
  e: unknown,
  debug = process.env.GPTQ_DEBUG === "1",
): ErrorReport {
  const stack = (err: unknown) => (debug && err instanceof Error && err.stack ? `${err.stack}\n` : "");
  if (e instanceof UsageError)
    return { text: `gptq ${command}: ${e.message}\n\n${usage.trimEnd()}\n`, code: EXIT_USAGE };
  if (e instanceof GptqError)
    return { text: `gptq ${command}: error: ${e.message.split("\n")[0]}\n${stack(e)}`, code: EXIT_USER };
  const os = describeOsError(e);
  if (os !== undefined) return { text: `gptq ${command}: error: ${os}\n${stack(e)}`, code: EXIT_USER };
  return { text: internalError(e), code: EXIT_INTERNAL };
}

/** A bug: the full stack, always. */
export function internalError(e: unknown): string {
  return `gptq: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`;
}
