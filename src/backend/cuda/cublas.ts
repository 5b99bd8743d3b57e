/** cuBLAS (libcublas.so) through koffi: the fp16 GEMM we measure our kernels against, fp32 and fp64 GEMMs for GPTQ. */
import { GptqError } from "../../util/errors.js";
import { CudaDevice, DeviceBuffer } from "./device.js";
import { Handle } from "./driver.js";
import { libraryCandidates, loadFirst, toolkitLibDirs } from "./library.js";

const SIGNATURES = [
  "int cublasCreate_v2(_Out_ void **handle)",
  "int cublasSetStream_v2(void *handle, void *stream)",
  "int cublasSetWorkspace_v2(void *handle, uint64_t workspace, size_t bytes)",
  "const char *cublasGetStatusString(int status)",
  "int cublasGemmEx(void *handle, int transa, int transb, int m, int n, int k, const void *alpha, uint64_t A, int Atype, int lda, uint64_t B, int Btype, int ldb, const void *beta, uint64_t C, int Ctype, int ldc, int computeType, int algo)",
  "int cublasGemmStridedBatchedEx(void *handle, int transa, int transb, int m, int n, int k, const float *alpha, uint64_t A, int Atype, int lda, int64_t strideA, uint64_t B, int Btype, int ldb, int64_t strideB, const float *beta, uint64_t C, int Ctype, int ldc, int64_t strideC, int batchCount, int computeType, int algo)",
] as const;

const CUDA_R_32F = 0;
const CUDA_R_64F = 1;
const CUDA_R_16F = 2;
const CUBLAS_COMPUTE_32F = 68;
const CUBLAS_COMPUTE_64F = 70;
const CUBLAS_GEMM_DEFAULT = -1;
const OP_N = 0;
const OP_T = 1;

type Fn = (...args: unknown[]) => unknown;

/**
 * One strided batched GEMM in cuBLAS's column-major terms: for b < batch,
 * C_b[m, n] = alpha op(A_b)[m, k] op(B_b)[k, n], X_b = X + b strideX (device addresses, leading dimensions
 * and strides in elements). A and B are fp16, C fp16 or fp32; fp32 accumulation.
 */
export interface BatchedGemm {
  transA: boolean;
  transB: boolean;
  m: number;
  n: number;
  k: number;
  alpha: number;
  a: number;
  lda: number;
  strideA: number;
  b: number;
  ldb: number;
  strideB: number;
  c: number;
  ldc: number;
  strideC: number;
  cType: "f16" | "f32";
  batch: number;
}

export class Cublas {
  private readonly f: Record<string, Fn> = {};
  private readonly handle: Handle;
  private readonly workspace: DeviceBuffer;
  private readonly one = new Float32Array([1]);
  private readonly zero = new Float32Array([0]);
  private static instance?: Cublas;

  static get(dev: CudaDevice): Cublas {
    return (Cublas.instance ??= new Cublas(dev));
  }

  private constructor(dev: CudaDevice) {
    const { lib } = loadFirst(
      "cuBLAS (libcublas.so)",
      libraryCandidates("cublas", [13, 12], toolkitLibDirs()),
      "install the CUDA toolkit or set CUDA_HOME to it",
    );
    for (const sig of SIGNATURES) this.f[/(\w+)\(/.exec(sig)![1]] = lib.func(sig) as Fn;
    const h: unknown[] = [null];
    this.check("cublasCreate_v2", this.f.cublasCreate_v2(h));
    this.handle = h[0];
    this.check("cublasSetStream_v2", this.f.cublasSetStream_v2(this.handle, dev.stream));
    // a fixed workspace keeps cuBLAS from allocating inside graph capture
    this.workspace = dev.alloc(32 << 20);
    this.check(
      "cublasSetWorkspace_v2",
      this.f.cublasSetWorkspace_v2(this.handle, this.workspace.ptr, this.workspace.bytes),
    );
  }

  private check(call: string, status: unknown): void {
    if (status !== 0) throw new GptqError(`${call} failed: ${String(this.f.cublasGetStatusString(status))}`);
  }

  /**
   * Row-major C[M, N] = A[M, K] · W[N, K]^T in fp16 with fp32 accumulation (torch's F.linear). In cuBLAS's
   * column-major terms that is C^T = W · A^T with W read transposed.
   */
  linear(a: DeviceBuffer, w: DeviceBuffer, c: DeviceBuffer, M: number, N: number, K: number): void {
    this.gemm(OP_T, w.ptr, K, a.ptr, c.ptr, M, N, K);
  }

  /**
   * GEMM in cuBLAS's column-major terms with A and B of type `ab` and C of type `cType`, fp32 accumulation
   * (on the tensor cores for fp16 inputs; fp32 inputs get fp32 arithmetic throughout, no TF32), or fp64
   * throughout when all three are fp64: C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C, leading
   * dimensions in elements.
   */
  gemmEx(
    transA: boolean,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    alpha: number,
    a: number,
    lda: number,
    b: number,
    ldb: number,
    beta: number,
    c: number,
    ldc: number,
    ab: "f16" | "f32" | "f64",
    cType: "f16" | "f32" | "f64",
  ): void {
    const f64 = ab === "f64";
    if (f64 !== (cType === "f64")) throw new GptqError(`cublasGemmEx: ${ab} inputs with a ${cType} output`);
    const type = (t: "f16" | "f32" | "f64") =>
      t === "f16" ? CUDA_R_16F : t === "f32" ? CUDA_R_32F : CUDA_R_64F;
    const scalar = (v: number) => (f64 ? new Float64Array([v]) : new Float32Array([v]));
    this.check(
      "cublasGemmEx",
      this.f.cublasGemmEx(
        this.handle,
        transA ? OP_T : OP_N,
        transB ? OP_T : OP_N,
        m,
        n,
        k,
        scalar(alpha),
        a,
        type(ab),
        lda,
        b,
        type(ab),
        ldb,
        scalar(beta),
        c,
        type(cType),
        ldc,
        f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT,
      ),
    );
  }

  /** fp16 inputs, fp32 accumulation: see BatchedGemm. */
  gemmStridedBatched(g: BatchedGemm): void {
    this.check(
      "cublasGemmStridedBatchedEx",
      this.f.cublasGemmStridedBatchedEx(
        this.handle,
        g.transA ? OP_T : OP_N,
        g.transB ? OP_T : OP_N,
        g.m,
        g.n,
        g.k,
        new Float32Array([g.alpha]),
        g.a,
        CUDA_R_16F,
        g.lda,
        g.strideA,
        g.b,
        CUDA_R_16F,
        g.ldb,
        g.strideB,
        this.zero,
        g.c,
        g.cType === "f16" ? CUDA_R_16F : CUDA_R_32F,
        g.ldc,
        g.strideC,
        g.batch,
        CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT,
      ),
    );
  }

  /** Row-major C[M, N] = A[M, K] · B[K, N] (B in the `qweight` orientation). */
  matmul(a: DeviceBuffer, b: DeviceBuffer, c: DeviceBuffer, M: number, N: number, K: number): void {
    this.gemm(OP_N, b.ptr, N, a.ptr, c.ptr, M, N, K);
  }

  private gemm(
    opW: number,
    w: number,
    ldw: number,
    a: number,
    c: number,
    M: number,
    N: number,
    K: number,
  ): void {
    this.check(
      "cublasGemmEx",
      this.f.cublasGemmEx(
        this.handle,
        opW,
        OP_N,
        N,
        M,
        K,
        this.one,
        w,
        CUDA_R_16F,
        ldw,
        a,
        CUDA_R_16F,
        K,
        this.zero,
        c,
        CUDA_R_16F,
        N,
        CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT,
      ),
    );
  }
}
