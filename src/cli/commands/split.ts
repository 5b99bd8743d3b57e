import { Command, listOption, parse, printJson } from "../command.js";
import { prepareOutput } from "../output.js";
import { splitCheckpoint } from "../../transform/split.js";
import { GptqError, UsageError } from "../../util/errors.js";
import { readModelConfig } from "../../model/config.js";
import { fusedParts } from "../../model/families/fused.js";

const usage = `usage: gptq split <in> <out> --layer <prefix> [--sizes n1,n2,... --names p1,p2,...] [--json]

Splits one quantized layer along out_features into layers of the given sizes (a fused qkv_proj into
q_proj, k_proj, v_proj; kv_b_proj into its two halves). Codes, scales and zero points are moved, not
recomputed; the bias is split too. Split points must fall on the packing's boundaries: multiples of
32/bits outputs for GPTQ (32 for 3-bit), of 64 for Marlin. The parts are checked to dequantize to the
rows of the original before <out> appears; <in> is only read.

  --layer P     tensor prefix of the layer to split, e.g. model.layers.0.self_attn.qkv_proj
  --sizes LIST  out_features of each part, adding up to the layer's (default: the model family's parts
                of a fused projection, e.g. qkv_proj into q_proj, k_proj, v_proj)
  --names LIST  tensor prefix of each part (default: the family's names for them)
  --json        print a JSON summary on stdout

example: gptq split phi3-gptq phi3-split --layer model.layers.0.self_attn.qkv_proj \\
           --sizes 3072,3072,3072 --names model.layers.0.self_attn.q_proj,model.layers.0.self_attn.k_proj,model.layers.0.self_attn.v_proj`;

export const splitCommand: Command = {
  name: "split",
  summary: "split a quantized layer along out_features (e.g. fused qkv into q, k, v)",
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      layer: { type: "string" },
      sizes: { type: "string" },
      names: { type: "string" },
      json: { type: "boolean" },
    });
    if (positionals.length !== 2) throw new UsageError("expected <in> and <out>");
    if (!values.layer) throw new UsageError("--layer is required");
    const [input, output] = positionals;
    let sizes: number[];
    let names: string[];
    if (values.sizes === undefined && values.names === undefined) {
      // the family table knows how its fused projections split
      const parts = fusedParts(readModelConfig(input), values.layer);
      if (!parts)
        throw new GptqError(
          `${values.layer} is not a fused projection of this model's family: give --sizes and --names`,
        );
      ({ sizes, names } = parts);
    } else {
      sizes = listOption(values.sizes, "sizes").map((s) => {
        if (!/^\d+$/.test(s) || Number(s) === 0)
          throw new UsageError(`--sizes expects positive integers, got "${s}"`);
        return Number(s);
      });
      names = listOption(values.names, "names");
    }
    if (names.length !== sizes.length)
      throw new UsageError(`${sizes.length} sizes but ${names.length} names; give one name per part`);
    prepareOutput("split", output);
    const r = await splitCheckpoint(input, output, values.layer, sizes, names);
    if (values.json) printJson({ input, output, ...r });
    else
      process.stdout.write(
        `split ${values.layer} (${r.format}) into ${r.layers.map((l) => `${l.name} [${l.outFeatures}]`).join(", ")} in ${output}; parts dequantize to the original rows\n`,
      );
  },
};
