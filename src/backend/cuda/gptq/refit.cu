// The least-squares scale refit (quant/refit.ts) on the device, in float64 as the host computes it. Rows
// of the operands are processing positions taken in group order (`order`), so every group is one
// contiguous run [starts[g], starts[g + 1]) and H[:, group] U[group, :] is one GEMM (cuBLAS) per group.
// The per-row systems are kept with the output row fastest (A[g, h, n]), so the solve, a thread per row,
// reads them coalesced.
#include "common.cuh"

// out[a, b] = H[order[a], order[b]] + (a == b ? add : 0), fp32 in, fp64 out; grid (ceil(K / 256), K)
extern "C" __global__ void refit_hessian(const float* __restrict__ H, int K, const int* __restrict__ order, double add,
                                         double* __restrict__ out) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x, a = blockIdx.y;
  if (b < K) out[(size_t)a * K + b] = (double)H[(size_t)order[a] * K + order[b]] + (a == b ? add : 0.0);
}

// u[a, n] = codes[k, n] - zeros[groupOf[k], n] and wg[a, n] = w[k, n], k = order[a] (K x N);
// grid (ceil(N / 256), K)
extern "C" __global__ void refit_operands(const unsigned char* __restrict__ codes, const float* __restrict__ zeros,
                                          const int* __restrict__ groupOf, const float* __restrict__ w,
                                          const int* __restrict__ order, int N, double* __restrict__ u,
                                          double* __restrict__ wg) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x, a = blockIdx.y;
  if (n >= N) return;
  const int k = order[a];
  const size_t from = (size_t)k * N + n, to = (size_t)a * N + n;
  u[to] = (double)codes[from] - (double)zeros[(size_t)groupOf[k] * N + n];
  wg[to] = (double)w[from];
}

// out[(g * stride + col) * rows + r] = sum over the rows k of group g of X[k, n0 + r] V[k, r]: X is K x N,
// V (a GEMM's result) K x rows; grid (ceil(rows / 256), groups)
extern "C" __global__ void refit_group_sums(const double* __restrict__ X, int N, int n0, const double* __restrict__ V,
                                            int rows, const int* __restrict__ starts, double* __restrict__ out,
                                            int stride, int col) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x, g = blockIdx.y;
  if (r >= rows) return;
  double s = 0.0;
  for (int k = starts[g]; k < starts[g + 1]; k++) s += X[(size_t)k * N + n0 + r] * V[(size_t)k * rows + r];
  out[((size_t)g * stride + col) * rows + r] = s;
}

namespace {
// (w - q)^T H (w - q) = s^T A s - 2 b^T s + w^T H w for one row's scales s (strided by `step`)
template <typename T>
__device__ double objective(const double* A, const double* b, double wHw, const T* s, size_t step, int G, int rows,
                            int r) {
  double quad = 0.0, lin = 0.0;
  for (int g = 0; g < G; g++) {
    double t = 0.0;
    for (int h = 0; h < G; h++) t += A[((size_t)g * G + h) * rows + r] * (double)s[h * step];
    quad += (double)s[g * step] * t;
    lin += b[(size_t)g * rows + r] * (double)s[g * step];
  }
  return quad - 2.0 * lin + wHw;
}
}  // namespace

// One thread per output row n = n0 + r: A (G x G x rows) s = b (G x rows) with a small ridge towards the
// current scales (G x N fp32, in/out), Cholesky in the scratch L (G x G x rows); the fp16-rounded solution
// replaces the row's scales where it lowers the row's error. err[r] = the row's error after.
// grid ceil(rows / blockDim)
extern "C" __global__ void refit_solve(const double* __restrict__ A, const double* __restrict__ b,
                                       const double* __restrict__ wHw, int rows, int G, int N, int n0,
                                       double* __restrict__ L, double* __restrict__ x, float* __restrict__ scales,
                                       double* __restrict__ err) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float* old = scales + n0 + r;
  const double before = objective(A, b, wHw[r], old, N, G, rows, r);
#define AT(M, g, h) M[((size_t)(g) * G + (h)) * rows + r]
#define X(g) x[(size_t)(g) * rows + r]
  double mean = 0.0;
  for (int g = 0; g < G; g++) mean += AT(A, g, g) / G;
  for (int g = 0; g < G; g++) {
    for (int h = 0; h <= g; h++) AT(L, g, h) = AT(A, g, h);
    const double ridge = 1e-9 * (AT(A, g, g) + mean) + 1e-30;
    AT(L, g, g) += ridge;
    X(g) = b[(size_t)g * rows + r] + ridge * (double)old[(size_t)g * N];
  }
  // L L^T = A + ridge, a pivot at or below 1e-12 of its diagonal a failure (as linalg.ts decides)
  bool ok = true;
  for (int i = 0; ok && i < G; i++)
    for (int j = 0; j <= i; j++) {
      double s = AT(L, i, j);
      for (int k = 0; k < j; k++) s -= AT(L, i, k) * AT(L, j, k);
      if (i == j) {
        if (!(s > 1e-12 * AT(L, i, i))) {
          ok = false;
          break;
        }
        AT(L, i, i) = sqrt(s);
      } else {
        AT(L, i, j) = s / AT(L, j, j);
      }
    }
  for (int i = 0; ok && i < G; i++) {
    double s = X(i);
    for (int k = 0; k < i; k++) s -= AT(L, i, k) * X(k);
    X(i) = s / AT(L, i, i);
  }
  for (int i = G - 1; ok && i >= 0; i--) {
    double s = X(i);
    for (int k = i + 1; k < G; k++) s -= AT(L, k, i) * X(k);
    X(i) = s / AT(L, i, i);
  }
  for (int g = 0; ok && g < G; g++) {
    const double v = X(g);
    if (!(v > 0.0 && v <= 1.7976931348623157e308))  // positive and finite
      ok = false;
    else
      X(g) = half_scale(v);
  }
  const double after = ok ? objective(A, b, wHw[r], x + r, rows, G, rows, r) : 0.0;
  if (ok && after < before) {
    for (int g = 0; g < G; g++) old[(size_t)g * N] = (float)X(g);
    err[r] = after;
  } else {
    err[r] = before;
  }
#undef AT
#undef X
}
