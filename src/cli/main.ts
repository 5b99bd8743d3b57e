#!/usr/bin/env node
/** `gptq`: one entry point, one file per command under commands/. */
import { COMMANDS } from "./commands/index.js";
import { EXIT_INTERNAL, internalError, reportError } from "./errors.js";

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length), 4);
  return [
    "gptq: GPTQ-family low-bit quantization toolkit",
    "",
    "usage: gptq <command> [options]      (gptq <command> --help for details)",
    "",
    "commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
  ].join("\n");
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(mainHelp() + "\n");
    return name ? 0 : 2;
  }
  if (name === "--version") {
    process.stdout.write("0.1.0\n");
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    process.stderr.write(`gptq: unknown command "${name}"\n\n${mainHelp()}\n`);
    return 2;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(cmd.usage.trimEnd() + "\n");
    return 0;
  }
  try {
    return (await cmd.run(rest)) ?? 0;
  } catch (e) {
    const r = reportError(name, cmd.usage, e);
    process.stderr.write(r.text);
    return r.code;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(internalError(e));
    process.exitCode = EXIT_INTERNAL;
  },
);
