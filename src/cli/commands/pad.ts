import { Command, intOption, parse, printJson } from "../command.js";
import { UsageError } from "../../util/errors.js";
import { PadTarget, multipleTarget, padCheckpoint, planPadding } from "../../model/padding.js";
import { readLlamaConfig } from "../../model/config.js";

const USAGE = `usage: gptq pad <in-dir> <out-dir> (--multiple N | --kernel NAME) [options]

Writes a copy of an unquantized Llama-family checkpoint with the MLP intermediate dimension zero-padded
(zero rows in gate_proj/up_proj, zero columns in down_proj, intermediate_size updated in config.json):
the model computes exactly the same function. The input is not modified.

  --multiple N      pad intermediate_size up to a multiple of N
  --json            print the plan and result as JSON
`;

export const padCommand: Command = {
  name: "pad",
  summary: "zero-pad an unquantized checkpoint's MLP intermediate (function unchanged)",
  usage: USAGE,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      multiple: { type: "string" },
      json: { type: "boolean" },
    });
    if (positionals.length !== 2) throw new UsageError("expected <in-dir> and <out-dir>");
    const [inDir, outDir] = positionals;
    let target: PadTarget;
    if (values.multiple !== undefined) target = multipleTarget(intOption(values.multiple, "multiple")!);
    else throw new UsageError("give --multiple N");
    const dims = readLlamaConfig(inDir);
    const plan = planPadding(dims, target);
    const res = await padCheckpoint(inDir, outDir, plan);
    if (values.json) printJson({ ...plan, tensors: res.tensors, out: outDir });
    else
      process.stdout.write(
        plan.from === plan.to
          ? `intermediate_size ${plan.from} already fits ${plan.target}; copied unchanged to ${outDir}\n`
          : `intermediate_size ${plan.from} -> ${plan.to} (${plan.target}); ${res.tensors} tensors padded; wrote ${outDir}\n`,
      );
  },
};
