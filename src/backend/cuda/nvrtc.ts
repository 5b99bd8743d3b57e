/**
 * NVRTC: CUDA C++ -> cubin for the device's own architecture, with an on-disk cache keyed by the source
 * (including its headers), the options, and the NVRTC and driver versions, so a second run loads the
 * binary without compiling.
 */
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { GptqError } from "../../util/errors.js";
import { Lib, libraryCandidates, loadFirst, toolkitLibDirs } from "./library.js";

const SIGNATURES = [
  "int nvrtcVersion(_Out_ int *major, _Out_ int *minor)",
  "const char *nvrtcGetErrorString(int result)",
  "int nvrtcCreateProgram(_Out_ void **prog, const char *src, const char *name, int numHeaders, void *headers, void *includeNames)",
  "int nvrtcDestroyProgram(_Inout_ void **prog)",
  "int nvrtcCompileProgram(void *prog, int numOptions, const char **options)",
  "int nvrtcGetProgramLogSize(void *prog, _Out_ size_t *size)",
  "int nvrtcGetProgramLog(void *prog, _Out_ uint8_t *log)",
  "int nvrtcGetCUBINSize(void *prog, _Out_ size_t *size)",
  "int nvrtcGetCUBIN(void *prog, _Out_ uint8_t *cubin)",
] as const;

type Fn = (...args: unknown[]) => unknown;
interface Nvrtc {
  path: string;
  version: string;
  f: Record<string, Fn>;
}

let cached: Nvrtc | undefined;

function nvrtc(): Nvrtc {
  if (cached) return cached;
  const { lib, path } = loadFirst(
    "NVRTC (libnvrtc.so)",
    libraryCandidates("nvrtc", [13, 12], toolkitLibDirs()),
    "install the CUDA toolkit or set CUDA_HOME to it",
  );
  const f = bindAll(lib);
  const maj = [0];
  const min = [0];
  f.nvrtcVersion(maj, min);
  cached = { path, version: `${maj[0]}.${min[0]}`, f };
  return cached;
}

function bindAll(lib: Lib): Record<string, Fn> {
  const f: Record<string, Fn> = {};
  for (const sig of SIGNATURES) f[/(\w+)\(/.exec(sig)![1]] = lib.func(sig) as Fn;
  return f;
}

function check(n: Nvrtc, call: string, code: unknown, log?: string): void {
  if (code === 0) return;
  const text = String(n.f.nvrtcGetErrorString(code));
  throw new GptqError(`${call} failed: ${text}${log ? `\n${log}` : ""}`);
}

/** Where every kernel source also finds its headers: the device helpers all kernel families share. */
export const COMMON_INCLUDE_DIR = fileURLToPath(new URL("./common/", import.meta.url));

/** A kernel source: a .cu file, and text appended to it (the `extern "C"` kernels a table generates). */
export interface KernelSource {
  file: string;
  generated?: string;
}

/**
 * The CUDA C++ source (with its generated part) and every .cuh header beside it or in the common folder,
 * which `#include "x.cuh"` may pull in.
 */
export function readSource(src: KernelSource): { source: string; headerText: string; includeDirs: string[] } {
  const includeDirs = [...new Set([dirname(src.file), COMMON_INCLUDE_DIR.replace(/\/$/, "")])];
  const headers = includeDirs.flatMap((dir) =>
    readdirSync(dir)
      .filter((n) => n.endsWith(".cuh"))
      .sort()
      .map((n) => `//${n}\n${readFileSync(join(dir, n), "utf8")}`),
  );
  const source = readFileSync(src.file, "utf8") + (src.generated ? `\n${src.generated}` : "");
  return { source, headerText: headers.join("\n"), includeDirs };
}

export function cacheDir(): string {
  return (
    process.env.GPTQ_CUDA_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "gptq-ts")
  );
}

/** The cache key: changes when the code, the options, or either compiler/driver version changes. */
export function cacheKey(parts: string[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p).update("\0");
  return h.digest("hex").slice(0, 32);
}

export interface CompileResult {
  cubin: Uint8Array;
  cached: boolean;
  ms: number;
}

/**
 * Compiles a source for `arch` (e.g. "sm_90a") or returns the cached cubin. `driverVersion` joins the key
 * so a driver update never loads a stale binary.
 */
export function compile(
  src: KernelSource | string,
  arch: string,
  driverVersion: number,
  extra: string[] = [],
): CompileResult {
  const t0 = performance.now();
  const { file } = typeof src === "string" ? { file: src } : src;
  const { source, headerText, includeDirs } = readSource(typeof src === "string" ? { file: src } : src);
  const options = [`--gpu-architecture=${arch}`, "-std=c++17", "--use_fast_math", "-lineinfo", ...extra];
  const n = nvrtc();
  const key = cacheKey([source, headerText, options.join(" "), n.version, String(driverVersion)]);
  const path = join(cacheDir(), `${key}.cubin`);
  try {
    return { cubin: new Uint8Array(readFileSync(path)), cached: true, ms: performance.now() - t0 };
  } catch {
    /* not cached yet */
  }
  const prog: unknown[] = [null];
  check(n, "nvrtcCreateProgram", n.f.nvrtcCreateProgram(prog, source, file, 0, null, null));
  try {
    const opts = [...options, ...includeDirs.map((d) => `-I${d}`)];
    const rc = n.f.nvrtcCompileProgram(prog[0], opts.length, opts);
    if (rc !== 0) {
      const size = [0];
      n.f.nvrtcGetProgramLogSize(prog[0], size);
      const buf = new Uint8Array(Number(size[0]));
      n.f.nvrtcGetProgramLog(prog[0], buf);
      check(n, `nvrtcCompileProgram(${file})`, rc, Buffer.from(buf).toString("utf8").replace(/\0+$/, ""));
    }
    const size = [0];
    check(n, "nvrtcGetCUBINSize", n.f.nvrtcGetCUBINSize(prog[0], size));
    const cubin = new Uint8Array(Number(size[0]));
    check(n, "nvrtcGetCUBIN", n.f.nvrtcGetCUBIN(prog[0], cubin));
    try {
      mkdirSync(cacheDir(), { recursive: true });
      const tmp = `${path}.${process.pid}.tmp`;
      writeFileSync(tmp, cubin);
      renameSync(tmp, path);
    } catch {
      /* an unwritable cache only costs a recompile next time */
    }
    return { cubin, cached: false, ms: performance.now() - t0 };
  } finally {
    n.f.nvrtcDestroyProgram(prog);
  }
}

export function nvrtcVersion(): string {
  return nvrtc().version;
}
