import { availableParallelism } from "node:os";
import { Command, intOption, parse, printJson, threadsOption } from "../command.js";
import { loadOrt, ortMissing } from "../../backend/cpu/ort.js";
import { moveToOrt } from "../../model/ort.js";
import { UsageError } from "../../util/errors.js";
import { DecoderModel } from "../../model/decoder.js";
import { perplexity } from "../../model/perplexity.js";
import { readTokenRows } from "../../pipeline/calibration.js";

const USAGE = `usage: gptq eval <model-dir> --tokens FILE [--key evaluation_tokens] [--act-quant none|int8]
                 [--device cpu|cuda] [--engine auto|onnxruntime|gptq-ts] [--threads N] [--json]

Perplexity of a checkpoint (unquantized, or GPTQ v1/v2/Marlin run from its packed tensors) over every
next-token prediction of the token sequences in FILE (a safetensors int32/int64 [n, seqlen] tensor).
Fused projections (self_attn.qkv_proj, mlp.gate_up_proj: as gptq merge writes them, or Phi-3 style)
are split into q/k/v and gate/up on load, exactly: the perplexity is the unfused checkpoint's.

  --tokens FILE       token ids
  --key K             tensor name in FILE (default evaluation_tokens)
  --act-quant M       none (default): weights dequantized group by group, fp32 activations;
                      int8: A8W4 dynamic, activations quantized per token to int8 (4-bit symmetric weights)
  --device D          cpu (default) or cuda: quantized projections run on the GPU with our kernels
                      (fp16 activations; the rest of the model stays on the CPU)
  --engine E          CPU engine of the quantized projections (fp32 activations): auto (default) runs
                      them with ONNX Runtime's MatMulNBits when onnxruntime-node is installed (measured
                      several times faster, see BENCHMARKS.md), else with ours; onnxruntime or gptq-ts
                      choose one (onnxruntime without the package is refused)
  --threads N         CPU threads (default: every core)
  --json              print {"ppl", "tokens"} as JSON
`;

export const evalCommand: Command = {
  name: "eval",
  summary: "perplexity of a checkpoint on token sequences",
  usage: USAGE,
  async run(argv) {
    const { values: v, positionals } = parse(argv, {
      tokens: { type: "string" },
      key: { type: "string" },
      "act-quant": { type: "string" },
      device: { type: "string" },
      threads: { type: "string" },
      engine: { type: "string" },
      json: { type: "boolean" },
    });
    if (positionals.length !== 1) throw new UsageError("expected one <model-dir>");
    threadsOption(v.threads);
    if (!v.tokens) throw new UsageError("--tokens FILE is required");
    const actQuant = v["act-quant"] ?? "none";
    if (actQuant !== "none" && actQuant !== "int8")
      throw new UsageError(`--act-quant must be none or int8, got "${actQuant}"`);
    const device = v.device ?? "cpu";
    if (device !== "cpu" && device !== "cuda")
      throw new UsageError(`--device must be cpu or cuda, got "${device}"`);
    if (device === "cuda" && actQuant !== "none")
      throw new UsageError("--device cuda runs fp16 activations: drop --act-quant");
    const engine = v.engine ?? "auto";
    if (engine !== "auto" && engine !== "onnxruntime" && engine !== "gptq-ts")
      throw new UsageError(`--engine must be auto, onnxruntime or gptq-ts, got "${engine}"`);
    if (device === "cuda" && v.engine !== undefined)
      throw new UsageError("--engine chooses a CPU engine: drop it with --device cuda");
    const useOrt =
      device === "cpu" &&
      actQuant === "none" &&
      engine !== "gptq-ts" &&
      (engine === "onnxruntime" || loadOrt() !== undefined);
    if (engine === "onnxruntime" && !loadOrt()) throw new UsageError(`--engine onnxruntime: ${ortMissing()}`);
    const { rows } = readTokenRows(v.tokens, v.key ?? "evaluation_tokens");
    const t0 = Date.now();
    const model = DecoderModel.load(positionals[0], { actQuant });
    if (useOrt) {
      const placed = await moveToOrt(model, intOption(v.threads, "threads", availableParallelism(), 1)!);
      for (const k of placed.kept)
        process.stderr.write(`onnxruntime: ${k.name} stays on our kernels: ${k.reason}\n`);
    }
    if (device === "cuda") {
      const { moveToCuda } = await import("../../model/cuda.js");
      const placed = moveToCuda(model);
      const kernels = Object.entries(placed.kernels).map(([k, n]) => `${n} x ${k}`);
      process.stderr.write(`cuda: ${kernels.join(", ") || "no quantized projections"}\n`);
      for (const c of placed.onCpu) process.stderr.write(`cuda: ${c.name} stays on the CPU: ${c.reason}\n`);
    }
    const { ppl, tokens } = perplexity(model, rows);
    if (v.json) printJson({ ppl, tokens });
    else
      process.stdout.write(
        `perplexity ${ppl.toFixed(3)} over ${tokens} predictions (${rows.length} sequences${actQuant === "int8" ? ", A8W4 int8 activations" : ""}) in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`,
      );
  },
};
