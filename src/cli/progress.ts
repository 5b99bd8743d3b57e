/** A one-line progress bar on stderr (redrawn in place on a terminal, silent otherwise) and log lines above it. */

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return "--";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  return m < 60
    ? `${m}m${String(Math.round(s % 60)).padStart(2, "0")}s`
    : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

export class ProgressBar {
  private line = "";
  constructor(
    private readonly out: NodeJS.WriteStream = process.stderr,
    private readonly live = Boolean(process.stderr.isTTY),
  ) {}

  /** Redraws the bar: `fraction` done, `label` after it. */
  update(fraction: number, label: string): void {
    if (!this.live) return;
    const width = 24;
    const filled = Math.round(Math.min(1, Math.max(0, fraction)) * width);
    this.line = `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ${label}`;
    this.out.write(`\r\x1b[K${this.line}`);
  }

  /** Prints a line above the bar. */
  log(text: string): void {
    if (this.live) this.out.write(`\r\x1b[K${text}\n${this.line}`);
    else this.out.write(text + "\n");
  }

  done(): void {
    if (this.live && this.line) this.out.write("\r\x1b[K");
    this.line = "";
  }
}
