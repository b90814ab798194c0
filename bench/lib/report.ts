// Where benchmark reports go: bench/results/<name>.md (the tables, with the machine they ran on) and
// bench/results/<name>*.svg (plots drawn with src/util/svg-plot.ts), both committed.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { linePlot, type PlotOptions, type Series } from '../../src/util/svg-plot.ts';

export const resultsDir = fileURLToPath(new URL('../results/', import.meta.url));

/** One line naming the machine and runtime, printed under every report. */
export function machineLine(): string {
  const c = cpus();
  return `${c.length} × ${c[0]?.model.trim() ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`;
}

export interface OutputOptions {
  /** Directory for the report (default bench/results); tests point it at a temp dir. */
  dir?: string;
}

export function writeResult(file: string, text: string, opts: OutputOptions = {}): string {
  const dir = opts.dir || resultsDir;
  mkdirSync(dir, { recursive: true });
  const path = join(dir, file);
  writeFileSync(path, text.endsWith('\n') ? text : `${text}\n`);
  return path;
}

export function writePlot(file: string, series: Series[], options: PlotOptions, opts: OutputOptions = {}): string {
  return writeResult(file, linePlot(series, options), opts);
}

/** Writes bench/results/<name>.md: a title, what was measured, the tables and the machine line. */
export function writeReport(name: string, title: string, sections: string[], opts: OutputOptions = {}): string {
  return writeResult(`${name}.md`, [`# ${title}`, '', ...sections.flatMap((s) => [s, '']), `_${machineLine()}_`].join('\n'), opts);
}
