// Markdown tables for benchmark reports: columns right-aligned when they hold numbers.

export type Cell = string | number;

/** Formats a number for a table: integers with thousands separators, others with `digits` significant digits. */
export function num(x: number, digits = 3): string {
  if (!Number.isFinite(x)) return '—';
  if (Number.isInteger(x) && Math.abs(x) >= 1) return x.toLocaleString('en-US');
  const abs = Math.abs(x);
  if (abs >= 100) return Math.round(x).toLocaleString('en-US');
  return Number(x.toPrecision(digits)).toString();
}

export function markdownTable(header: readonly string[], rows: readonly (readonly Cell[])[]): string {
  const text = rows.map((r) => r.map((c) => (typeof c === 'number' ? num(c) : c)));
  const numeric = header.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number' || r[i] === '—'));
  const width = header.map((h, i) => Math.max(h.length, 3, ...text.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => `| ${cells.map((c, i) => (numeric[i] ? c.padStart(width[i]!) : c.padEnd(width[i]!))).join(' | ')} |`;
  const rule = `|${width.map((w, i) => (numeric[i] ? `${'-'.repeat(w + 1)}:` : `${'-'.repeat(w + 2)}`)).join('|')}|`;
  return [line(header), rule, ...text.map(line)].join('\n');
}
