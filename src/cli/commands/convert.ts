import { Command, parse, printJson } from "../command.js";
import { prepareOutput } from "../output.js";
import { convertCheckpoint } from "../../transform/convert.js";
import { isCheckpointFormat } from "../../formats/registry.js";
import { UsageError } from "../../util/errors.js";

const usage = `usage: gptq convert <in> <out> --to gptq|gptq_v2|marlin [--verify] [--json]

Converts every quantized layer of the checkpoint <in> to another stored format, a layer at a time, and
writes the result to the new directory <out> (built aside and renamed into place; <in> is only read).
Every other file and tensor is carried over and the config files are rewritten to match. Before <out>
appears, every layer of the result is dequantized and compared, bit for bit, with the source.

  --to FORMAT   gptq (v1, AutoGPTQ), gptq_v2 (GPTQModel) or marlin (4-bit symmetric, group 128 or -1,
                no act-order, in_features % 16, out_features % 64)
  --verify      compare every layer of the result with the source, dequantized (always done; the flag
                is accepted so scripts can say so)
  --json        print a JSON summary on stdout

example: gptq convert llama-gptq llama-marlin --to marlin`;

export const convertCommand: Command = {
  name: "convert",
  summary: "convert a checkpoint between GPTQ v1, GPTQ v2 and Marlin (verified)",
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      to: { type: "string" },
      verify: { type: "boolean" },
      json: { type: "boolean" },
    });
    if (positionals.length !== 2) throw new UsageError("expected <in> and <out>");
    if (!values.to) throw new UsageError("--to is required");
    if (!isCheckpointFormat(values.to))
      throw new UsageError(`--to must be gptq, gptq_v2 or marlin, not "${values.to}"`);
    const [input, output] = positionals;
    prepareOutput("convert", output);
    const r = await convertCheckpoint(input, output, values.to);
    if (values.json) printJson({ input, output, ...r });
    else
      process.stdout.write(
        `converted ${r.layers} layers from ${r.from} to ${r.to} into ${output} (${r.shards.length} shard${r.shards.length === 1 ? "" : "s"}, ${r.tensorsCopied} other tensors carried over); all ${r.verifiedLayers} layers dequantize identically to the source\n`,
      );
  },
};
