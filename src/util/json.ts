import { GptqError } from "./errors.js";

/**
 * A strict JSON parser that, unlike JSON.parse, rejects duplicate object keys (a safetensors header with
 * two tensors of one name is malformed, and JSON.parse would silently keep the last).
 */
export function parseJsonStrict(text: string, what: string): unknown {
  let i = 0;
  const err = (msg: string): never => {
    throw new GptqError(`${what}: invalid JSON at byte ${i}: ${msg}`);
  };
  const ws = () => {
    while (i < text.length) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
  };
  const str = (): string => {
    // Find the closing quote, then let JSON.parse decode escapes of this one string.
    const start = i;
    i++;
    while (i < text.length) {
      const c = text.charCodeAt(i);
      if (c === 0x5c) i += 2;
      else if (c === 0x22) break;
      else if (c < 0x20) err("control character in string");
      else i++;
    }
    if (i >= text.length) err("unterminated string");
    i++;
    try {
      return JSON.parse(text.slice(start, i)) as string;
    } catch {
      return err("bad string escape");
    }
  };
  const value = (depth: number): unknown => {
    if (depth > 64) err("nested too deeply");
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const obj: Record<string, unknown> = Object.create(null);
      const seen = new Set<string>();
      ws();
      if (text[i] === "}") {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') err("expected a key");
        const k = str();
        if (seen.has(k)) err(`duplicate key "${k}"`);
        seen.add(k);
        ws();
        if (text[i] !== ":") err("expected ':'");
        i++;
        obj[k] = value(depth + 1);
        ws();
        if (text[i] === ",") i++;
        else if (text[i] === "}") {
          i++;
          return obj;
        } else err("expected ',' or '}'");
      }
    }
    if (c === "[") {
      i++;
      const arr: unknown[] = [];
      ws();
      if (text[i] === "]") {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[i] === ",") i++;
        else if (text[i] === "]") {
          i++;
          return arr;
        } else err("expected ',' or ']'");
      }
    }
    if (c === '"') return str();
    const m = /^(-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i, i + 400));
    if (!m) return err("unexpected character");
    i += m[0].length;
    return JSON.parse(m[0]) as unknown;
  };
  const v = value(0);
  ws();
  if (i !== text.length) err("trailing characters");
  return v;
}
