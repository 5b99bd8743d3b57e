/** The shape of one CLI command: thin wiring from parsed arguments to the library. */
import { parseArgs, ParseArgsConfig } from "node:util";
import { setThreads } from "../backend/cpu/pool.js";
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

/**
 * node:util parseArgs with usage errors turned into UsageError. A negative number after a string
 * option is that option's value (`--group-size -1`), not an unknown short option as parseArgs reads
 * it; whether the option allows it is up to the command (intOption's `min`, groupSizeOption).
 */
export function parse<O extends Options>(argv: string[], options: O): Parsed<O> {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") {
      args.push(...argv.slice(i));
      break;
    }
    const next = argv[i + 1];
    const name = a.startsWith("--") && !a.includes("=") ? a.slice(2) : undefined;
    if (name !== undefined && options[name]?.type === "string" && next !== undefined && NEGATIVE.test(next)) {
      args.push(`${a}=${next}`);
      i++;
    } else args.push(a);
  }
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    const message = (e as Error).message;
    if ((e as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION")
      throw new UnknownOptionError(message, Object.keys(options));
    throw new UsageError(message);
  }
}

/** An option the command does not take; `known` lists those it does (what its --help must describe). */
export class UnknownOptionError extends UsageError {
  constructor(
    message: string,
    readonly known: string[],
  ) {
    super(message);
  }
}

/** "-1", "-0.5", "-1,2": a value, never an option (no option name starts with a digit or a dot) */
const NEGATIVE = /^-[\d.]/;

/** An integer option, at least `min` when given (a usage error otherwise). */
export function intOption(
  value: string | undefined,
  name: string,
  fallback?: number,
  min?: number,
): number | undefined {
  if (value === undefined) return fallback;
  if (!/^-?\d+$/.test(value)) throw new UsageError(`--${name} expects an integer, got "${value}"`);
  const v = Number(value);
  if (min !== undefined && v < min) throw new UsageError(`--${name} must be at least ${min}, got ${value}`);
  return v;
}

/** `--threads N`: threads for the CPU's dense work from now on (default: every core). */
export function threadsOption(value: string | undefined): void {
  const n = intOption(value, "threads", undefined, 1);
  if (n !== undefined) setThreads(n);
}

/** A group size: a positive number of input rows, or -1 for one group over all of them. */
export function groupSizeOption(
  value: string | undefined,
  name: string,
  fallback?: number,
): number | undefined {
  const v = intOption(value, name, fallback);
  if (v !== undefined && v !== -1 && v < 1)
    throw new UsageError(
      `--${name} must be a positive number of input rows, or -1 for one group, got ${value}`,
    );
  return v;
}

/** A required comma-separated list option. */
export function listOption(value: string | undefined, name: string): string[] {
  if (value === undefined) throw new UsageError(`--${name} is required`);
  const items = value.split(",").map((s) => s.trim());
  if (items.some((s) => !s)) throw new UsageError(`--${name} has an empty item: "${value}"`);
  return items;
}

/** A finite number option, at least `min` when given (a usage error otherwise). */
export function floatOption(
  value: string | undefined,
  name: string,
  fallback?: number,
  min?: number,
): number | undefined {
  if (value === undefined) return fallback;
  const v = Number(value);
  if (value.trim() === "" || !Number.isFinite(v))
    throw new UsageError(`--${name} expects a number, got "${value}"`);
  if (min !== undefined && v < min) throw new UsageError(`--${name} must be at least ${min}, got ${value}`);
  return v;
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}
