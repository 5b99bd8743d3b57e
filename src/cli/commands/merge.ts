import { Command, listOption, parse, printJson } from "../command.js";
import { prepareOutput } from "../output.js";
import { mergeCheckpoint } from "../../transform/split.js";
import { GptqError, UsageError } from "../../util/errors.js";
import { readModelConfig } from "../../model/config.js";
import { fusedNameOf } from "../../model/families/fused.js";

const usage = `usage: gptq merge <in> <out> --layers p1,p2,... [--name <prefix>] [--json]

Concatenates quantized layers along out_features into one (q_proj, k_proj, v_proj into a fused
qkv_proj), in the order given. The layers must share in_features, bits, group size and g_idx (and all
have a bias or none). The merged layer is checked to dequantize to the parts before <out> appears; <in>
is only read.

  --layers LIST  tensor prefixes of the layers to merge
  --name P       tensor prefix of the merged layer (default: the fused projection the model family
                makes of these parts, e.g. q_proj, k_proj, v_proj into qkv_proj)
  --json         print a JSON summary on stdout

example: gptq merge llama-gptq llama-fused --layers model.layers.0.mlp.gate_proj,model.layers.0.mlp.up_proj \\
           --name model.layers.0.mlp.gate_up_proj`;

export const mergeCommand: Command = {
  name: "merge",
  summary: "merge quantized layers along out_features (e.g. q, k, v into a fused qkv)",
  usage,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      layers: { type: "string" },
      name: { type: "string" },
      json: { type: "boolean" },
    });
    if (positionals.length !== 2) throw new UsageError("expected <in> and <out>");
    const layers = listOption(values.layers, "layers");
    if (layers.length < 2) throw new UsageError("--layers needs at least two layers");
    const [input, output] = positionals;
    const name = values.name ?? fusedNameOf(readModelConfig(input), layers);
    if (!name)
      throw new GptqError(
        "--name is required: these layers are not the parts of a fused projection of this model's family",
      );
    prepareOutput("merge", output);
    const r = await mergeCheckpoint(input, output, layers, name);
    if (values.json) printJson({ input, output, ...r });
    else
      process.stdout.write(
        `merged ${layers.join(", ")} (${r.format}) into ${name} [${r.layers[0].outFeatures}] in ${output}; it dequantizes to the parts\n`,
      );
  },
};
