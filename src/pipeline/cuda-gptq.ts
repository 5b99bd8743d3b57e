/**
 * GPTQ with its dense work on the GPU: the Hessian and the working weight prepared on the device (dead
 * inputs, act-order, damping), the damped Hessian factorised by cuSOLVER, every lazy-update block swept
 * there (backend/cuda/gptq) with group parameters found there too (min-max, clip "mse" and "hessian"),
 * and the least-squares scale refits run there;
 * clip "gptq" and static groups out of order run on the host by the same code as the CPU path, so every
 * option means the same on both.
 */
import { CudaDevice } from "../backend/cuda/device.js";
import { CudaGptqData } from "../backend/cuda/gptq/problem.js";
import { CudaGptqSweep } from "../backend/cuda/gptq/sweep.js";
import {
  BlockSweep,
  DAMP_LIMIT,
  GptqBackend,
  GptqFactor,
  GptqProblem,
  nextDamp,
  notPositiveDefinite,
} from "../quant/gptq.js";

/** A GPTQ problem whose Hessian and weight are already on the device. */
export function cudaGptqProblem(dev: CudaDevice, data: CudaGptqData): GptqProblem {
  const { N, K } = data;
  return {
    N,
    K,
    diagonal: () => data.diagonal(),
    clearDead: (dead) => data.clearDead(dead),
    permute: (perm) => data.permute(perm),
    weights: () => data.weights(),
    factor(damp): GptqFactor {
      const diag = data.diagonal();
      let mean = 0;
      for (let k = 0; k < K; k++) mean += diag[k];
      mean /= K;
      for (let d = damp; d <= DAMP_LIMIT; d = nextDamp(d)) {
        const f = data.tryFactor(d * mean);
        if (!f) continue;
        return {
          damp: d,
          refit: (r) => data.refit(d * mean, r),
          sweep: (q, scales, zeros, w) =>
            new BlockSweep(
              q,
              new CudaGptqSweep(dev, f, w ?? data.weight, N, scales.length / N),
              f.colWeight,
              () => f.rows(),
              N,
              K,
              scales,
              zeros,
            ),
          dispose: () => f.dispose(),
        };
      }
      throw notPositiveDefinite();
    },
    dispose: () => data.dispose(),
  };
}

/** GPTQ from host arrays with its work on the GPU. */
export function cudaGptqBackend(dev: CudaDevice = CudaDevice.get()): GptqBackend {
  return {
    name: "cuda",
    problem: (W, H, N, K) => cudaGptqProblem(dev, CudaGptqData.fromHost(dev, W, H, N, K)),
  };
}
