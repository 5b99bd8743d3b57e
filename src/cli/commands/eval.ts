import { Command, parse, printJson } from "../command.js";
import { UsageError } from "../../util/errors.js";
import { LlamaModel } from "../../model/llama.js";
import { perplexity } from "../../model/perplexity.js";
import { readTokenRows } from "../../quant/calibration.js";

const USAGE = `usage: gptq eval <model-dir> --tokens FILE [--key evaluation_tokens] [--act-quant none|int8] [--json]

Perplexity of a checkpoint (unquantized, or GPTQ v1/v2/Marlin run from its packed tensors) over every
next-token prediction of the token sequences in FILE (a safetensors int32/int64 [n, seqlen] tensor).

  --tokens FILE       token ids
  --key K             tensor name in FILE (default evaluation_tokens)
  --act-quant M       none (default): weights dequantized group by group, fp32 activations;
                      int8: A8W4 dynamic, activations quantized per token to int8 (4-bit symmetric weights)
  --json              print {"ppl", "tokens"} as JSON
`;

export const evalCommand: Command = {
  name: "eval",
  summary: "perplexity of a checkpoint on token sequences",
  usage: USAGE,
  run(argv) {
    const { values: v, positionals } = parse(argv, {
      tokens: { type: "string" },
      key: { type: "string" },
      "act-quant": { type: "string" },
      json: { type: "boolean" },
    });
    if (positionals.length !== 1) throw new UsageError("expected one <model-dir>");
    if (!v.tokens) throw new UsageError("--tokens FILE is required");
    const actQuant = v["act-quant"] ?? "none";
    if (actQuant !== "none" && actQuant !== "int8")
      throw new UsageError(`--act-quant must be none or int8, got "${actQuant}"`);
    const { rows } = readTokenRows(v.tokens, v.key ?? "evaluation_tokens");
    const t0 = Date.now();
    const model = LlamaModel.load(positionals[0], { actQuant });
    const { ppl, tokens } = perplexity(model, rows);
    if (v.json) printJson({ ppl, tokens });
    else
      process.stdout.write(
        `perplexity ${ppl.toFixed(3)} over ${tokens} predictions (${rows.length} sequences${actQuant === "int8" ? ", A8W4 int8 activations" : ""}) in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`,
      );
  },
};
