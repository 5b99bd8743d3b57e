/**
 * cuSOLVER's dense Cholesky routines (libcusolver.so) through koffi, on the device's stream: fp32 for
 * GPTQ's factor, fp64 for fp-target's least-squares solve.
 */
import { GptqError } from "../../util/errors.js";
import { CudaDevice, DeviceBuffer } from "./device.js";
import { Handle } from "./driver.js";
import { libraryCandidates, loadFirst, toolkitLibDirs } from "./library.js";

const SIGNATURES = [
  "int cusolverDnCreate(_Out_ void **handle)",
  "int cusolverDnSetStream(void *handle, void *stream)",
  "int cusolverDnSpotrf_bufferSize(void *handle, int uplo, int n, uint64_t A, int lda, _Out_ int *lwork)",
  "int cusolverDnSpotrf(void *handle, int uplo, int n, uint64_t A, int lda, uint64_t work, int lwork, uint64_t info)",
  "int cusolverDnSpotri_bufferSize(void *handle, int uplo, int n, uint64_t A, int lda, _Out_ int *lwork)",
  "int cusolverDnSpotri(void *handle, int uplo, int n, uint64_t A, int lda, uint64_t work, int lwork, uint64_t info)",
  "int cusolverDnDpotrf_bufferSize(void *handle, int uplo, int n, uint64_t A, int lda, _Out_ int *lwork)",
  "int cusolverDnDpotrf(void *handle, int uplo, int n, uint64_t A, int lda, uint64_t work, int lwork, uint64_t info)",
  "int cusolverDnDpotrs(void *handle, int uplo, int n, int nrhs, uint64_t A, int lda, uint64_t B, int ldb, uint64_t info)",
] as const;

/** cublasFillMode_t: which triangle (column-major) a routine reads and writes. */
const LOWER = 0;

type Fn = (...args: unknown[]) => unknown;

export class Cusolver {
  private readonly f: Record<string, Fn> = {};
  private readonly handle: Handle;
  private static instance?: Cusolver;

  static get(dev: CudaDevice): Cusolver {
    return (Cusolver.instance ??= new Cusolver(dev));
  }

  private constructor(private readonly dev: CudaDevice) {
    const { lib } = loadFirst(
      "cuSOLVER (libcusolver.so)",
      libraryCandidates("cusolver", [12, 11], toolkitLibDirs()),
      "install the CUDA toolkit or set CUDA_HOME to it",
    );
    for (const sig of SIGNATURES) this.f[/(\w+)\(/.exec(sig)![1]] = lib.func(sig) as Fn;
    const h: unknown[] = [null];
    this.check("cusolverDnCreate", this.f.cusolverDnCreate(h));
    this.handle = h[0];
    this.check("cusolverDnSetStream", this.f.cusolverDnSetStream(this.handle, dev.stream));
  }

  private check(call: string, status: unknown): void {
    if (status !== 0) throw new GptqError(`${call} failed with cuSOLVER status ${String(status)}`);
  }

  /**
   * The upper Cholesky factor U of A^-1 (U^T U = A^-1) for a symmetric positive-definite fp32 K x K matrix,
   * in place, as GPTQ uses it: A = L L^T, A^-1 from L, then A^-1 = L' L'^T. Column-major lower L' read
   * row-major is U; the other triangle holds leftovers. Returns false (and leaves A spoilt) when A is not
   * positive definite to working precision.
   */
  upperCholeskyOfInverse(a: DeviceBuffer, K: number): boolean {
    const lw = [0];
    this.check(
      "cusolverDnSpotrf_bufferSize",
      this.f.cusolverDnSpotrf_bufferSize(this.handle, LOWER, K, a.ptr, K, lw),
    );
    const lw2 = [0];
    this.check(
      "cusolverDnSpotri_bufferSize",
      this.f.cusolverDnSpotri_bufferSize(this.handle, LOWER, K, a.ptr, K, lw2),
    );
    const lwork = Math.max(lw[0], lw2[0], 1);
    const work = this.dev.alloc(lwork * 4);
    const info = this.dev.alloc(4);
    const infoHost = new Int32Array(1);
    try {
      const steps: [string, "cusolverDnSpotrf" | "cusolverDnSpotri"][] = [
        ["factorisation of the Hessian", "cusolverDnSpotrf"],
        ["inverse", "cusolverDnSpotri"],
        ["factorisation of the inverse", "cusolverDnSpotrf"],
      ];
      for (const [, call] of steps) {
        this.check(call, this.f[call](this.handle, LOWER, K, a.ptr, K, work.ptr, lwork, info.ptr));
        this.dev.download(info, infoHost);
        if (infoHost[0] !== 0) return false;
      }
      return true;
    } finally {
      this.dev.free(work);
      this.dev.free(info);
    }
  }

  /**
   * The Cholesky factor of a symmetric positive-definite fp64 K x K matrix in place (lower, column-major:
   * symmetric input reads the same either way); false (and A spoilt) when A is not positive definite.
   */
  choleskyF64(a: DeviceBuffer, K: number): boolean {
    const lw = [0];
    this.check(
      "cusolverDnDpotrf_bufferSize",
      this.f.cusolverDnDpotrf_bufferSize(this.handle, LOWER, K, a.ptr, K, lw),
    );
    const lwork = Math.max(lw[0], 1);
    const work = this.dev.alloc(lwork * 8);
    try {
      const info = this.withInfo("cusolverDnDpotrf", (i) =>
        this.f.cusolverDnDpotrf(this.handle, LOWER, K, a.ptr, K, work.ptr, lwork, i),
      );
      return info === 0;
    } finally {
      this.dev.free(work);
    }
  }

  /** Solves A X = B for X in place of B (fp64, K x nrhs column-major) from A's factor by choleskyF64. */
  solveCholeskyF64(factor: DeviceBuffer, K: number, b: DeviceBuffer, nrhs: number): void {
    const info = this.withInfo("cusolverDnDpotrs", (i) =>
      this.f.cusolverDnDpotrs(this.handle, LOWER, K, nrhs, factor.ptr, K, b.ptr, K, i),
    );
    if (info !== 0) throw new GptqError(`cusolverDnDpotrs: argument ${-info} is invalid`);
  }

  /** Runs `call`, which reports through a device int at the address it is given, and returns that int. */
  private withInfo(name: string, call: (info: number) => unknown): number {
    const info = this.dev.alloc(4);
    try {
      this.check(name, call(info.ptr));
      return this.dev.download(info, new Int32Array(1))[0];
    } finally {
      this.dev.free(info);
    }
  }
}
