/**
 * The least-squares scale refit (quant/refit.ts) on the device: every row's normal equations A = U_g^T H
 * U_g', b = U_g^T H w and w^T H w as float64 GEMMs (one per group, one for the weight) and column sums,
 * then a thread per row solves its G x G system. On the host this is about 2 K^2 N scalar multiply-adds
 * (minutes for a 4096 x 4096 layer); here, milliseconds. Rows go in chunks that keep the systems and their
 * factors within `systemsBytes`.
 */
import { RefitArrays } from "../../../tensor/refit-input.js";
import { Cublas } from "../cublas.js";
import { CudaDevice, DeviceBuffer, Kernel, f64, i32, ptr } from "../device.js";

const THREADS = 256;
/** a warp a block: the solves are latency-bound, so 4096 rows should reach every SM */
const SOLVE_THREADS = 32;
const blocks = (n: number, t = THREADS) => Math.ceil(n / t);
/** the device memory for a chunk's systems and their factors */
const SYSTEMS_BYTES = 512 * 2 ** 20;

function refitKernel(dev: CudaDevice, name: string): Kernel {
  return dev.kernel(import.meta.url, "refit.cu", name);
}

/**
 * Refits r.scales in place against `H` (K x K fp32 on the device, processing order) plus `add` I; returns
 * sum_n (w - q)^T H (w - q) after the refit, as refitScales does on the host.
 */
export function refitOnDevice(
  dev: CudaDevice,
  H: DeviceBuffer,
  add: number,
  r: RefitArrays,
  systemsBytes = SYSTEMS_BYTES,
): number {
  const { w, codes, groupOf, scales, zeros, N, K, G } = r;
  // processing positions in group order, so that each group is one contiguous run of rows
  const order = Int32Array.from({ length: K }, (_, k) => k).sort((a, b) => groupOf[a] - groupOf[b] || a - b);
  const starts = new Int32Array(G + 1);
  for (let k = 0; k < K; k++) starts[groupOf[k] + 1]++;
  for (let g = 0; g < G; g++) starts[g + 1] += starts[g];
  const chunk = Math.max(1, Math.min(N, Math.floor(systemsBytes / (2 * G * G * 8))));

  const owned: DeviceBuffer[] = [];
  const keep = (b: DeviceBuffer) => (owned.push(b), b);
  try {
    const ord = keep(dev.upload(order));
    const h = keep(dev.alloc(K * K * 8));
    dev.launch(refitKernel(dev, "refit_hessian"), [blocks(K), K, 1], THREADS, 0, [
      ptr(H),
      i32(K),
      ptr(ord),
      f64(add),
      ptr(h),
    ]);
    const u = keep(dev.alloc(K * N * 8));
    const wg = keep(dev.alloc(K * N * 8));
    const inputs = [codes, zeros, groupOf, w].map((a) => keep(dev.upload(a)));
    dev.launch(refitKernel(dev, "refit_operands"), [blocks(N), K, 1], THREADS, 0, [
      ...inputs.map((b) => ptr(b)),
      ptr(ord),
      i32(N),
      ptr(u),
      ptr(wg),
    ]);
    const s = keep(dev.upload(scales));
    const v = keep(dev.alloc(K * chunk * 8));
    const A = keep(dev.alloc(G * G * chunk * 8));
    const L = keep(dev.alloc(G * G * chunk * 8));
    const b = keep(dev.alloc(G * chunk * 8));
    const x = keep(dev.alloc(G * chunk * 8));
    const wHw = keep(dev.alloc(chunk * 8));
    const err = keep(dev.alloc(N * 8));
    const groupStarts = keep(dev.upload(starts));
    const whole = keep(dev.upload(Int32Array.of(0, K)));
    const blas = Cublas.get(dev);
    const sumsKernel = refitKernel(dev, "refit_group_sums");
    for (let n0 = 0; n0 < N; n0 += chunk) {
      const rows = Math.min(chunk, N - n0);
      // V = H X[:, n0 : n0 + rows] (K x rows) over X's and H's rows [s, e): row-major V is column-major
      // rows x K, V^T = X^T H
      const product = (X: DeviceBuffer, s0: number, e: number) =>
        blas.gemmEx(
          false,
          true,
          rows,
          K,
          e - s0,
          1,
          X.ptr + (s0 * N + n0) * 8,
          N,
          h.ptr + s0 * K * 8,
          K,
          0,
          v.ptr,
          rows,
          "f64",
          "f64",
        );
      const sums = (
        X: DeviceBuffer,
        at: DeviceBuffer,
        groups: number,
        out: DeviceBuffer,
        stride: number,
        col: number,
      ) =>
        dev.launch(sumsKernel, [blocks(rows), groups, 1], THREADS, 0, [
          ptr(X),
          i32(N),
          i32(n0),
          ptr(v),
          i32(rows),
          ptr(at),
          ptr(out),
          i32(stride),
          i32(col),
        ]);
      dev.fill32(A, 0, G * G * rows * 2); // a group without columns keeps a zero column
      for (let g = 0; g < G; g++) {
        if (starts[g + 1] === starts[g]) continue;
        product(u, starts[g], starts[g + 1]);
        sums(u, groupStarts, G, A, G, g);
      }
      product(wg, 0, K);
      sums(u, groupStarts, G, b, 1, 0);
      sums(wg, whole, 1, wHw, 1, 0);
      dev.launch(refitKernel(dev, "refit_solve"), [blocks(rows, SOLVE_THREADS), 1, 1], SOLVE_THREADS, 0, [
        ptr(A),
        ptr(b),
        ptr(wHw),
        i32(rows),
        i32(G),
        i32(N),
        i32(n0),
        ptr(L),
        ptr(x),
        ptr(s),
        ptr(err.ptr + n0 * 8),
      ]);
    }
    dev.download(s, scales);
    const errors = dev.download(err, new Float64Array(N));
    let total = 0;
    for (const e of errors) total += e;
    return total;
  } finally {
    for (const b of owned) dev.free(b);
  }
}
