/** The shape of one CLI command: thin wiring from parsed arguments to the library. */
import { parseArgs, ParseArgsConfig } from "node:util";
import { UsageError } from "../util/errors.js";

export interface Command {
  name: string;
  /** one line for `gptq --help` */
  summary: string;
  /** full help text shown by `gptq <name> --help` and after a usage error */
  usage: string;
  run(argv: string[]): Promise<number | void> | number | void;
}

export type Options = NonNullable<ParseArgsConfig["options"]>;

/** node:util parseArgs with usage errors turned into UsageError. */
export type Parsed<O extends Options> = ReturnType<
  typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>
>;

export function parse<O extends Options>(argv: string[], options: O): Parsed<O> {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export function intOption(value: string | undefined, name: string, fallback?: number): number | undefined {
  if (value === undefined) return fallback;
  if (!/^-?\d+$/.test(value)) throw new UsageError(`--${name} expects an integer, got "${value}"`);
  return Number(value);
}

/** A required comma-separated list option. */
export function listOption(value: string | undefined, name: string): string[] {
  if (value === undefined) throw new UsageError(`--${name} is required`);
  const items = value.split(",").map((s) => s.trim());
  if (items.some((s) => !s)) throw new UsageError(`--${name} has an empty item: "${value}"`);
  return items;
}

export function floatOption(value: string | undefined, name: string, fallback?: number): number | undefined {
  if (value === undefined) return fallback;
  const v = Number(value);
  if (value.trim() === "" || !Number.isFinite(v))
    throw new UsageError(`--${name} expects a number, got "${value}"`);
  return v;
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}
