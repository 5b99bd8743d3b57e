import { Command, intOption, parse, printJson } from "../command.js";
import { prepareOutput } from "../output.js";
import { MAX_RELATIVE_DIFFERENCE, exportOnnx } from "../../export/onnx-export.js";
import { readTokenRows } from "../../pipeline/calibration.js";
import { UsageError } from "../../util/errors.js";

const usage = `usage: gptq export <in> <out> --to onnx [--tokens FILE] [--key evaluation_tokens]
                   [--no-verify] [--external-data] [--accuracy-level 0|4] [--json]

Writes a Llama-family checkpoint (GPTQ v1, v2 or Marlin, or unquantized) as an ONNX decoder into the new
folder <out>: onnx/model.onnx with com.microsoft MatMulNBits for every quantized projection (act-order
rows reordered, asymmetric zero points kept, codes unchanged) and fp32 elsewhere; inputs input_ids,
attention_mask, position_ids, past_key_values.N.key/value, outputs logits, present.N.key/value, as
transformers.js and onnxruntime-genai use them; config.json (without quantization_config), the
tokenizer files and genai_config.json beside it. <out> is built aside and renamed into place.

Before <out> appears, onnxruntime-node (when installed; the check is skipped, and said so, when not) runs
the model on the check tokens in one run and through its key/value cache, and the logits must match the
project's own forward pass (as gptq eval runs it) within a relative difference of ${MAX_RELATIVE_DIFFERENCE}.

  --to onnx            the target (the only one)
  --tokens FILE        check on the first sequence of a safetensors token file (default: 16 fixed ids)
  --key K              tensor name in FILE (default evaluation_tokens)
  --no-verify          skip the check
  --external-data      weights in onnx/model.onnx_data (default: only when over 1.5 GiB)
  --accuracy-level N   MatMulNBits accuracy_level: 0 (default) fp32 activations, as checked;
                       4 int8 activations inside ONNX Runtime (faster on CPUs, not what the project's
                       forward computes: stories260K's logits move by 1e-1, so it needs --no-verify)
  --json               print a JSON summary on stdout

example: gptq export s4 s4-onnx --to onnx --tokens ../shared/models/stories260K-eval.safetensors`;

export const exportCommand: Command = {
  name: "export",
  summary: "write a checkpoint as an ONNX model (MatMulNBits), checked with onnxruntime-node",
  usage,
  async run(argv) {
    const { values: v, positionals } = parse(argv, {
      to: { type: "string" },
      tokens: { type: "string" },
      key: { type: "string" },
      "no-verify": { type: "boolean" },
      "external-data": { type: "boolean" },
      "accuracy-level": { type: "string" },
      json: { type: "boolean" },
    });
    if (positionals.length !== 2) throw new UsageError("expected <in> and <out>");
    if (v.to !== "onnx")
      throw new UsageError(v.to ? `--to must be onnx, not "${v.to}"` : "--to onnx is required");
    const accuracyLevel = intOption(v["accuracy-level"], "accuracy-level", 0, 0);
    if (accuracyLevel !== 0 && accuracyLevel !== 4)
      throw new UsageError(`--accuracy-level must be 0 or 4, got ${accuracyLevel}`);
    if (accuracyLevel === 4 && !v["no-verify"])
      throw new UsageError(
        "--accuracy-level 4 runs int8 activations, which the check against the fp32 forward cannot pass: add --no-verify",
      );
    if (v.key && !v.tokens) throw new UsageError("--key needs --tokens FILE");
    if (v.tokens && v["no-verify"]) throw new UsageError("--tokens is for the check: drop --no-verify");
    const tokens = v.tokens ? readTokenRows(v.tokens, v.key ?? "evaluation_tokens").rows[0] : undefined;
    const [input, output] = positionals;
    prepareOutput("export", output);
    const r = await exportOnnx(input, output, {
      tokens,
      verify: !v["no-verify"],
      externalData: v["external-data"] ? true : undefined,
      accuracyLevel,
      log: (line) => process.stderr.write(`${line}\n`),
    });
    if (v.json) {
      printJson({ input, output, ...r });
      return;
    }
    const check =
      "skipped" in r.verification
        ? `not checked: ${r.verification.skipped}`
        : `checked with ${r.verification.runtime} on ${r.verification.tokens} tokens: logits within ${r.verification.fullRelDiff.toExponential(2)} of the project's forward in one run, ${r.verification.cachedRelDiff.toExponential(2)} through the key/value cache (relative)`;
    const extras = [
      r.reordered ? `${r.reordered} reordered by g_idx or padded to whole blocks` : "",
      ...r.widened.map((w) => `${w}-bit codes widened`),
    ].filter(Boolean);
    process.stdout.write(
      `exported ${input} to ${output}: ${r.quantized} MatMulNBits${extras.length ? ` (${extras.join(", ")})` : ""}, ${r.dense} fp32 Gemm; ${r.files.length} files, model ${r.modelBytes + r.externalDataBytes} bytes\n${check}\n`,
    );
  },
};
