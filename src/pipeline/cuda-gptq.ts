/**
 * GPTQ with its dense work on the GPU: the damped Hessian factorised by cuSOLVER and every lazy-update
 * block swept on the device (backend/cuda/gptq), group parameters found on the host by the same code as
 * the CPU path, so every option means the same on both.
 */
import { CudaDevice } from "../backend/cuda/device.js";
import { CudaGptqFactor, CudaGptqSweep } from "../backend/cuda/gptq/sweep.js";
import { BlockSweep, DAMP_LIMIT, GptqBackend, nextDamp, notPositiveDefinite } from "../quant/gptq.js";

export function cudaGptqBackend(dev: CudaDevice = CudaDevice.get()): GptqBackend {
  return {
    name: "cuda",
    factor(hp, K, damp) {
      let mean = 0;
      for (let k = 0; k < K; k++) mean += hp[k * K + k];
      mean /= K;
      for (let d = damp; d <= DAMP_LIMIT; d = nextDamp(d)) {
        const h32 = new Float32Array(hp);
        for (let k = 0; k < K; k++) h32[k * K + k] = hp[k * K + k] + d * mean;
        const f = CudaGptqFactor.of(dev, h32, K);
        if (!f) continue;
        const colWeight = Float64Array.from(f.diag, (x) => 1 / (x * x));
        const used = d;
        return {
          damp: used,
          damped: () => {
            const h = Float64Array.from(hp);
            for (let k = 0; k < K; k++) h[k * K + k] += used * mean;
            return h;
          },
          sweep: (q, w, N, scales, zeros) =>
            new BlockSweep(
              q,
              new CudaGptqSweep(dev, f, w, N, scales.length / N),
              colWeight,
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
  };
}
