/** Quantization algorithms: round-to-nearest, GPTQ, and the Hessian they share. */
export { quantizeRtn } from "./rtn.js";
export { HessianAccumulator } from "./hessian.js";
export { gptqQuantize } from "./gptq.js";
export type { GptqOptions, GptqResult } from "./gptq.js";
export type { ClipMethod, QuantizerOptions } from "./quantizer.js";
