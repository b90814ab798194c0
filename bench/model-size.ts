// Round time against model size, as a ratio to the raw transport ceiling measured in the same run.
//
//   npx tsx bench/model-size.ts [--params 1000000,10000000,50000000] [--transports inproc,grpc,ws] [--rounds 2] [--json]
//
// What is measured: a federation of one reducer, one combiner and one client in one process
// (startFederation over the named transport: in-process without the codec round trip, or gRPC /
// WebSocket on loopback), the client running a no-op task that nudges the model in place. After one
// warm-up round, --rounds rounds are timed from commit to commit. One round moves the model four
// times: reducer → combiner (global model), combiner → client (global model), client → combiner
// (update), combiner → reducer (combiner model). Each (transport, size) runs in its own process.
//   ceiling   4 × the time the bare library takes to move the same bytes once in the same process
//             (bench/lib/raw.ts: memcpy for inproc, a bare grpc-js stream, a bare ws socket)
//   ratio     round time / ceiling: 1 would mean the runtime costs nothing beyond the wire. Besides
//             framing, a round pays sha256 over every blob it receives or stores (content addressing),
//             model encoding and decoding, and the FedAvg fold; sha256 of the bytes is shown for scale.
// With --json the last line holds every (transport, params) figure.
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { startFederation } from '../src/actors/federation.ts';
import { createTransport } from '../src/transport/registry.ts';
import type { TransportKind } from '../src/transport/types.ts';
import { scriptFlags } from '../src/util/args.ts';
import { emitJson } from './lib/json.ts';
import { forkWorker, serveParent } from './lib/proc.ts';
import { grpcPath, memcpyPath, timeTransfer, wsPath, type RawPath } from './lib/raw.ts';
import { writePlot, writeReport } from './lib/report.ts';
import { markdownTable, num } from './lib/table.ts';
import { flatLayout, noopTask } from './lib/tasks.ts';

interface SizeConfig {
  kind: TransportKind;
  params: number;
  rounds: number;
}

interface SizeResult extends SizeConfig {
  bytes: number;
  roundMs: number[];
  rawOnceMs: number;
  sha256Ms: number;
}

type FromChild = { type: 'result'; result: SizeResult } | { type: 'error'; message: string };

const TRANSFERS_PER_ROUND = 4;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function rawPathFor(kind: TransportKind): Promise<RawPath> {
  if (kind === 'grpc') return grpcPath();
  if (kind === 'ws') return wsPath();
  return memcpyPath();
}

async function runSize(cfg: SizeConfig): Promise<SizeResult> {
  const fed = await startFederation({
    combiners: 1,
    clients: [noopTask(10, { inPlace: true })],
    strict: false,
    ...(cfg.kind === 'inproc' ? {} : { transport: () => createTransport(cfg.kind), endpoint: () => `${cfg.kind}://127.0.0.1:0` }),
  });
  await fed.ready(60_000);
  const seed = new Float32Array(cfg.params);
  for (let i = 0; i < seed.length; i += 997) seed[i] = (i % 13) / 13;
  await fed.reducer.seed({ layout: flatLayout(cfg.params), data: seed });
  const roundMs: number[] = [];
  let seen = 0;
  let last = performance.now();
  const sub = fed.reducer.actor.subscribe((s) => {
    while (seen < s.context.history.length) {
      const now = performance.now();
      roundMs.push(now - last);
      last = now;
      seen++;
    }
  });
  last = performance.now();
  fed.reducer.start({ sessionId: 'size', rounds: cfg.rounds + 1, roundTimeoutMs: 600_000 });
  const summary = await fed.reducer.finished();
  sub.unsubscribe();
  if (summary.status !== 'done') throw new Error(`session ${summary.status}: ${summary.failure}`);
  await fed.close();

  // The same bytes over the bare library, in this process, after the federation is gone.
  const bytes = new Uint8Array(cfg.params * 4);
  for (let i = 0; i < bytes.length; i += 4093) bytes[i] = i & 0xff;
  const raw = await rawPathFor(cfg.kind);
  const rawOnceMs = await timeTransfer(raw, bytes, 2);
  await raw.close();
  const hashTimes = [0, 1, 2].map(() => {
    const t = performance.now();
    createHash('sha256').update(bytes).digest('hex');
    return performance.now() - t;
  });
  const sha256Ms = median(hashTimes);
  return { ...cfg, bytes: bytes.byteLength, roundMs: roundMs.slice(1), rawOnceMs, sha256Ms };
}

async function main(): Promise<void> {
  const flags = scriptFlags('npx tsx bench/model-size.ts [flags]', {
    params: { type: 'string', default: '1000000,10000000,50000000', help: 'model sizes in float32 parameters (comma-separated)' },
    transports: { type: 'string', default: 'inproc,grpc,ws', help: 'transports (comma-separated)' },
    rounds: { type: 'number', default: 2, min: 1, max: 50, integer: true, help: 'timed rounds per configuration (after one warm-up round)' },
    out: { type: 'string', default: '', help: 'write the report here instead of bench/results (for tests)' },
    json: { type: 'boolean', default: false, help: 'end with one JSON line' },
  });
  const sizes = flags.params.split(',').map(Number);
  const kinds = flags.transports.split(',') as TransportKind[];
  const results: SizeResult[] = [];
  for (const kind of kinds) {
    for (const params of sizes) {
      const worker = forkWorker<SizeConfig, FromChild>(fileURLToPath(import.meta.url), ['--child'], { execArgv: ['--max-old-space-size=4096'] });
      worker.send({ kind, params, rounds: flags.rounds });
      const { result } = await worker.expect('result', 900_000);
      await worker.stop();
      results.push(result);
      const ceiling = TRANSFERS_PER_ROUND * result.rawOnceMs;
      process.stderr.write(`model-size: ${kind} ${params.toLocaleString('en-US')} params: rounds ${result.roundMs.map((m) => m.toFixed(0)).join(' ')} ms, ceiling ${ceiling.toFixed(0)} ms\n`);
    }
  }
  const rows = results.map((r) => {
    const med = median(r.roundMs);
    const ceiling = TRANSFERS_PER_ROUND * r.rawOnceMs;
    return [r.kind, r.params, r.bytes / 2 ** 20, med, `${num(Math.min(...r.roundMs))}–${num(Math.max(...r.roundMs))}`, ceiling, med / ceiling, (TRANSFERS_PER_ROUND * r.bytes) / 2 ** 20 / (med / 1000), r.sha256Ms];
  });
  const table = markdownTable(
    ['transport', 'params', 'model MiB', 'round ms (median)', 'min–max ms', 'raw ceiling ms (4 transfers)', 'ratio round/ceiling', 'effective MiB/s (4 transfers)', 'sha256 once ms'],
    rows,
  );
  console.log(`\n${table}\n`);
  const opts = flags.out ? { dir: flags.out } : {};
  writeReport(
    'model-size',
    'Round time vs model size (bench/model-size.ts)',
    [
      `One reducer, one combiner, one client in one process; no-op task; ${flags.rounds} timed rounds after a warm-up. A round moves the model ${TRANSFERS_PER_ROUND} times; ` +
        'the raw ceiling is that many bare transfers of the same bytes over the same library in the same process (memcpy for inproc). ' +
        'Beyond the wire a round hashes every blob it receives or stores (sha256, shown once for scale), encodes and decodes models and folds the update.',
      table,
      '![round time vs model size](model-size.svg)',
    ],
    opts,
  );
  writePlot(
    'model-size.svg',
    kinds.map((kind) => ({ name: `${kind} ratio`, points: results.filter((r) => r.kind === kind).map((r) => [r.params / 1e6, median(r.roundMs) / (TRANSFERS_PER_ROUND * r.rawOnceMs)] as [number, number]) })),
    { title: 'Round time / raw transport ceiling', xLabel: 'million parameters (log)', yLabel: 'ratio (1 = wire speed)', logX: true, yMin: 0 },
    opts,
  );
  emitJson({
    results: results.map((r) => ({
      transport: r.kind,
      params: r.params,
      medianRoundMs: Math.round(median(r.roundMs)),
      ceilingMs: Math.round(TRANSFERS_PER_ROUND * r.rawOnceMs),
      ratio: Number((median(r.roundMs) / (TRANSFERS_PER_ROUND * r.rawOnceMs)).toFixed(2)),
      sha256Ms: Math.round(r.sha256Ms),
    })),
  });
}

const entry = process.argv[1] === fileURLToPath(import.meta.url);
if (entry && process.argv.includes('--child')) {
  serveParent<SizeConfig, FromChild>(async (cfg) => ({ type: 'result', result: await runSize(cfg) }));
} else if (entry) {
  await main();
}
