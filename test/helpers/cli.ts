/** Runs the built `gptq` CLI as a user would, capturing exit code and both streams. */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { PROJECT_ROOT } from "./shared.js";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function gptq(...args: string[]): CliResult {
  const r = spawnSync(process.execPath, [join(PROJECT_ROOT, "dist/src/cli/main.js"), ...args], {
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** One error line on stderr, nothing else, and the expected exit code. */
export function assertOneLineError(r: CliResult, code: number): string {
  if (r.code !== code) throw new Error(`exit ${r.code}, expected ${code}; stderr: ${r.stderr}`);
  const lines = r.stderr.split("\n").filter((l) => l.length);
  if (lines.length !== 1) throw new Error(`expected one line on stderr, got ${lines.length}: ${r.stderr}`);
  return lines[0];
}
