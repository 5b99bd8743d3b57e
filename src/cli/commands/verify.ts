import { Command, parse, printJson } from "../command.js";
import { ProgressBar, formatSeconds } from "../progress.js";
import { problemText, verifyCheckpoint } from "../../transform/verify.js";
import { UsageError } from "../../util/errors.js";

const usage = `usage: gptq verify <dir> [--json]

Reads every tensor of a checkpoint and checks what inspect (headers only) cannot: every float value
finite (scales, embeddings, norms, biases, lm_head, unquantized weights), every quantized layer
unpackable (zero points in range for the bit width, g_idx a valid group map with groupSize rows per
group, Marlin tiles decodable), the shards against model.safetensors.index.json (every named file
present, every named tensor in it), and the config against the tensors. Prints one line per problem
and exits 1 if there is any; otherwise one summary line, exit 0. Nothing is written. Memory: one layer,
or a 64 MiB piece of a tensor, at a time; a progress bar on a terminal.

options:
  --json   print one JSON document:
           {"ok", "tensors", "shards", "problems": [{"tensor"?, "layer"?, "problem"}]}

example:
  gptq verify ./Llama-2-7b-gptq
`;

export const verifyCommand: Command = {
  name: "verify",
  summary: "read every tensor of a checkpoint: finite values, valid packing, complete shards",
  usage,
  run(argv) {
    const { values, positionals } = parse(argv, { json: { type: "boolean" } });
    if (positionals.length !== 1) throw new UsageError("expected one checkpoint directory");
    const dir = positionals[0];
    const bar = new ProgressBar();
    const t0 = Date.now();
    let r;
    try {
      r = verifyCheckpoint(dir, {
        onProgress(done, total) {
          const elapsed = (Date.now() - t0) / 1000;
          const left = done > 0 ? (elapsed * (total - done)) / done : NaN;
          bar.update(
            total ? done / total : 1,
            `${(done / 2 ** 20).toFixed(0)} of ${(total / 2 ** 20).toFixed(0)} MiB  elapsed ${formatSeconds(elapsed)}  left ${formatSeconds(left)}`,
          );
        },
      });
    } finally {
      bar.done();
    }
    if (values.json) printJson(r);
    else if (r.ok)
      process.stdout.write(
        `${r.tensors} tensors in ${r.shards} shard${r.shards === 1 ? "" : "s"} checked: no problems\n`,
      );
    else for (const p of r.problems) process.stdout.write(`${problemText(p)}\n`);
    return r.ok ? 0 : 1;
  },
};
