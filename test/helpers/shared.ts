/** Locates ../shared (reference fixtures and the stories260K model) beside the project root. */
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

// dist/test/helpers/shared.js -> project root is three levels up
export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const SHARED_DIR = process.env.GPTQ_SHARED_DIR ?? resolve(PROJECT_ROOT, "../shared");

export function sharedPath(...parts: string[]): string {
  return join(SHARED_DIR, ...parts);
}

/**
 * `false` when the file exists, else a skip reason (node:test prints it beside the skipped test, and
 * we also say it once on stderr so a missing reference is never silent).
 */
export function skipUnlessShared(...parts: string[]): string | false {
  const p = sharedPath(...parts);
  if (existsSync(p)) return false;
  const reason = `SKIPPED: reference data ${p} is absent (tests against ../shared need it)`;
  console.warn(reason);
  return reason;
}
