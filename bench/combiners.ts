// Combiner scaling: the same rounds with 1, 2 and 4 combiner processes over gRPC on loopback.
//
//   npx tsx bench/combiners.ts [--combiners 1,2,4] [--clients 200] [--client-processes 4] [--params 100000] [--rounds 5] [--json]
//
// What is measured: the reducer runs in this process; each combiner is its own process
// (startCombiner over createTransport('grpc'), bench/lib/node-worker.ts); --clients clients are spread
// over --client-processes processes, one Node and one gRPC connection per client, each running a no-op
// task on a --params float32 model. Discovery spreads the clients over the combiners (least packed).
// One session of --rounds rounds per combiner count, after a warm-up round; a round runs from one
// commit to the next (StartRound to every combiner, model staging, tasks, update pulls and folds,
// reports, reduce, commit). CPU is the user+system time of every process in the run (reducer,
// combiners, clients) per round, so it shows whether more combiners cost more work in total.
// This machine's cores bound the speed-up: every process shares them.
import { cpus } from 'node:os';
import { startReducer } from '../src/actors/reducer.ts';
import { createTransport } from '../src/transport/registry.ts';
import { scriptFlags } from '../src/util/args.ts';
import { emitJson } from './lib/json.ts';
import { nodeWorkerPath, type WorkerReply, type WorkerRequest } from './lib/node-worker.ts';
import { forkWorker, type Worker } from './lib/proc.ts';
import { writePlot, writeReport } from './lib/report.ts';
import { markdownTable, num } from './lib/table.ts';
import { flatLayout } from './lib/tasks.ts';

interface RunResult {
  combiners: number;
  roundMs: number[];
  cpuMsPerRound: number;
  /** CPU ms per round of the reducer (this process), all combiner processes, all client processes. */
  cpuSplit: { reducer: number; combiners: number; clients: number };
  readyMs: number;
  updates: number[];
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

type NodeWorker = Worker<WorkerRequest, WorkerReply>;

async function cpuOf(workers: NodeWorker[]): Promise<number[]> {
  const out: number[] = [];
  for (const w of workers) {
    w.send({ type: 'cpu' });
    const c = await w.expect('cpu');
    out.push(c.userMs + c.systemMs);
  }
  const own = process.cpuUsage();
  return [...out, (own.user + own.system) / 1000];
}

async function runOnce(combinerCount: number, o: { clients: number; clientProcesses: number; params: number; rounds: number }): Promise<RunResult> {
  const t0 = performance.now();
  const reducer = await startReducer({ transport: createTransport('grpc'), listen: 'grpc://127.0.0.1:0' });
  const workers: NodeWorker[] = [];
  try {
    const combiners = Array.from({ length: combinerCount }, () => forkWorker<WorkerRequest, WorkerReply>(nodeWorkerPath));
    workers.push(...combiners);
    combiners.forEach((w, i) => w.send({ type: 'combiner', kind: 'grpc', name: `c${i + 1}`, reducerEndpoint: reducer.endpoint }));
    for (const w of combiners) await w.expect('combiner', 60_000);
    const holders = Array.from({ length: o.clientProcesses }, () => forkWorker<WorkerRequest, WorkerReply>(nodeWorkerPath));
    workers.push(...holders);
    const per = Math.ceil(o.clients / o.clientProcesses);
    holders.forEach((w, i) =>
      w.send({ type: 'clients', kind: 'grpc', prefix: `p${i + 1}k`, count: Math.max(0, Math.min(per, o.clients - i * per)), reducerEndpoint: reducer.endpoint, firstSeed: i * per + 1 }),
    );
    for (const w of holders) await w.expect('clients', 600_000);
    // Every client registered with the reducer (combiner status reports are throttled).
    const deadline = Date.now() + 60_000;
    for (;;) {
      const registered = Object.values(reducer.actor.getSnapshot().context.combiners).reduce((n, c) => n + (c.connected ? c.clients.length : 0), 0);
      if (registered >= o.clients) break;
      if (Date.now() > deadline) throw new Error(`only ${registered}/${o.clients} clients registered`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const readyMs = performance.now() - t0;
    await reducer.seed({ layout: flatLayout(o.params), data: new Float32Array(o.params) });
    const config = { roundTimeoutMs: 300_000, minClients: o.clients, minCombiners: combinerCount };
    reducer.start({ sessionId: 'warm-up', rounds: 1, ...config });
    const warm = await reducer.finished();
    if (warm.status !== 'done') throw new Error(`warm-up round ${warm.status}: ${warm.failure}`);

    const roundMs: number[] = [];
    const updates: number[] = [];
    let seen = 0;
    let last = performance.now();
    const sub = reducer.actor.subscribe((s) => {
      if (s.context.session?.sessionId !== 'timed') return;
      while (seen < s.context.history.length) {
        const now = performance.now();
        roundMs.push(now - last);
        updates.push(s.context.history[seen]!.updates);
        last = now;
        seen++;
      }
    });
    const cpu0 = await cpuOf(workers);
    last = performance.now();
    reducer.start({ sessionId: 'timed', rounds: o.rounds, ...config });
    const summary = await reducer.finished();
    sub.unsubscribe();
    const cpu1 = await cpuOf(workers);
    if (summary.status !== 'done') throw new Error(`session ${summary.status}: ${summary.failure}`);
    // workers: the combiners first, then the client holders; the last entry is this process
    const spent = cpu1.map((c, i) => (c - cpu0[i]!) / o.rounds);
    const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
    const cpuSplit = { combiners: sum(spent.slice(0, combinerCount)), clients: sum(spent.slice(combinerCount, -1)), reducer: spent[spent.length - 1]! };
    return { combiners: combinerCount, roundMs, updates, readyMs, cpuMsPerRound: sum(spent), cpuSplit };
  } finally {
    for (const w of workers) w.send({ type: 'stop' });
    await Promise.all(workers.map((w) => w.stop()));
    await reducer.close();
  }
}

async function main(): Promise<void> {
  const flags = scriptFlags('npx tsx bench/combiners.ts [flags]', {
    combiners: { type: 'string', default: '1,2,4', help: 'combiner process counts (comma-separated)' },
    clients: { type: 'number', default: 200, min: 1, integer: true, help: 'clients in total' },
    'client-processes': { type: 'number', default: 4, min: 1, integer: true, help: 'processes the clients are spread over' },
    params: { type: 'number', default: 100_000, min: 1, integer: true, help: 'model size in float32 parameters' },
    rounds: { type: 'number', default: 5, min: 1, max: 100, integer: true, help: 'timed rounds per combiner count' },
    out: { type: 'string', default: '', help: 'write the report here instead of bench/results (for tests)' },
    json: { type: 'boolean', default: false, help: 'end with one JSON line' },
  });
  const counts = flags.combiners.split(',').map(Number);
  const results: RunResult[] = [];
  for (const c of counts) {
    const r = await runOnce(c, flags);
    results.push(r);
    process.stderr.write(`combiners: ${c}: rounds ${r.roundMs.map((m) => m.toFixed(0)).join(' ')} ms, ${r.cpuMsPerRound.toFixed(0)} CPU ms/round\n`);
  }
  const base = median(results[0]!.roundMs);
  const table = markdownTable(
    ['combiner processes', 'clients', 'round ms (median)', 'min–max ms', 'rounds/s', 'speed-up vs first', 'CPU ms/round (all processes)', 'reducer CPU ms', 'combiners CPU ms', 'clients CPU ms', 'updates/round'],
    results.map((r) => [
      r.combiners,
      flags.clients,
      median(r.roundMs),
      `${num(Math.min(...r.roundMs))}–${num(Math.max(...r.roundMs))}`,
      1000 / median(r.roundMs),
      base / median(r.roundMs),
      r.cpuMsPerRound,
      r.cpuSplit.reducer,
      r.cpuSplit.combiners,
      r.cpuSplit.clients,
      median(r.updates),
    ]),
  );
  const perRound = markdownTable(
    ['combiner processes', ...Array.from({ length: flags.rounds }, (_, i) => `round ${i + 1} ms`)],
    results.map((r) => [r.combiners, ...r.roundMs]),
  );
  console.log(`\n${table}\n\nPer-round times:\n\n${perRound}\n`);
  const opts = flags.out ? { dir: flags.out } : {};
  writeReport(
    'combiners',
    'Combiner scaling over gRPC (bench/combiners.ts)',
    [
      `Reducer in the benchmark process, each combiner in its own process, ${flags.clients} clients over ${flags.clientProcesses} client processes (one gRPC connection per client), ` +
        `no-op task on a ${flags.params.toLocaleString('en-US')}-parameter model, ${flags.rounds} timed rounds after a warm-up round. CPU is user+system time per round, summed over every process of the run and split by role (the machine has ${cpus().length} cores: CPU ms per round below ${cpus().length} × the round time means the processes wait on each other, not on the cores).`,
      table,
      'Per-round times:',
      perRound,
      '![round time vs combiners](combiners.svg)',
    ],
    opts,
  );
  writePlot(
    'combiners.svg',
    [
      { name: 'round ms (median)', points: results.map((r) => [r.combiners, median(r.roundMs)] as [number, number]) },
      { name: 'CPU ms / round', points: results.map((r) => [r.combiners, r.cpuMsPerRound] as [number, number]) },
    ],
    { title: `${flags.clients} gRPC clients: round time vs combiner processes`, xLabel: 'combiner processes', yLabel: 'ms', yMin: 0 },
    opts,
  );
  emitJson({
    clients: flags.clients,
    params: flags.params,
    runs: results.map((r) => ({
      combiners: r.combiners,
      medianRoundMs: Math.round(median(r.roundMs)),
      roundMs: r.roundMs.map(Math.round),
      cpuMsPerRound: Math.round(r.cpuMsPerRound),
      cpuMsPerRoundByRole: { reducer: Math.round(r.cpuSplit.reducer), combiners: Math.round(r.cpuSplit.combiners), clients: Math.round(r.cpuSplit.clients) },
      readyMs: Math.round(r.readyMs),
    })),
    ...Object.fromEntries(results.map((r) => [`roundMs${r.combiners}c`, Math.round(median(r.roundMs))])),
  });
}

await main();
