// Memory per connected idle client, and memory over rounds.
//
//   npx tsx bench/memory.ts [--clients 1000,10000] [--remote-clients 500] [--rounds 6] [--json]
//
// What is measured (every figure after full GCs, heap = V8 heap used + external buffers):
//   in-process   a whole federation in one child process (startFederation, 2 combiners, in-process
//                transport): (heap after every client is connected − heap before start) / clients,
//                reducer and combiner bookkeeping included; then CPU time spent while idle (heartbeats,
//                ticks); then --rounds one-round sessions of a no-op task, heap after each.
//   grpc, ws     a combiner in its own process (startCombiner over createTransport(kind)), the reducer in
//                this process, --remote-clients clients in a third process (one Node and one connection
//                each): (combiner heap with clients connected − heap before they came) / clients, and the
//                same for RSS (sockets and HTTP/2 sessions live partly outside the V8 heap); then the
//                combiner's heap after each of --rounds one-round sessions.
//   growth/round the median of pairwise slopes (Theil–Sen) through heap after rounds 2..R (round 1
//                still compiles code and fills caches); ~0 means memory does not grow with rounds. The
//                reducer's store keeps every committed model and its trail entry by design (~1 KB per
//                round here), which is all that grows.
// With --json the last line holds bytesPerIdleClient (in-process, largest --clients), grpcBytesPerClient,
// wsBytesPerClient and growth per round for every setup.
import { fileURLToPath } from 'node:url';
import { startFederation } from '../src/actors/federation.ts';
import { startReducer, type ReducerHandle } from '../src/actors/reducer.ts';
import { createTransport } from '../src/transport/registry.ts';
import type { TransportKind } from '../src/transport/types.ts';
import { scriptFlags } from '../src/util/args.ts';
import { KB, MB, retained, settledHeap } from './lib/heap.ts';
import { emitJson } from './lib/json.ts';
import { nodeWorkerPath, type WorkerReply, type WorkerRequest } from './lib/node-worker.ts';
import { forkWorker, serveParent } from './lib/proc.ts';
import { writePlot, writeReport } from './lib/report.ts';
import { markdownTable } from './lib/table.ts';
import { flatLayout, noopTask } from './lib/tasks.ts';

const PARAMS = 100;

interface InprocConfig {
  clients: number;
  combiners: number;
  rounds: number;
}

interface InprocResult extends InprocConfig {
  bytesPerIdleClient: number;
  heapBeforeMB: number;
  heapIdleMB: number;
  idleCpuMsPerS: number;
  heapAfterRoundMB: number[];
}

interface RemoteResult {
  kind: TransportKind;
  clients: number;
  bytesPerClient: number;
  rssPerClient: number;
  combinerHeapMB: number;
  heapAfterRoundMB: number[];
}

type FromChild = { type: 'result'; result: InprocResult } | { type: 'error'; message: string };

/**
 * Growth per step of ys (over their indices), robust to a stray measurement: the median of the slopes
 * between every pair of points (Theil–Sen). A heap read now and then catches a few MB of objects in
 * flight; a least-squares line would turn one such read into "growth".
 */
export function slope(ys: number[]): number {
  const slopes: number[] = [];
  for (let i = 0; i < ys.length; i++) for (let j = i + 1; j < ys.length; j++) slopes.push((ys[j]! - ys[i]!) / (j - i));
  if (slopes.length === 0) return 0;
  slopes.sort((a, b) => a - b);
  const m = slopes.length >> 1;
  return slopes.length % 2 ? slopes[m]! : (slopes[m - 1]! + slopes[m]!) / 2;
}

/** Resolves once the reducer counts `clients` connected clients (membership can lag on a loaded machine). */
async function registered(reducer: ReducerHandle, clients: number, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const n = Object.values(reducer.actor.getSnapshot().context.combiners).reduce((k, c) => k + (c.connected ? c.clients.length : 0), 0);
    if (n >= clients) return;
    if (Date.now() > deadline) throw new Error(`only ${n}/${clients} clients registered after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function oneRoundSessions(reducer: ReducerHandle, rounds: number, measure: () => Promise<number>, minClients: number): Promise<number[]> {
  const after: number[] = [];
  for (let r = 1; r <= rounds; r++) {
    // Every round starts with the whole membership, so each measurement sees the same federation.
    await registered(reducer, minClients);
    reducer.start({ sessionId: `mem-${r}`, rounds: 1, roundTimeoutMs: 300_000, minClients });
    const s = await reducer.finished();
    if (s.status !== 'done') throw new Error(`round ${r}: session ${s.status} (${s.failure})`);
    after.push(await measure());
  }
  return after;
}

async function runInproc(cfg: InprocConfig): Promise<InprocResult> {
  const before = await settledHeap();
  const fed = await startFederation({ combiners: cfg.combiners, clients: Array.from({ length: cfg.clients }, () => noopTask(10)), strict: false });
  await fed.ready(Math.max(60_000, cfg.clients * 20));
  // Let discovery links close and the first status reports settle before measuring.
  await new Promise((r) => setTimeout(r, 1_500));
  const idle = await settledHeap();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, 3_000));
  const cpu = process.cpuUsage(cpu0);
  const idleCpuMsPerS = (cpu.user + cpu.system) / 1000 / ((performance.now() - t0) / 1000);
  await fed.reducer.seed({ layout: flatLayout(PARAMS), data: new Float32Array(PARAMS) });
  const heapAfterRoundMB = await oneRoundSessions(fed.reducer, cfg.rounds, async () => retained(await settledHeap()) / MB, cfg.clients);
  await fed.close();
  return {
    ...cfg,
    bytesPerIdleClient: (retained(idle) - retained(before)) / cfg.clients,
    heapBeforeMB: retained(before) / MB,
    heapIdleMB: retained(idle) / MB,
    idleCpuMsPerS,
    heapAfterRoundMB,
  };
}

async function runRemote(kind: TransportKind, clients: number, rounds: number): Promise<RemoteResult> {
  const reducer = await startReducer({ transport: createTransport(kind), listen: `${kind}://127.0.0.1:0` });
  const combiner = forkWorker<WorkerRequest, WorkerReply>(nodeWorkerPath, [], { execArgv: ['--expose-gc'] });
  const holder = forkWorker<WorkerRequest, WorkerReply>(nodeWorkerPath, [], { execArgv: ['--expose-gc'] });
  try {
    combiner.send({ type: 'combiner', kind, name: 'c1', reducerEndpoint: reducer.endpoint });
    await combiner.expect('combiner', 60_000);
    await new Promise((r) => setTimeout(r, 500));
    combiner.send({ type: 'measure' });
    const empty = (await combiner.expect('memory')).heap;
    holder.send({ type: 'clients', kind, prefix: 'm', count: clients, reducerEndpoint: reducer.endpoint });
    await holder.expect('clients', 600_000);
    await new Promise((r) => setTimeout(r, 1_500));
    combiner.send({ type: 'measure' });
    const full = (await combiner.expect('memory')).heap;
    await reducer.seed({ layout: flatLayout(PARAMS), data: new Float32Array(PARAMS) });
    const measure = async (): Promise<number> => {
      combiner.send({ type: 'measure' });
      return retained((await combiner.expect('memory')).heap) / MB;
    };
    const heapAfterRoundMB = await oneRoundSessions(reducer, rounds, measure, clients);
    return {
      kind,
      clients,
      bytesPerClient: (retained(full) - retained(empty)) / clients,
      rssPerClient: (full.rss - empty.rss) / clients,
      combinerHeapMB: retained(full) / MB,
      heapAfterRoundMB,
    };
  } finally {
    holder.send({ type: 'stop' });
    combiner.send({ type: 'stop' });
    await Promise.all([holder.stop(), combiner.stop()]);
    await reducer.close();
  }
}

const list = (s: string): number[] => s.split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0);

async function main(): Promise<void> {
  const flags = scriptFlags('npx tsx bench/memory.ts [flags]', {
    clients: { type: 'string', default: '1000,10000', help: 'in-process client counts (comma-separated)' },
    combiners: { type: 'number', default: 2, min: 1, integer: true, help: 'in-process combiners' },
    'remote-clients': { type: 'number', default: 500, min: 0, integer: true, help: 'clients connected to the combiner process over grpc and ws (0: skip)' },
    transports: { type: 'string', default: 'grpc,ws', help: 'network transports to measure' },
    rounds: { type: 'number', default: 6, min: 3, max: 100, integer: true, help: 'rounds (one-round sessions) to watch memory over' },
    out: { type: 'string', default: '', help: 'write the report here instead of bench/results (for tests)' },
    json: { type: 'boolean', default: false, help: 'end with one JSON line' },
  });
  const inproc: InprocResult[] = [];
  for (const clients of list(flags.clients)) {
    const worker = forkWorker<InprocConfig, FromChild>(fileURLToPath(import.meta.url), ['--child'], { execArgv: ['--expose-gc', '--max-old-space-size=4096'] });
    worker.send({ clients, combiners: flags.combiners, rounds: flags.rounds });
    const { result } = await worker.expect('result', 900_000);
    await worker.stop();
    inproc.push(result);
    process.stderr.write(`memory: in-process ${clients} clients: ${(result.bytesPerIdleClient / KB).toFixed(1)} KB/client, idle CPU ${result.idleCpuMsPerS.toFixed(0)} ms/s\n`);
  }
  const remote: RemoteResult[] = [];
  if (flags.remoteClients > 0) {
    for (const kind of flags.transports.split(',').filter(Boolean) as TransportKind[]) {
      const r = await runRemote(kind, flags.remoteClients, flags.rounds);
      remote.push(r);
      process.stderr.write(`memory: ${kind} ${r.clients} clients: ${(r.bytesPerClient / KB).toFixed(1)} KB/client heap, ${(r.rssPerClient / KB).toFixed(1)} KB/client RSS\n`);
    }
  }

  const growth = (mb: number[]): number => (slope(mb.slice(1)) * MB) / KB; // KB per round
  const idleTable = markdownTable(
    ['setup', 'clients', 'heap before MB', 'heap idle MB', 'KB per idle client', 'idle CPU ms/s', 'idle CPU µs/s per client'],
    [
      ...inproc.map((r) => [`in-process (${r.combiners} combiners)`, r.clients, r.heapBeforeMB, r.heapIdleMB, r.bytesPerIdleClient / KB, r.idleCpuMsPerS, (r.idleCpuMsPerS * 1000) / r.clients]),
    ],
  );
  const remoteTable = markdownTable(
    ['transport', 'clients', 'combiner heap MB', 'combiner heap KB per client', 'combiner RSS KB per client'],
    remote.map((r) => [r.kind, r.clients, r.combinerHeapMB, r.bytesPerClient / KB, r.rssPerClient / KB]),
  );
  const rounds = Array.from({ length: flags.rounds }, (_, i) => i + 1);
  const series = [
    ...inproc.map((r) => ({ name: `in-process ${r.clients}`, mb: r.heapAfterRoundMB })),
    ...remote.map((r) => ({ name: `${r.kind} combiner (${r.clients})`, mb: r.heapAfterRoundMB })),
  ];
  const roundsTable = markdownTable(
    ['setup', ...rounds.map((r) => `after r${r} MB`), 'growth KB/round (r2..)'],
    series.map((s) => [s.name, ...s.mb, growth(s.mb)]),
  );
  console.log(`\nIdle clients:\n\n${idleTable}\n\nPer connected network client, in the combiner's process:\n\n${remoteTable}\n\nHeap after each round:\n\n${roundsTable}\n`);

  const opts = flags.out ? { dir: flags.out } : {};
  writeReport(
    'memory',
    'Memory per client and over rounds (bench/memory.ts)',
    [
      'Heap = V8 heap used + external buffers after full GCs. In-process: a whole federation in one process, (heap with every client connected − heap before start) / clients. ' +
        'Network: the combiner in its own process, clients in another; per client = (combiner heap with clients − without) / clients. ' +
        `Rounds: one-round sessions of a no-op task on a ${PARAMS}-parameter model, each started once every client is registered; growth is the median pairwise slope (Theil–Sen) from round 2 on. The reducer's store keeps every committed model and trail entry by design (~1 KB per round at this model size).`,
      'Idle clients (in-process):',
      idleTable,
      'Per connected network client, in the combiner process:',
      remoteTable,
      'Heap after each round:',
      roundsTable,
      '![heap over rounds](memory.svg)',
    ],
    opts,
  );
  writePlot(
    'memory.svg',
    // from round 2 on, as the growth figure: round 1 still compiles code and fills caches
    series.map((s) => ({ name: s.name, points: s.mb.slice(1).map((mb, i) => [i + 2, mb - s.mb[1]!] as [number, number]) })),
    { title: 'Heap after each round, relative to round 2', xLabel: 'round', yLabel: 'MB above round 2' },
    opts,
  );
  const largest = inproc[inproc.length - 1];
  emitJson({
    bytesPerIdleClient: largest ? Math.round(largest.bytesPerIdleClient) : null,
    inproc: inproc.map((r) => ({ clients: r.clients, bytesPerIdleClient: Math.round(r.bytesPerIdleClient), idleCpuMsPerS: Math.round(r.idleCpuMsPerS), growthBytesPerRound: Math.round(growth(r.heapAfterRoundMB) * KB) })),
    ...Object.fromEntries(remote.map((r) => [`${r.kind}BytesPerClient`, Math.round(r.bytesPerClient)])),
    remote: remote.map((r) => ({ kind: r.kind, clients: r.clients, bytesPerClient: Math.round(r.bytesPerClient), rssPerClient: Math.round(r.rssPerClient), growthBytesPerRound: Math.round(growth(r.heapAfterRoundMB) * KB) })),
  });
}

const entry = process.argv[1] === fileURLToPath(import.meta.url);
if (entry && process.argv.includes('--child')) {
  serveParent<InprocConfig, FromChild>(async (cfg) => ({ type: 'result', result: await runInproc(cfg) }));
} else if (entry) {
  await main();
}
