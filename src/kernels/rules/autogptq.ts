/** AutoGPTQ's (and GPTQModel's) own kernels: the old CUDA kernel and the Triton kernel. */
import { shapeRule } from "../shape-rule.js";

export const CUDA_OLD = shapeRule({
  name: "cuda-old",
  description: "AutoGPTQ cuda-old: 2/3/4/8-bit, any group size",
  bits: [2, 3, 4, 8],
  kMultiple: 64,
  kNote: "its CUDA kernel needs it; otherwise AutoGPTQ falls back to a slower PyTorch path",
  nMultiple: 64,
  actOrder: "yes",
});

export const TRITON = shapeRule({
  name: "triton",
  description: "AutoGPTQ / GPTQModel Triton: 2/4/8-bit, any group size",
  bits: [2, 4, 8],
  kMultiple: 32,
  nMultiple: 32,
  actOrder: "yes",
});
