import { Command, groupSizeOption, intOption, parse, printJson } from "../command.js";
import { prepareOutput } from "../output.js";
import { UsageError } from "../../util/errors.js";
import { PadTarget, kernelTarget, multipleTarget, planPadding } from "../../model/pad-plan.js";
import { assertHiddenPaddable, padCheckpoint } from "../../transform/pad.js";
import { KERNELS, getKernel } from "../../kernels/registry.js";
import { Bits } from "../../formats/types.js";
import { parseModelConfig, readModelConfig } from "../../model/config.js";

const USAGE = `usage: gptq pad <in-dir> <out-dir> (--multiple N | --kernel NAME | --hidden-multiple N) [options]

Writes a copy of an unquantized checkpoint (Llama, Mistral, Qwen2, Qwen3, Gemma 2/3; hidden size: the
first three) with the MLP intermediate dimension zero-padded
(zero rows in gate_proj/up_proj, zero columns in down_proj, intermediate_size updated in config.json):
the model computes exactly the same function. The input is not modified.

  --multiple N      pad intermediate_size up to a multiple of N
  --hidden-multiple N
                    also pad hidden_size up to a multiple of N: zero channels in the residual stream, RMSNorm
                    kept exact (eps x D / D', norm weights x sqrt(D / D')), head_dim written out
  --kernel NAME     pad so every layer meets kernel NAME's shape rules (gptq check --help lists them),
                    for layers to be quantized with:
    --bits N          (default 4)
    --group-size N    (default 128)
    --sym | --asym    (default sym)
    --desc-act        act-order
  --json            print the plan and result as JSON

The head dimension and the number of heads cannot be padded without changing the model; layers that
need them are reported with the kernels that accept the model instead.

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
      "hidden-multiple": { type: "string" },
      bits: { type: "string" },
      "group-size": { type: "string" },
      sym: { type: "boolean" },
      asym: { type: "boolean" },
      "desc-act": { type: "boolean" },
      json: { type: "boolean" },
    });
    if (positionals.length !== 2) throw new UsageError("expected <in-dir> and <out-dir>");
    const [inDir, outDir] = positionals;
    if (values.multiple !== undefined && values.kernel !== undefined)
      throw new UsageError("give one of --multiple N or --kernel NAME");
    if (
      values.multiple === undefined &&
      values.kernel === undefined &&
      values["hidden-multiple"] === undefined
    )
      throw new UsageError("give --multiple N, --kernel NAME or --hidden-multiple N");
    if (values.sym && values.asym) throw new UsageError("--sym and --asym exclude each other");
    const bits = intOption(values.bits, "bits", 4)!;
    if (![2, 3, 4, 8].includes(bits)) throw new UsageError(`--bits must be 2, 3, 4 or 8, got ${bits}`);
    const scheme = {
      bits: bits as Bits,
      groupSize: groupSizeOption(values["group-size"], "group-size", 128)!,
      sym: !values.asym,
      actOrder: values["desc-act"] ?? false,
    };
    const hiddenMultiple = intOption(values["hidden-multiple"], "hidden-multiple", undefined, 1);
    let target: PadTarget;
    let alternatives: PadTarget[] = [];
    if (values.multiple !== undefined)
      target = multipleTarget(intOption(values.multiple, "multiple", undefined, 1)!);
    else if (values.kernel !== undefined) {
      target = kernelTarget(getKernel(values.kernel), scheme);
      alternatives = KERNELS.map((k) => kernelTarget(k, scheme));
    } else target = multipleTarget(1);
    prepareOutput("pad", outDir);
    // the intermediate is planned for the model as it will be: with its hidden size padded
    const source = readModelConfig(inDir);
    const D = source.hiddenSize;
    const D2 = hiddenMultiple ? Math.ceil(D / hiddenMultiple) * hiddenMultiple : D;
    if (D2 !== D) assertHiddenPaddable(source, inDir);
    const config =
      D2 === D
        ? source
        : parseModelConfig({ ...source.raw, hidden_size: D2, head_dim: source.headDim }, inDir);
    const plan = planPadding(config, target, alternatives);
    const hidden = D2 !== D ? { from: D, to: D2 } : undefined;
    const res = await padCheckpoint(inDir, outDir, plan, hidden);
    if (values.json) printJson({ ...plan, ...(hidden ? { hidden } : {}), tensors: res.tensors, out: outDir });
    else {
      const intermediateAsked = values.multiple !== undefined || values.kernel !== undefined;
      const parts = [
        !intermediateAsked && plan.from === plan.to
          ? `intermediate_size ${plan.from} unchanged`
          : plan.from === plan.to
            ? `intermediate_size ${plan.from} already fits ${plan.target}`
            : `intermediate_size ${plan.from} -> ${plan.to} (${plan.target})`,
        ...(hidden ? [`hidden_size ${hidden.from} -> ${hidden.to} (RMSNorm kept exact)`] : []),
      ];
      process.stdout.write(
        res.tensors === 0
          ? `${parts.join("; ")}; copied unchanged to ${outDir}\n`
          : `${parts.join("; ")}; ${res.tensors} tensors padded; wrote ${outDir}\n`,
      );
    }
  },
};
