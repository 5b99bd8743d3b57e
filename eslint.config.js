import tseslint from "typescript-eslint";

/**
 * Layering of src/, top to bottom: a folder may import from itself and from the folders below it, never
 * from one above. src/index.ts (the public API barrel) sits outside the layers and may import any of them.
 *   cli        one file per command: parse, call the library, print
 *   pipeline   drivers putting the pieces together: calibration, layer-by-layer quantization, quantize a
 *              checkpoint, write it, the synthetic model and the demo
 *   export     a checkpoint as another runtime's model (ONNX: graph, MatMulNBits layout, checks)
 *   transform  whole-checkpoint rewrites, atomic: convert, dequantize, split, merge, pad
 *   model      model families, forward passes, tokenizer, perplexity, config, padding plans, model on CUDA
 *   quant      the algorithms only, pure functions on arrays: rtn, gptq, hessian, quantizer, refit,
 *              fp-target, relative errors
 *   backend    cpu/ and cuda/: linears and their kernels
 *   kernels    the kernels' compatibility rules
 *   io         safetensors, checkpoint directories, quant configs, atomic writes, ONNX messages
 *   formats    format registry, pack / unpack
 *   tensor     dtypes, linear algebra, the quantization grid and its row search
 *   util       errors, json
 * Besides, quant/ stays pure: it may not import backend/ or io/ either (no linears, no files).
 * No file of src/ imports test/ or bench/ (those may import src/). Dynamic import() is not checked.
 */
const LAYERS = [
  "cli",
  "pipeline",
  "export",
  "transform",
  "model",
  "quant",
  "backend",
  "kernels",
  "io",
  "formats",
  "tensor",
  "util",
];
/** Layers below a folder that it still may not import. */
const ALSO_FORBIDDEN = { quant: ["backend", "io"] };
const layering = LAYERS.map((layer, i) => ({
  files: [`src/${layer}/**/*.ts`],
  rules: {
    "no-restricted-imports": [
      "error",
      {
        patterns: [
          ...LAYERS.slice(0, i).map((above) => ({
            regex: `^(\\.\\./)+${above}(/|$)`,
            message: `src/${layer}/ may not import src/${above}/, a layer above it (${LAYERS.join(" > ")}; see eslint.config.js).`,
          })),
          ...(ALSO_FORBIDDEN[layer] ?? []).map((below) => ({
            regex: `^(\\.\\./)+${below}(/|$)`,
            message: `src/${layer}/ may not import src/${below}/ (see eslint.config.js).`,
          })),
          {
            regex: "^(\\.\\./)+(test|bench)(/|$)",
            message: "src/ may not import test/ or bench/.",
          },
        ],
      },
    ],
  },
}));

export default tseslint.config(
  { ignores: ["dist/**", ".gpu/**", "node_modules/**"] },
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/no-non-null-assertion": "off",
    },
  },
  ...layering,
);
