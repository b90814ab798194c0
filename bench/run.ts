// `npm run bench`: every benchmark end to end, one after another, each in its own process.
//
//   npm run bench                 all of them
//   npm run bench -- scale        one (or several: `npm run bench -- scale memory`)
//   npm run bench -- --json       each benchmark with --json; ends with one JSON line {name: figures}
//   npm run bench -- --list       the names
//   npm run bench -- scale --clients 10,100 --rounds 3    flags after the names go to the benchmark(s)
//
// Every bench/*.ts but this one is a benchmark. Each prints its own markdown table; scale, memory,
// combiners and model-size also write bench/results/<name>.md and .svg. The output of the others
// (transport, aggregate, tls: files of other owners) is saved as bench/results/<name>.md here. A failed benchmark is reported and the run goes on;
// the exit code is non-zero if any failed.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { machineLine, writeResult } from './lib/report.ts';
import { markdownTable } from './lib/table.ts';

interface Bench {
  name: string;
  file: string;
  what: string;
  /** Arguments for a full run (defaults otherwise). */
  args?: string[];
  /** Whether run.ts saves the printed output as bench/results/<name>.md (the bench does not itself). */
  saveOutput?: boolean;
}

const known: Bench[] = [
  { name: 'scale', file: 'scale.ts', what: 'round overhead: 10–10,000 in-process clients × 1, 2, 4 combiners' },
  { name: 'memory', file: 'memory.ts', what: 'memory per idle client (in-process, gRPC, WebSocket) and over rounds' },
  { name: 'combiners', file: 'combiners.ts', what: '1, 2, 4 combiner processes over gRPC, 200 clients in 4 processes' },
  { name: 'model-size', file: 'model-size.ts', what: '1M/10M/50M-parameter rounds vs the raw transport ceiling' },
  { name: 'transport', file: 'transport.ts', what: 'blob transfer over grpc/ws Links vs the bare libraries', saveOutput: true },
  { name: 'aggregate', file: 'aggregate.ts', what: 'aggregation kernels vs C', saveOutput: true },
  { name: 'tls', file: 'tls.ts', what: 'model transfer and dial cost with mutual TLS vs plain (grpc, ws)', saveOutput: true },
];

/** Every bench/*.ts is a benchmark: the known ones in this order, then any other, by name. */
export const benches: Bench[] = [
  ...known,
  ...readdirSync(fileURLToPath(new URL('.', import.meta.url)))
    .filter((f) => f.endsWith('.ts') && f !== 'run.ts' && !known.some((b) => b.file === f))
    .sort()
    .map((file) => ({ name: file.replace(/\.ts$/, ''), file, what: '(see the file header)', saveOutput: true })),
];

interface Outcome {
  name: string;
  code: number;
  ms: number;
  json?: unknown;
}

function runBench(b: Bench, json: boolean, extra: string[]): Promise<Outcome> {
  const started = performance.now();
  const file = fileURLToPath(new URL(b.file, import.meta.url));
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', file, ...(b.args ?? []), ...(json || b.saveOutput ? ['--json'] : [])], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, FORCE_COLOR: '0' },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('close', (code) => {
      const lines = out.trimEnd().split('\n');
      let parsed: unknown;
      if (json || b.saveOutput) {
        try {
          parsed = JSON.parse(lines[lines.length - 1] ?? '');
          lines.pop();
        } catch {
          parsed = undefined;
        }
      }
      const text = lines.join('\n');
      process.stdout.write(`${text}\n`);
      if (b.saveOutput && code === 0) {
        writeResult(`${b.name}.md`, [`# ${b.name} (bench/${b.file}, output saved by bench/run.ts)`, '', '```', text.trim(), '```', '', `_${machineLine()}_`].join('\n'));
      }
      resolve({ name: b.name, code: code ?? 1, ms: performance.now() - started, ...(parsed !== undefined ? { json: parsed } : {}) });
    });
  });
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const json = argv.includes('--json');
  if (argv.includes('--list') || argv.includes('--help')) {
    console.log(markdownTable(['name', 'file', 'measures'], benches.map((b) => [b.name, `bench/${b.file}`, b.what])));
    return;
  }
  const firstFlag = argv.findIndex((a) => a.startsWith('--'));
  const names = firstFlag < 0 ? argv : argv.slice(0, firstFlag);
  const extra = (firstFlag < 0 ? [] : argv.slice(firstFlag)).filter((a) => a !== '--json');
  const unknown = names.filter((n) => !benches.some((b) => b.name === n));
  if (unknown.length) {
    console.error(`unknown benchmark ${unknown.join(', ')}; valid: ${benches.map((b) => b.name).join(', ')}`);
    process.exit(2);
  }
  if (extra.length && names.length === 0) {
    console.error(`flags ${extra.join(' ')} need the benchmark they are for, e.g. npm run bench -- scale ${extra.join(' ')}`);
    process.exit(2);
  }
  const chosen = names.length ? benches.filter((b) => names.includes(b.name)) : benches;
  const outcomes: Outcome[] = [];
  for (const b of chosen) {
    console.log(`\n## ${b.name} — ${b.what}\n`);
    const o = await runBench(b, json, extra);
    outcomes.push(o);
    console.error(`bench ${b.name}: ${o.code === 0 ? 'ok' : `FAILED (exit ${o.code})`} in ${(o.ms / 1000).toFixed(1)} s`);
  }
  console.log(`\n${markdownTable(['benchmark', 'status', 'seconds'], outcomes.map((o) => [o.name, o.code === 0 ? 'ok' : `failed (${o.code})`, o.ms / 1000]))}\n`);
  if (json) console.log(JSON.stringify(Object.fromEntries(outcomes.map((o) => [o.name, o.json ?? null]))));
  if (outcomes.some((o) => o.code !== 0)) process.exitCode = 1;
}

await main();
