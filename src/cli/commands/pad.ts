import { Command, groupSizeOption, intOption, parse, printJson } from "../command.js";
import { prepareOutput } from "../output.js";
import { UsageError } from "../../util/errors.js";
import { PadTarget, kernelTarget, multipleTarget, planPadding } from "../../model/pad-plan.js";
import { padCheckpoint } from "../../transform/pad.js";
import { KERNELS, getKernel } from "../../kernels/registry.js";
import { Bits } from "../../formats/types.js";
import { readLlamaConfig } from "../../model/config.js";

const USAGE = `usage: gptq pad <in-dir> <out-dir> (--multiple N | --kernel NAME) [options]

Writes a copy of an unquantized Llama-family checkpoint with the MLP intermediate dimension zero-padded
(zero rows in gate_proj/up_proj, zero columns in down_proj, intermediate_size updated in config.json):
the model computes exactly the same function. The input is not modified.

  --multiple N      pad intermediate_size up to a multiple of N
  --kernel NAME     pad so every layer meets kernel NAME's shape rules (gptq check --help lists them),
                    for layers to be quantized with:
    --bits N          (default 4)
    --group-size N    (default 128)
    --sym | --asym    (default sym)
    --desc-act        act-order
  --json            print the plan and result as JSON

Dimensions that padding cannot change without changing the model (hidden_size, which RMSNorm averages
over; the head dimension) are reported with the kernels that accept the model instead.

examples:
  gptq pad llama-fp llama-fp-pad --multiple 64
  gptq pad llama-fp llama-fp-marlin --kernel marlin --group-size 128
`;

export const padCommand: Command = {
  name: "pad",
  summary: "zero-pad an unquantized checkpoint's MLP intermediate (function unchanged)",
  usage: USAGE,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      multiple: { type: "string" },
      kernel: { type: "string" },
      bits: { type: "string" },
      "group-size": { type: "string" },
      sym: { type: "boolean" },
      asym: { type: "boolean" },
      "desc-act": { type: "boolean" },
      json: { type: "boolean" },
    });
    if (positionals.length !== 2) throw new UsageError("expected <in-dir> and <out-dir>");
    const [inDir, outDir] = positionals;
    if ((values.multiple === undefined) === (values.kernel === undefined))
      throw new UsageError("give one of --multiple N or --kernel NAME");
    if (values.sym && values.asym) throw new UsageError("--sym and --asym exclude each other");
    const bits = intOption(values.bits, "bits", 4)!;
    if (![2, 3, 4, 8].includes(bits)) throw new UsageError(`--bits must be 2, 3, 4 or 8, got ${bits}`);
    const scheme = {
      bits: bits as Bits,
      groupSize: groupSizeOption(values["group-size"], "group-size", 128)!,
      sym: !values.asym,
      actOrder: values["desc-act"] ?? false,
    };
    let target: PadTarget;
    let alternatives: PadTarget[] = [];
    if (values.multiple !== undefined)
      target = multipleTarget(intOption(values.multiple, "multiple", undefined, 1)!);
    else {
      target = kernelTarget(getKernel(values.kernel!), scheme);
      alternatives = KERNELS.map((k) => kernelTarget(k, scheme));
    }
    prepareOutput("pad", outDir);
    const plan = planPadding(readLlamaConfig(inDir), target, alternatives);
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
