import { Command, parse, printJson } from "../command.js";
import { UsageError } from "../../util/errors.js";
import { runDemo } from "../../pipeline/demo.js";

const USAGE = `usage: gptq demo [--keep] [--json]

Runs the main job on an embedded example, in seconds: writes a small synthetic Llama checkpoint with
LLM-like statistics (heavy weight columns, outlier activation channels) to a temporary directory,
quantizes it with RTN, GPTQ and fp-target GPTQ (4-bit, group 128, symmetric), evaluates each, converts
the GPTQ checkpoint to Marlin, checks it against every known kernel's rules and prints a short report.

  --keep    keep the temporary directory (its path is printed)
  --json    print the report as JSON
`;

export const demoCommand: Command = {
  name: "demo",
  summary: "quantize, evaluate, convert and check a small synthetic model (seconds)",
  usage: USAGE,
  async run(argv) {
    const { values, positionals } = parse(argv, { keep: { type: "boolean" }, json: { type: "boolean" } });
    if (positionals.length) throw new UsageError("demo takes no arguments");
    const r = await runDemo({ keep: values.keep, log: (l) => process.stderr.write(l + "\n") });
    if (values.json) return printJson(r);
    const fp = r.rows[0].ppl;
    const lines = [
      "",
      "perplexity on text the fp32 model would write (its next-token distributions as targets)",
      "",
      "model              perplexity    vs fp32   rel. output error",
    ];
    for (const row of r.rows) {
      const delta =
        row === r.rows[0] ? "" : `${row.ppl >= fp ? "+" : ""}${(((row.ppl - fp) / fp) * 100).toFixed(1)}%`;
      const err = row.relError !== undefined ? row.relError.toExponential(2) : "";
      lines.push(`${row.name.padEnd(18)} ${row.ppl.toFixed(3).padStart(10)}   ${delta.padStart(8)}   ${err}`);
    }
    lines.push("", "kernels accepting every layer of the GPTQ checkpoint:");
    const ok = Object.entries(r.kernels).filter(([, v]) => v.ok === v.layers);
    const no = Object.entries(r.kernels).filter(([, v]) => v.ok < v.layers);
    lines.push(`  ${ok.map(([k]) => k).join(", ") || "none"}`);
    if (no.length)
      lines.push(
        `  not: ${no.map(([k, v]) => `${k} (${v.ok}/${v.layers})`).join(", ")} (gptq check says why)`,
      );
    lines.push("", `done in ${r.seconds.toFixed(1)}s${values.keep ? `; files kept in ${r.dir}` : ""}`);
    process.stdout.write(lines.join("\n") + "\n");
  },
};
