/**
 * Least-squares refit of a quantized layer's scales with its codes held fixed. For each output row n,
 * q_k = s_{g(k)} u_k with u_k = c_k - z_{g(k)}, and the scales minimise the output-error proxy
 * (w - q)^T H (w - q): the G x G system A s = b with A[g, g'] = u_g^T H u_{g'} and b[g] = u_g^T H w.
 *
 * All N rows are solved together: for each group g', V = H[:, g'] U[g', :] (K x N) gives column g' of
 * every row's A, so the cost is about 2 K^2 N (the same order as the GPTQ sweep).
 * Everything here is in the sweep's processing order: w, codes and H rows/columns are permuted alike.
 * The systems are the dense part: the CPU's parallel steps build them with the pool's GEMMs
 * (backend/cpu/dense.ts), and the GPU runs the whole refit on the device (backend/cuda/gptq/refit.ts).
 */
import { choleskyLowerInPlace, solveLower } from "../tensor/linalg.js";
import { RefitInput, RefitSystems } from "../tensor/refit-input.js";
import { halfScale } from "./quantizer.js";

/** Refits the scales in place; returns sum_n (w - q)^T H (w - q) after the refit. */
export function refitScales(r: RefitInput): number {
  return solveRefit(refitSystems(r), r.scales, r.N, r.G);
}

/** The normal equations of every row, on the host (about 2 K^2 N multiply-adds). */
export function refitSystems(r: RefitInput): RefitSystems {
  const { w, H, codes, groupOf, zeros, N, K, G } = r;
  const members: number[][] = Array.from({ length: G }, () => []);
  for (let k = 0; k < K; k++) members[groupOf[k]].push(k);

  // u = codes - zero point, K x N
  const u = new Float32Array(K * N);
  for (let k = 0; k < K; k++) {
    const z = groupOf[k] * N;
    for (let n = 0; n < N; n++) u[k * N + n] = codes[k * N + n] - zeros[z + n];
  }
  const A = new Float64Array(N * G * G); // A[n][g][g']
  const b = new Float64Array(N * G);
  const wHw = new Float64Array(N);
  const v = new Float64Array(K * N);

  // column g' of every A, and b / w^T H w from V = H w
  for (let gp = 0; gp <= G; gp++) {
    const cols = gp < G ? members[gp] : null;
    v.fill(0);
    for (let k = 0; k < K; k++) {
      const hk = k * K;
      const vk = k * N;
      if (cols) {
        for (const j of cols) {
          const h = H[hk + j];
          if (h === 0) continue;
          const uj = j * N;
          for (let n = 0; n < N; n++) v[vk + n] += h * u[uj + n];
        }
      } else {
        for (let j = 0; j < K; j++) {
          const h = H[hk + j];
          if (h === 0) continue;
          const wj = j * N;
          for (let n = 0; n < N; n++) v[vk + n] += h * w[wj + n];
        }
      }
    }
    for (let k = 0; k < K; k++) {
      const g = groupOf[k];
      const vk = k * N;
      if (cols) {
        for (let n = 0; n < N; n++) A[(n * G + g) * G + gp] += u[vk + n] * v[vk + n];
      } else {
        for (let n = 0; n < N; n++) {
          b[n * G + g] += u[vk + n] * v[vk + n];
          wHw[n] += w[vk + n] * v[vk + n];
        }
      }
    }
  }

  return { A, b, wHw };
}

/**
 * Solves each row's system for its scales and keeps them in `scales` (G x N) where they lower the row's
 * error; returns sum_n (w - q)^T H (w - q) after the refit.
 */
export function solveRefit(systems: RefitSystems, scales: Float32Array, N: number, G: number): number {
  const { A, b, wHw } = systems;
  let total = 0;
  const a = new Float64Array(G * G);
  const rhs = new Float64Array(G);
  const old = new Float64Array(G);
  const fresh = new Float64Array(G);
  for (let n = 0; n < N; n++) {
    const An = A.subarray(n * G * G, (n + 1) * G * G);
    const bn = b.subarray(n * G, (n + 1) * G);
    for (let g = 0; g < G; g++) old[g] = scales[g * N + n];
    const before = objective(An, bn, wHw[n], old, G);
    // A small ridge towards the current scales keeps groups whose codes all sit at the zero point (a
    // zero row in A) where they are.
    let mean = 0;
    for (let g = 0; g < G; g++) mean += An[g * G + g] / G;
    a.set(An);
    for (let g = 0; g < G; g++) {
      const ridge = 1e-9 * (An[g * G + g] + mean) + 1e-30;
      a[g * G + g] += ridge;
      rhs[g] = bn[g] + ridge * old[g];
    }
    let ok = choleskyLowerInPlace(a, G);
    if (ok) solveLower(a, rhs, G);
    for (let g = 0; ok && g < G; g++) {
      if (!(rhs[g] > 0 && Number.isFinite(rhs[g]))) ok = false;
      else fresh[g] = halfScale(rhs[g]);
    }
    const after = ok ? objective(An, bn, wHw[n], fresh, G) : Infinity;
    if (after < before) {
      for (let g = 0; g < G; g++) scales[g * N + n] = fresh[g];
      total += after;
    } else {
      total += before;
    }
  }
  return total;
}

/** (w - q)^T H (w - q) = s^T A s - 2 b^T s + w^T H w */
function objective(A: Float64Array, b: Float64Array, wHw: number, s: Float64Array, G: number): number {
  let quad = 0;
  let lin = 0;
  for (let g = 0; g < G; g++) {
    let t = 0;
    for (let h = 0; h < G; h++) t += A[g * G + h] * s[h];
    quad += s[g] * t;
    lin += b[g] * s[g];
  }
  return quad - 2 * lin + wHw;
}
