/**
 * A tokenizer read from a Hugging Face `tokenizer.json`, enough to turn calibration text into token ids:
 * BPE models with byte-level pre-tokenization (GPT-2, Llama-3, Qwen) and SentencePiece-style BPE with
 * the `▁` metaspace and byte fallback (Llama-2, Mistral); added/special tokens; the post-processor's
 * BOS. Unsupported components are refused by name rather than silently mis-tokenized.
 */
import { existsSync, readFileSync } from "node:fs";
import { GptqError } from "../util/errors.js";

type Json = Record<string, unknown>;

/** GPT-2's pre-tokenization pattern (ByteLevel with use_regex). */
const GPT2_PATTERN = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;

/** GPT-2's reversible byte -> printable character table. */
function byteToUnicode(): string[] {
  const out: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    out[b] = String.fromCodePoint(printable ? b : 256 + extra++);
  }
  return out;
}
const BYTE_CHARS = byteToUnicode();

/**
 * JavaScript (Node 20) lacks inline modifier groups; Llama-3 and Qwen write `(?i:'s|'t|...)`. Rewrites
 * each such group with case-insensitive letters spelled out as classes.
 */
export function translatePattern(pattern: string): string {
  let out = "";
  let i = 0;
  while (i < pattern.length) {
    if (pattern.startsWith("(?i:", i)) {
      let depth = 1;
      let j = i + 4;
      let body = "";
      while (j < pattern.length && depth > 0) {
        const c = pattern[j];
        if (c === "\\") {
          body += pattern.slice(j, j + 2);
          j += 2;
          continue;
        }
        if (c === "(") depth++;
        if (c === ")") depth--;
        if (depth > 0) body += /[a-z]/i.test(c) ? `[${c.toLowerCase()}${c.toUpperCase()}]` : c;
        j++;
      }
      out += `(?:${body})`;
      i = j;
    } else if (pattern[i] === "\\") {
      out += pattern.slice(i, i + 2);
      i += 2;
    } else out += pattern[i++];
  }
  return out;
}

function regexOf(p: unknown, where: string): RegExp {
  const pat = p as { Regex?: string; String?: string } | undefined;
  if (pat?.Regex !== undefined) {
    try {
      return new RegExp(translatePattern(pat.Regex), "gu");
    } catch (e) {
      throw new GptqError(
        `${where}: cannot compile pattern ${JSON.stringify(pat.Regex)}: ${(e as Error).message}`,
      );
    }
  }
  if (pat?.String !== undefined) return new RegExp(pat.String.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "gu");
  throw new GptqError(`${where}: pattern must be {"Regex": ...} or {"String": ...}`);
}

/** Splits `text` by a pattern the way the `Split` pre-tokenizer's behaviours do. */
function splitBy(text: string, re: RegExp, behavior: string, invert: boolean): string[] {
  // Pieces tagged as match or not; `invert` swaps which are the delimiters.
  const pieces: { s: string; m: boolean }[] = [];
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m[0].length === 0) continue;
    if (m.index! > last) pieces.push({ s: text.slice(last, m.index), m: invert });
    pieces.push({ s: m[0], m: !invert });
    last = m.index! + m[0].length;
  }
  if (last < text.length) pieces.push({ s: text.slice(last), m: invert });
  const out: string[] = [];
  switch (behavior) {
    case "Isolated":
      return pieces.map((p) => p.s);
    case "Removed":
      return pieces.filter((p) => !p.m).map((p) => p.s);
    case "MergedWithPrevious":
      for (const p of pieces) {
        if (p.m && out.length) out[out.length - 1] += p.s;
        else out.push(p.s);
      }
      return out;
    case "MergedWithNext": {
      let pending = "";
      for (const p of pieces) {
        if (p.m) {
          if (pending) out.push(pending);
          pending = p.s;
        } else {
          out.push(pending + p.s);
          pending = "";
        }
      }
      if (pending) out.push(pending);
      return out;
    }
    case "Contiguous":
      for (let i = 0; i < pieces.length; i++) {
        if (i > 0 && pieces[i].m && pieces[i - 1].m) out[out.length - 1] += pieces[i].s;
        else out.push(pieces[i].s);
      }
      return out;
    default:
      throw new GptqError(`tokenizer.json: Split behavior "${behavior}" is not supported`);
  }
}

type Normalizer = (s: string) => string;
/** A pre-tokenizer maps words to words; `first` is true for the text before any added token. */
type PreTokenizer = (words: string[], first: boolean) => string[];

function buildNormalizer(n: unknown): Normalizer {
  if (n === null || n === undefined) return (s) => s;
  const j = n as Json;
  switch (j.type) {
    case "Sequence": {
      const parts = (j.normalizers as unknown[]).map(buildNormalizer);
      return (s) => parts.reduce((acc, f) => f(acc), s);
    }
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD": {
      const form = j.type;
      return (s) => s.normalize(form);
    }
    case "Lowercase":
      return (s) => s.toLowerCase();
    case "Prepend": {
      const p = String(j.prepend);
      return (s) => (s.length ? p + s : s);
    }
    case "Replace": {
      const re = regexOf(j.pattern, "tokenizer.json: Replace normalizer");
      const content = String(j.content);
      return (s) => s.replace(re, () => content);
    }
    case "Strip": {
      const left = j.strip_left !== false;
      const right = j.strip_right !== false;
      return (s) => {
        const t = left ? s.trimStart() : s;
        return right ? t.trimEnd() : t;
      };
    }
    default:
      throw new GptqError(`tokenizer.json: normalizer "${String(j.type)}" is not supported`);
  }
}

function buildPreTokenizer(p: unknown): { run: PreTokenizer; byteLevel: boolean } {
  if (p === null || p === undefined) return { run: (w) => w, byteLevel: false };
  const j = p as Json;
  switch (j.type) {
    case "Sequence": {
      const parts = (j.pretokenizers as unknown[]).map(buildPreTokenizer);
      return {
        run: (w, first) => parts.reduce((acc, part) => part.run(acc, first), w),
        byteLevel: parts.some((x) => x.byteLevel),
      };
    }
    case "ByteLevel": {
      const re = j.use_regex === false ? undefined : new RegExp(GPT2_PATTERN, "gu");
      const prefix = j.add_prefix_space === true;
      const enc = new TextEncoder();
      return {
        byteLevel: true,
        run: (words) =>
          words.flatMap((w) => {
            const text = prefix && !w.startsWith(" ") ? " " + w : w;
            const parts = re ? splitBy(text, re, "Isolated", false) : [text];
            return parts.map((s) => Array.from(enc.encode(s), (b) => BYTE_CHARS[b]).join(""));
          }),
      };
    }
    case "Split": {
      const re = regexOf(j.pattern, "tokenizer.json: Split pre-tokenizer");
      const behavior = String(j.behavior);
      const invert = j.invert === true;
      return { byteLevel: false, run: (w) => w.flatMap((s) => splitBy(s, re, behavior, invert)) };
    }
    case "Metaspace": {
      const rep = String(j.replacement ?? "▁");
      // Older files say add_prefix_space; newer ones prepend_scheme ("always" | "first" | "never").
      const scheme = String(j.prepend_scheme ?? (j.add_prefix_space === false ? "never" : "always"));
      const split = j.split !== false;
      const sepRe = new RegExp(rep.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "gu");
      return {
        byteLevel: false,
        run: (words, first) =>
          words.flatMap((w, i) => {
            let s = w.replace(/ /g, rep);
            const prepend = scheme === "always" || (scheme === "first" && first && i === 0);
            if (prepend && !s.startsWith(rep)) s = rep + s;
            return split ? splitBy(s, sepRe, "MergedWithNext", false) : [s];
          }),
      };
    }
    case "Digits": {
      const re = j.individual_digits === true ? /\p{N}/gu : /\p{N}+/gu;
      return { byteLevel: false, run: (w) => w.flatMap((s) => splitBy(s, re, "Isolated", false)) };
    }
    case "WhitespaceSplit":
      return { byteLevel: false, run: (w) => w.flatMap((s) => s.split(/\s+/u).filter((x) => x.length)) };
    case "Whitespace":
      return { byteLevel: false, run: (w) => w.flatMap((s) => s.match(/\w+|[^\w\s]+/gu) ?? []) };
    default:
      throw new GptqError(`tokenizer.json: pre-tokenizer "${String(j.type)}" is not supported`);
  }
}

/** A decoder step maps the list of token strings to another (as the `decoders` of tokenizers do). */
type DecodeStep = (tokens: string[]) => string[];

const BYTE_OF_CHAR = new Map(BYTE_CHARS.map((c, b) => [c, b]));
const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;

/** UTF-8 bytes to text, an invalid sequence becoming U+FFFD as the tokenizers library does */
const utf8 = (bytes: number[]) => new TextDecoder().decode(Uint8Array.from(bytes));

function buildDecoder(d: unknown, source: string): DecodeStep {
  if (d === null || d === undefined) return (t) => [t.join("")];
  const j = d as Json;
  switch (j.type) {
    case "Sequence": {
      const steps = (j.decoders as unknown[]).map((x) => buildDecoder(x, source));
      return (t) => steps.reduce((acc, step) => step(acc), t);
    }
    case "ByteLevel":
      // every token's characters back to the bytes they stand for, the whole text decoded at once
      return (t) => [utf8(Array.from(t.join(""), (c) => BYTE_OF_CHAR.get(c) ?? 0x3f))];
    case "Replace": {
      const re = regexOf(j.pattern, `${source}: Replace decoder`);
      const content = String(j.content);
      return (t) => t.map((s) => s.replace(re, () => content));
    }
    case "ByteFallback":
      // runs of <0xNN> tokens become the text their bytes spell
      return (t) => {
        const out: string[] = [];
        let bytes: number[] = [];
        const flush = () => {
          if (bytes.length) out.push(utf8(bytes));
          bytes = [];
        };
        for (const s of t) {
          const m = BYTE_TOKEN.exec(s);
          if (m) bytes.push(parseInt(m[1], 16));
          else {
            flush();
            out.push(s);
          }
        }
        flush();
        return out;
      };
    case "Fuse":
      return (t) => [t.join("")];
    case "Strip": {
      const content = String(j.content);
      const start = Number(j.start ?? 0);
      const stop = Number(j.stop ?? 0);
      return (t) =>
        t.map((s) => {
          let a = 0;
          let b = s.length;
          for (let i = 0; i < start && s.startsWith(content, a); i++) a += content.length;
          for (let i = 0; i < stop && b - content.length >= a && s.endsWith(content, b); i++)
            b -= content.length;
          return s.slice(a, b);
        });
    }
    case "Metaspace": {
      const rep = String(j.replacement ?? "▁");
      const scheme = String(j.prepend_scheme ?? (j.add_prefix_space === false ? "never" : "always"));
      return (t) =>
        t.map((s, i) => {
          const r = s.split(rep).join(" ");
          return i === 0 && scheme !== "never" && r.startsWith(" ") ? r.slice(1) : r;
        });
    }
    default:
      throw new GptqError(`${source}: decoder "${String(j.type)}" is not supported`);
  }
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  lstrip: boolean;
  rstrip: boolean;
}

function pairKey(a: string, b: string): string {
  return `${a.length}:${a}${b}`;
}

export class Tokenizer {
  private readonly vocab = new Map<string, number>();
  private readonly ranks = new Map<string, number>();
  private readonly added: AddedToken[];
  private readonly addedRe: RegExp | undefined;
  private readonly normalize: Normalizer;
  private readonly preTokenize: PreTokenizer;
  private readonly byteFallback: boolean;
  private readonly unkId: number | undefined;
  private readonly fuseUnk: boolean;
  private readonly ignoreMerges: boolean;
  private readonly cache = new Map<string, number[]>();
  private readonly tokens = new Map<number, string>();
  /** the decoder section, built on first use (encoding does not need it) */
  private readonly decoderJson: unknown;
  /** token ids the post-processor puts before a single sequence (BOS), and after it (EOS) */
  readonly prefixIds: number[];
  readonly suffixIds: number[];

  constructor(
    json: unknown,
    readonly source = "tokenizer.json",
  ) {
    const j = json as Json;
    const model = j.model as Json | undefined;
    if (!model || typeof model !== "object") throw new GptqError(`${source}: no "model" object`);
    const type = model.type ?? (model.merges ? "BPE" : undefined);
    if (type !== "BPE")
      throw new GptqError(
        `${source}: tokenizer model "${String(type)}" is not supported (BPE only); pass calibration token ids with --calib FILE.safetensors`,
      );
    if (model.continuing_subword_prefix || model.end_of_word_suffix)
      throw new GptqError(`${source}: BPE continuing_subword_prefix / end_of_word_suffix are not supported`);
    for (const [tok, id] of Object.entries(model.vocab as Record<string, number>)) this.vocab.set(tok, id);
    const merges = (model.merges ?? []) as (string | [string, string])[];
    merges.forEach((m, rank) => {
      let a: string, b: string;
      if (Array.isArray(m)) [a, b] = m;
      else {
        const sp = m.indexOf(" ", 1);
        if (sp < 0) throw new GptqError(`${source}: merge ${JSON.stringify(m)} is not "a b"`);
        a = m.slice(0, sp);
        b = m.slice(sp + 1);
      }
      if (!this.vocab.has(a + b))
        throw new GptqError(
          `${source}: merge ${JSON.stringify(m)} makes "${a + b}", which is not in the vocab`,
        );
      const key = pairKey(a, b);
      if (!this.ranks.has(key)) this.ranks.set(key, rank);
    });
    this.byteFallback = model.byte_fallback === true;
    this.fuseUnk = model.fuse_unk === true;
    this.ignoreMerges = model.ignore_merges === true;
    const unk = model.unk_token as string | null | undefined;
    this.unkId = unk != null ? this.vocab.get(unk) : undefined;

    this.added = ((j.added_tokens ?? []) as Json[]).map((t) => ({
      id: Number(t.id),
      content: String(t.content),
      special: t.special === true,
      lstrip: t.lstrip === true,
      rstrip: t.rstrip === true,
    }));
    for (const t of this.added) if (!this.vocab.has(t.content)) this.vocab.set(t.content, t.id);
    // Longest first, so "<|end|>" wins over a token that is its prefix.
    const contents = [...this.added].sort((x, y) => y.content.length - x.content.length);
    this.addedRe = contents.length
      ? new RegExp(contents.map((t) => t.content.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|"), "gu")
      : undefined;

    for (const [tok, id] of this.vocab) this.tokens.set(id, tok);
    this.decoderJson = j.decoder;
    this.normalize = buildNormalizer(j.normalizer);
    this.preTokenize = buildPreTokenizer(j.pre_tokenizer).run;
    const { prefix, suffix } = this.postProcessorIds(j.post_processor);
    this.prefixIds = prefix;
    this.suffixIds = suffix;
  }

  static fromFile(path: string): Tokenizer {
    if (!existsSync(path)) throw new GptqError(`${path}: no such file`);
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(path, "utf8"));
    } catch (e) {
      throw new GptqError(`${path}: not valid JSON: ${(e as Error).message}`);
    }
    return new Tokenizer(json, path);
  }

  get vocabSize(): number {
    let max = -1;
    for (const id of this.vocab.values()) if (id > max) max = id;
    return max + 1;
  }

  tokenId(token: string): number | undefined {
    return this.vocab.get(token);
  }

  /** Token ids of `text`; with `addSpecialTokens`, the post-processor's BOS/EOS around them. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    const ids: number[] = [];
    let first = true;
    for (const seg of this.splitAdded(text)) {
      if (typeof seg === "number") ids.push(seg);
      else if (seg.length) {
        const words = this.preTokenize([this.normalize(seg)], first);
        for (const w of words) if (w.length) for (const id of this.bpe(w)) ids.push(id);
      }
      first = false;
    }
    return opts.addSpecialTokens ? [...this.prefixIds, ...ids, ...this.suffixIds] : ids;
  }

  /**
   * The text of token ids, through the file's decoder; special added tokens are left out with
   * `skipSpecialTokens`. decode(encode(text)) is text for what the tokenizer's normalizer keeps.
   */
  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    const special = new Set(this.added.filter((t) => t.special).map((t) => t.id));
    const pieces: string[] = [];
    for (const id of ids) {
      const tok = this.tokens.get(id);
      if (tok === undefined) throw new GptqError(`${this.source}: token id ${id} is not in the vocabulary`);
      if (!(opts.skipSpecialTokens && special.has(id))) pieces.push(tok);
    }
    return buildDecoder(this.decoderJson, this.source)(pieces).join("");
  }

  /** Text split around added tokens: strings to tokenize, numbers for the added tokens' ids. */
  private splitAdded(text: string): (string | number)[] {
    if (!this.addedRe) return [text];
    const out: (string | number)[] = [];
    let last = 0;
    for (const m of text.matchAll(this.addedRe)) {
      const tok = this.added.find((t) => t.content === m[0])!;
      let before = text.slice(last, m.index);
      if (tok.lstrip) before = before.trimEnd();
      out.push(before, tok.id);
      last = m.index! + m[0].length;
      if (tok.rstrip) while (last < text.length && /\s/u.test(text[last])) last++;
    }
    out.push(text.slice(last));
    return out;
  }

  /** Byte-pair encoding of one pre-tokenized word: merge the lowest-ranked adjacent pair until none. */
  private bpe(word: string): number[] {
    const cached = this.cache.get(word);
    if (cached) return cached;
    let ids: number[];
    const whole = this.vocab.get(word);
    if (this.ignoreMerges && whole !== undefined) ids = [whole];
    else {
      const sym = Array.from(word);
      for (;;) {
        let best = -1;
        let bestRank = Infinity;
        for (let i = 0; i + 1 < sym.length; i++) {
          const r = this.ranks.get(pairKey(sym[i], sym[i + 1]));
          if (r !== undefined && r < bestRank) {
            bestRank = r;
            best = i;
          }
        }
        if (best < 0) break;
        sym.splice(best, 2, sym[best] + sym[best + 1]);
      }
      ids = [];
      let lastUnk = false;
      for (const s of sym) {
        const id = this.vocab.get(s);
        if (id !== undefined) {
          ids.push(id);
          lastUnk = false;
          continue;
        }
        const bytes = this.byteFallback ? this.byteIds(s) : undefined;
        if (bytes) {
          ids.push(...bytes);
          lastUnk = false;
          continue;
        }
        if (this.unkId === undefined)
          throw new GptqError(
            `${this.source}: ${JSON.stringify(s)} is not in the vocabulary and the tokenizer has no unk token`,
          );
        if (!(this.fuseUnk && lastUnk)) ids.push(this.unkId);
        lastUnk = true;
      }
    }
    if (this.cache.size < 1 << 16) this.cache.set(word, ids);
    return ids;
  }

  private byteIds(s: string): number[] | undefined {
    const out: number[] = [];
    for (const b of new TextEncoder().encode(s)) {
      const id = this.vocab.get(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
      if (id === undefined) return undefined;
      out.push(id);
    }
    return out;
  }

  private postProcessorIds(p: unknown): { prefix: number[]; suffix: number[] } {
    const none = { prefix: [], suffix: [] };
    if (p === null || p === undefined) return none;
    const j = p as Json;
    switch (j.type) {
      case "Sequence": {
        const all = ((j.processors ?? []) as unknown[]).map((x) => this.postProcessorIds(x));
        return { prefix: all.flatMap((x) => x.prefix), suffix: all.flatMap((x) => x.suffix) };
      }
      case "TemplateProcessing": {
        const specials = (j.special_tokens ?? {}) as Record<string, { ids: number[] }>;
        const prefix: number[] = [];
        const suffix: number[] = [];
        let seen = false;
        for (const piece of (j.single ?? []) as Json[]) {
          if (piece.Sequence) seen = true;
          const sp = piece.SpecialToken as { id: string } | undefined;
          if (!sp) continue;
          const ids = specials[sp.id]?.ids ?? [this.vocab.get(sp.id)];
          if (ids.some((x) => x === undefined))
            throw new GptqError(`${this.source}: post-processor token "${sp.id}" has no id`);
          (seen ? suffix : prefix).push(...(ids as number[]));
        }
        return { prefix, suffix };
      }
      case "BertProcessing":
      case "RobertaProcessing": {
        const cls = j.cls as [string, number];
        const sep = j.sep as [string, number];
        return { prefix: [cls[1]], suffix: [sep[1]] };
      }
      case "ByteLevel":
        return none;
      default:
        throw new GptqError(`${this.source}: post-processor "${String(j.type)}" is not supported`);
    }
  }
}
