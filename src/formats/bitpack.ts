/**
 * Little-endian bit streams of b-bit values in int32 words, as GPTQ stores them: value i of a stream sits
 * at bit b·i of the stream, so for b = 3 some values straddle two words (REFERENCE.md). Streams run along
 * the rows of a matrix (`qweight`, one stream per column) or along its columns (`qzeros`, one per row).
 * Callers check the shapes (see `packUnit`); these loops assume them and allocate nothing per element.
 */

/** How many values a whole number of words holds: 32 / b for b = 2, 4, 8; 32 (3 words) for b = 3. */
export function packUnit(bits: number): number {
  return bits === 3 ? 32 : 32 / bits;
}

/** Packs a rows x cols matrix of values along its rows into a (rows·b/32) x cols word matrix. */
export function packRows(
  values: Uint8Array,
  rows: number,
  cols: number,
  bits: number,
  out = new Int32Array((rows * bits * cols) / 32),
): Int32Array {
  if (bits === 3) {
    out.fill(0);
    for (let r = 0; r < rows; r++) {
      const bit = r * 3;
      const shift = bit & 31;
      const dst = (bit >>> 5) * cols;
      const src = r * cols;
      if (shift <= 29) {
        for (let c = 0; c < cols; c++) out[dst + c] |= values[src + c] << shift;
      } else {
        const high = 32 - shift; // the value's bits that spill into the next word start here
        const dst2 = dst + cols;
        for (let c = 0; c < cols; c++) {
          const v = values[src + c];
          out[dst + c] |= v << shift;
          out[dst2 + c] |= v >>> high;
        }
      }
    }
    return out;
  }
  const words = (rows * bits) / 32;
  if (cols % 4 === 0 && values.byteOffset % 4 === 0) return packRowsByWords(values, rows, cols, bits, out);
  // 2, 4 and 8 bits unrolled: each output word is one expression over its rows' values
  if (bits === 4)
    for (let w = 0; w < words; w++) {
      const s = w * 8 * cols;
      const d = w * cols;
      for (let c = 0; c < cols; c++) {
        const i = s + c;
        out[d + c] =
          values[i] |
          (values[i + cols] << 4) |
          (values[i + 2 * cols] << 8) |
          (values[i + 3 * cols] << 12) |
          (values[i + 4 * cols] << 16) |
          (values[i + 5 * cols] << 20) |
          (values[i + 6 * cols] << 24) |
          (values[i + 7 * cols] << 28);
      }
    }
  else if (bits === 8)
    for (let w = 0; w < words; w++) {
      const s = w * 4 * cols;
      const d = w * cols;
      for (let c = 0; c < cols; c++) {
        const i = s + c;
        out[d + c] =
          values[i] | (values[i + cols] << 8) | (values[i + 2 * cols] << 16) | (values[i + 3 * cols] << 24);
      }
    }
  else
    for (let w = 0; w < words; w++) {
      // 2 bits: two passes of eight rows keep the expression short
      const d = w * cols;
      for (let half = 0; half < 2; half++) {
        const s = (w * 16 + half * 8) * cols;
        const sh = half * 16;
        for (let c = 0; c < cols; c++) {
          const i = s + c;
          const v =
            values[i] |
            (values[i + cols] << 2) |
            (values[i + 2 * cols] << 4) |
            (values[i + 3 * cols] << 6) |
            (values[i + 4 * cols] << 8) |
            (values[i + 5 * cols] << 10) |
            (values[i + 6 * cols] << 12) |
            (values[i + 7 * cols] << 14);
          out[d + c] = half ? out[d + c] | (v << sh) : v;
        }
      }
    }
  return out;
}

/**
 * `packRows` at 2, 4 or 8 bits, four columns a step: the values are read four bytes (columns) at a time,
 * the 8 / b rows that share an output byte are merged into one word (byte j for column j), and a 4x4 byte
 * transpose of the four merged words gives the four columns' output words (`putColumns`): 2.4x (2, 8 bits)
 * to 3.7x (4 bits) the byte-at-a-time loop (a 7B model's weights are 6.5 billion codes).
 */
function packRowsByWords(
  values: Uint8Array,
  rows: number,
  cols: number,
  bits: number,
  out: Int32Array,
): Int32Array {
  const v = new Uint32Array(values.buffer, values.byteOffset, (rows * cols) >>> 2);
  const q = cols >>> 2; // 32-bit words per row of values
  const rowsPerWord = 32 / bits;
  const step = (8 / bits) * q; // from one output byte's rows to the next's
  for (let w = 0; w < rows / rowsPerWord; w++) {
    const s = w * rowsPerWord * q;
    let d = w * cols;
    // one loop per width, so each merge is inline
    if (bits === 4)
      for (let i = s; i < s + q; i++, d += 4)
        putColumns(
          out,
          d,
          v[i] | (v[i + q] << 4),
          v[i + step] | (v[i + step + q] << 4),
          v[i + 2 * step] | (v[i + 2 * step + q] << 4),
          v[i + 3 * step] | (v[i + 3 * step + q] << 4),
        );
    else if (bits === 8)
      for (let i = s; i < s + q; i++, d += 4) putColumns(out, d, v[i], v[i + q], v[i + 2 * q], v[i + 3 * q]);
    else
      for (let i = s; i < s + q; i++, d += 4) {
        const m = (j: number) => v[j] | (v[j + q] << 2) | (v[j + 2 * q] << 4) | (v[j + 3 * q] << 6);
        putColumns(out, d, m(i), m(i + step), m(i + 2 * step), m(i + 3 * step));
      }
  }
  return out;
}

/** out[d + j] = byte j of b0 | byte j of b1 << 8 | byte j of b2 << 16 | byte j of b3 << 24, j < 4. */
function putColumns(out: Int32Array, d: number, b0: number, b1: number, b2: number, b3: number): void {
  // bytes (b0, b1) of columns 0 and 2, then 1 and 3; likewise (b2, b3)
  const lo02 = (b0 & 0x00ff00ff) | ((b1 & 0x00ff00ff) << 8);
  const lo13 = ((b0 >>> 8) & 0x00ff00ff) | (b1 & 0xff00ff00);
  const hi02 = (b2 & 0x00ff00ff) | ((b3 & 0x00ff00ff) << 8);
  const hi13 = ((b2 >>> 8) & 0x00ff00ff) | (b3 & 0xff00ff00);
  out[d] = (lo02 & 0xffff) | (hi02 << 16);
  out[d + 1] = (lo13 & 0xffff) | (hi13 << 16);
  out[d + 2] = (lo02 >>> 16) | (hi02 & 0xffff0000);
  out[d + 3] = (lo13 >>> 16) | (hi13 & 0xffff0000);
}

/** Inverse of `packRows`. */
export function unpackRows(
  words: Int32Array,
  rows: number,
  cols: number,
  bits: number,
  out = new Uint8Array(rows * cols),
): Uint8Array {
  const mask = (1 << bits) - 1;
  if (bits === 4) {
    const nw = rows / 8;
    for (let w = 0; w < nw; w++) {
      const s = w * cols;
      const d = w * 8 * cols;
      for (let c = 0; c < cols; c++) {
        const x = words[s + c];
        const i = d + c;
        out[i] = x & 15;
        out[i + cols] = (x >>> 4) & 15;
        out[i + 2 * cols] = (x >>> 8) & 15;
        out[i + 3 * cols] = (x >>> 12) & 15;
        out[i + 4 * cols] = (x >>> 16) & 15;
        out[i + 5 * cols] = (x >>> 20) & 15;
        out[i + 6 * cols] = (x >>> 24) & 15;
        out[i + 7 * cols] = x >>> 28;
      }
    }
    return out;
  }
  if (bits === 8) {
    const nw = rows / 4;
    for (let w = 0; w < nw; w++) {
      const s = w * cols;
      const d = w * 4 * cols;
      for (let c = 0; c < cols; c++) {
        const x = words[s + c];
        const i = d + c;
        out[i] = x & 255;
        out[i + cols] = (x >>> 8) & 255;
        out[i + 2 * cols] = (x >>> 16) & 255;
        out[i + 3 * cols] = x >>> 24;
      }
    }
    return out;
  }
  for (let r = 0; r < rows; r++) {
    const bit = r * bits;
    const shift = bit & 31;
    const src = (bit >>> 5) * cols;
    const dst = r * cols;
    if (shift + bits <= 32) {
      for (let c = 0; c < cols; c++) out[dst + c] = (words[src + c] >>> shift) & mask;
    } else {
      const high = 32 - shift;
      const src2 = src + cols;
      for (let c = 0; c < cols; c++)
        out[dst + c] = ((words[src + c] >>> shift) | (words[src2 + c] << high)) & mask;
    }
  }
  return out;
}

/** Packs a rows x cols matrix along its columns into a rows x (cols·b/32) word matrix. */
export function packCols(
  values: Uint8Array,
  rows: number,
  cols: number,
  bits: number,
  out = new Int32Array((rows * cols * bits) / 32),
): Int32Array {
  const wpr = (cols * bits) / 32;
  out.fill(0);
  for (let r = 0; r < rows; r++) {
    const src = r * cols;
    const dst = r * wpr;
    for (let c = 0; c < cols; c++) {
      const bit = c * bits;
      const shift = bit & 31;
      const w = dst + (bit >>> 5);
      const v = values[src + c];
      out[w] |= v << shift;
      if (shift + bits > 32) out[w + 1] |= v >>> (32 - shift);
    }
  }
  return out;
}

/** Inverse of `packCols`. */
export function unpackCols(
  words: Int32Array,
  rows: number,
  cols: number,
  bits: number,
  out = new Uint8Array(rows * cols),
): Uint8Array {
  const wpr = (cols * bits) / 32;
  const mask = (1 << bits) - 1;
  for (let r = 0; r < rows; r++) {
    const src = r * wpr;
    const dst = r * cols;
    for (let c = 0; c < cols; c++) {
      const bit = c * bits;
      const shift = bit & 31;
      const w = src + (bit >>> 5);
      let v = words[w] >>> shift;
      if (shift + bits > 32) v |= words[w + 1] << (32 - shift);
      out[dst + c] = v & mask;
    }
  }
  return out;
}

/** Index of the first value >= 2^bits, or -1 (a value that wide would spill into its neighbours). */
export function firstOutOfRange(values: Uint8Array, bits: number): number {
  if (bits >= 8) return -1;
  const bad = 0xff & ~((1 << bits) - 1);
  // four values per step where the bytes are aligned
  const head = (4 - (values.byteOffset & 3)) & 3;
  const n4 = values.length > head ? (values.length - head) >>> 2 : 0;
  const wide = new Uint32Array(values.buffer, values.byteOffset + head, n4);
  const bad4 = (bad * 0x01010101) >>> 0;
  for (let i = 0; i < Math.min(head, values.length); i++) if (values[i] & bad) return i;
  let from = head + 4 * n4;
  for (let i = 0; i < n4; i++)
    if (wide[i] & bad4) {
      from = head + 4 * i;
      break;
    }
  for (let i = from; i < values.length; i++) if (values[i] & bad) return i;
  return -1;
}
