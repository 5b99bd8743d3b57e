/**
 * Locating the CUDA shared libraries (driver, NVRTC, cuBLAS) and loading them through koffi. The driver
 * comes from the loader path; the toolkit libraries from CUDA_HOME / CUDA_PATH, /usr/local/cuda, then the
 * loader path, newest major version first.
 */
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import koffi from "koffi";
import { GptqError } from "../../util/errors.js";

export type Lib = ReturnType<typeof koffi.load>;

/** Directories that may hold a CUDA toolkit's libraries, in search order. */
export function toolkitLibDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const roots = [env.CUDA_HOME, env.CUDA_PATH, "/usr/local/cuda"].filter((r): r is string => !!r);
  const dirs: string[] = [];
  for (const r of roots) dirs.push(join(r, "lib64"), join(r, "lib"), join(r, "targets/x86_64-linux/lib"));
  for (const d of (env.LD_LIBRARY_PATH ?? "").split(":")) if (d) dirs.push(d);
  dirs.push("/usr/lib/x86_64-linux-gnu", "/usr/lib64");
  return [...new Set(dirs)];
}

/**
 * Candidate file names for `lib<base>.so.<major>` in the given directories, newest major first, then the
 * bare soname for the loader to resolve.
 */
export function libraryCandidates(base: string, majors: number[], dirs: string[]): string[] {
  const out: string[] = [];
  for (const d of dirs) {
    let names: string[] = [];
    try {
      names = readdirSync(d);
    } catch {
      continue;
    }
    const found = names
      .map((n) => ({ n, m: new RegExp(`^lib${base}\\.so\\.(\\d+)$`).exec(n) }))
      .filter((x) => x.m !== null)
      .sort((a, b) => Number(b.m![1]) - Number(a.m![1]));
    for (const f of found) out.push(join(d, f.n));
    if (existsSync(join(d, `lib${base}.so`))) out.push(join(d, `lib${base}.so`));
  }
  for (const m of majors) out.push(`lib${base}.so.${m}`);
  return [...new Set(out)];
}

/** Loads the first candidate that opens; a GptqError naming where we looked when none does. */
export function loadFirst(what: string, candidates: string[], hint: string): { lib: Lib; path: string } {
  const errors: string[] = [];
  for (const path of candidates) {
    try {
      return { lib: koffi.load(path), path };
    } catch (e) {
      errors.push(`${path}: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  throw new GptqError(`${what} not found (tried ${candidates.join(", ")}); ${hint}`);
}
