/**
 * A problem with the user's input or request (bad file, unsupported shape, impossible conversion).
 * The CLI prints its message as one line and exits 1; anything else is a bug and shows a stack.
 */
export class GptqError extends Error {
  override name = "GptqError";
}

/** A malformed command line: the CLI prints the message and the command's usage, and exits 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

export function fail(message: string): never {
  throw new GptqError(message);
}
