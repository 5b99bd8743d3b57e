import { Command, parse, printJson } from "../command.js";
import { prepareOutput } from "../output.js";
import { dequantizeCheckpoint } from "../../transform/dequantize.js";
import { FLOAT_DTYPE_NAMES } from "../../tensor/dtype.js";
import { UsageError } from "../../util/errors.js";

const usage = `usage: gptq dequantize <in> <out> [--dtype float16|bfloat16|float32] [--json]

Writes an unquantized checkpoint: every quantized layer becomes <prefix>.weight [out_features,
in_features] (W = scale * (q - zero)), every other tensor and file is carried over, and the quantization
config is removed. <out> is built aside and renamed into place; <in> is only read.

  --dtype T   float16 (default), bfloat16 or float32
  --json      print a JSON summary on stdout

example: gptq dequantize llama-gptq llama-fp16 --dtype float16`;

export const dequantizeCommand: Command = {
  name: "dequantize",
  summary: "write an unquantized checkpoint from a quantized one",
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, { dtype: { type: "string" }, json: { type: "boolean" } });
    if (positionals.length !== 2) throw new UsageError("expected <in> and <out>");
    const name = values.dtype ?? "float16";
    const dtype = FLOAT_DTYPE_NAMES[name];
    if (!dtype) throw new UsageError(`--dtype must be float16, bfloat16 or float32, not "${name}"`);
    const [input, output] = positionals;
    prepareOutput("dequantize", output);
    const r = await dequantizeCheckpoint(input, output, dtype);
    if (values.json) printJson({ input, output, ...r });
    else
      process.stdout.write(
        `dequantized ${r.layers} ${r.from} layers to ${name} into ${output} (${r.shards.length} shard${r.shards.length === 1 ? "" : "s"}); all ${r.verifiedLayers} written weights read back: equal to the source dequantized, and finite\n`,
      );
  },
};
