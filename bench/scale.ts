// Round overhead: how fast the runtime itself runs rounds when training costs nothing.
//
//   npx tsx bench/scale.ts [--clients 10,100,1000,10000] [--combiners 1,2,4] [--rounds 4] [--params 100] [--json]
//   npx tsx bench/scale.ts --clients 10000 --combiners 4 --profile prof/rounds.cpuprofile
//
// What is measured: a whole federation in one process (startFederation: one reducer, C combiner nodes
// and one node per client, over the in-process transport without the codec round trip), clients
// running a no-op task on a small model (--params float32 values). Each configuration runs in a fresh
// child process started with --expose-gc, so one configuration's garbage never bills the next.
//   ready      from startFederation until every client is connected and the reducer counts it
//   round      one session of 1 + --rounds rounds; a round's time runs from the previous round's commit
//              (or START) to its own: dispatch, model staging, tasks, training, update pulls, folds,
//              reports, reduce and commit. The first round also compiles the code (V8 warms up on it),
//              so it is shown apart; median, min and max are over the --rounds rounds after it, and
//              each round is listed.
//   CPU        process CPU time (user+system) per round: less disturbed by other load than wall time.
//   idle KB    (heap+external after ready − before startFederation) / clients, after full GCs: what
//              one connected idle client costs, reducer and combiner bookkeeping included.
// FEDSTATE_BENCH_NODE_FLAGS adds Node/V8 flags to the configuration processes (e.g. GC tuning).
// With --json the last line is {"roundMs10k", "roundMs10kByCombiners", "bytesPerIdleClient", "configs"}
// (roundMs10k: median timed round of the 10,000-client run with the most combiners; bytesPerIdleClient
// from that run too).
import { fileURLToPath } from 'node:url';
import { startFederation } from '../src/actors/federation.ts';
import { scriptFlags } from '../src/util/args.ts';
import { KB, retained, settledHeap } from './lib/heap.ts';
import { emitJson } from './lib/json.ts';
import { forkWorker, serveParent } from './lib/proc.ts';
import { startAllocationProfile, startProfile } from './lib/profile.ts';
import { writePlot, writeReport } from './lib/report.ts';
import { markdownTable, num } from './lib/table.ts';
import { flatLayout, noopTask } from './lib/tasks.ts';

export interface ScaleConfig {
  clients: number;
  combiners: number;
  rounds: number;
  params: number;
  profile?: string;
  /** Heartbeat interval the combiners ask of their clients (default: the combiner's own default). */
  heartbeatMs?: number;
}

export interface ScaleResult extends ScaleConfig {
  startMs: number;
  /** The first round (JIT warm-up), not in roundMs. */
  warmupMs: number;
  readyMs: number;
  roundMs: number[];
  roundCpuMs: number[];
  updates: number[];
  bytesPerIdleClient: number;
  heapAfterReadyMB: number;
  heapAfterRoundsMB: number;
}

type FromChild = { type: 'result'; result: ScaleResult } | { type: 'error'; message: string };

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** One configuration, in this process (the child). */
export async function runConfig(cfg: ScaleConfig): Promise<ScaleResult> {
  const before = await settledHeap();
  const t0 = performance.now();
  const fed = await startFederation({
    combiners: cfg.combiners,
    clients: Array.from({ length: cfg.clients }, () => noopTask(10)),
    strict: false,
    ...(cfg.heartbeatMs ? { heartbeatMs: cfg.heartbeatMs, clientTimeoutMs: cfg.heartbeatMs * 5 } : {}),
  });
  const t1 = performance.now();
  await fed.ready(Math.max(60_000, cfg.clients * 20));
  const t2 = performance.now();
  const afterReady = await settledHeap();

  await fed.reducer.seed({ layout: flatLayout(cfg.params), data: new Float32Array(cfg.params) });
  const profiling = cfg.profile ? await (cfg.profile.endsWith('.heapprofile') ? startAllocationProfile(cfg.profile) : startProfile(cfg.profile)) : undefined;
  const roundMs: number[] = [];
  const roundCpuMs: number[] = [];
  const updates: number[] = [];
  let seen = 0;
  let last = performance.now();
  let lastCpu = process.cpuUsage();
  const sub = fed.reducer.actor.subscribe((s) => {
    while (seen < s.context.history.length) {
      const now = performance.now();
      const cpu = process.cpuUsage(lastCpu);
      roundMs.push(now - last);
      roundCpuMs.push((cpu.user + cpu.system) / 1000);
      updates.push(s.context.history[seen]!.updates);
      last = now;
      lastCpu = process.cpuUsage();
      seen++;
    }
  });
  // Every client is registered (ready above); a round does not wait for stragglers that dropped out on
  // a loaded machine (updates per round says if any did).
  fed.reducer.start({ sessionId: 'scale', rounds: cfg.rounds + 1, roundTimeoutMs: 600_000 });
  const summary = await fed.reducer.finished();
  sub.unsubscribe();
  await profiling?.stop();
  if (summary.status !== 'done') throw new Error(`session ${summary.status}: ${summary.failure}`);
  const afterRounds = await settledHeap();
  await fed.close();
  return {
    ...cfg,
    startMs: t1 - t0,
    readyMs: t2 - t0,
    warmupMs: roundMs[0]!,
    roundMs: roundMs.slice(1),
    roundCpuMs: roundCpuMs.slice(1),
    updates: updates.slice(1),
    bytesPerIdleClient: (retained(afterReady) - retained(before)) / cfg.clients,
    heapAfterReadyMB: retained(afterReady) / 2 ** 20,
    heapAfterRoundsMB: retained(afterRounds) / 2 ** 20,
  };
}

const list = (s: string): number[] =>
  s.split(',').map((x) => {
    const n = Number(x);
    if (!Number.isInteger(n) || n < 1) throw new Error(`not a positive integer list: ${s}`);
    return n;
  });

async function main(): Promise<void> {
  const flags = scriptFlags('npx tsx bench/scale.ts [flags]', {
    clients: { type: 'string', default: '10,100,1000,10000', help: 'client counts (comma-separated)' },
    combiners: { type: 'string', default: '1,2,4', help: 'combiner counts (comma-separated)' },
    rounds: { type: 'number', default: 4, min: 1, max: 100, integer: true, help: 'timed rounds per configuration (after one warm-up round)' },
    params: { type: 'number', default: 100, min: 1, integer: true, help: 'model size in float32 parameters' },
    profile: { type: 'string', default: '', help: 'profile the rounds of a single configuration: CPU to PATH.cpuprofile, allocations to PATH.heapprofile' },
    'heartbeat-ms': { type: 'number', default: 0, min: 0, integer: true, help: 'client heartbeat interval (0: the default), to see what heartbeats cost' },
    out: { type: 'string', default: '', help: 'write the report here instead of bench/results (for tests)' },
    json: { type: 'boolean', default: false, help: 'end with one JSON line' },
  });
  const clientCounts = list(flags.clients);
  const combinerCounts = list(flags.combiners);
  if (flags.profile && clientCounts.length * combinerCounts.length !== 1) throw new Error('--profile needs exactly one configuration');

  const results: ScaleResult[] = [];
  for (const combiners of combinerCounts) {
    for (const clients of clientCounts) {
      const cfg: ScaleConfig = {
        clients,
        combiners,
        rounds: flags.rounds,
        params: flags.params,
        ...(flags.profile ? { profile: flags.profile } : {}),
        ...(flags.heartbeatMs ? { heartbeatMs: flags.heartbeatMs } : {}),
      };
      const worker = forkWorker<ScaleConfig, FromChild>(fileURLToPath(import.meta.url), ['--child'], { execArgv: ['--expose-gc', '--max-old-space-size=4096', ...(process.env.FEDSTATE_BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean)] });
      worker.send(cfg);
      const { result } = await worker.expect('result', 600_000);
      await worker.stop();
      results.push(result);
      process.stderr.write(
        `scale: ${clients} clients, ${combiners} combiner(s): ready ${(result.readyMs / 1000).toFixed(1)} s, warm-up ${result.warmupMs.toFixed(0)} ms, rounds ${result.roundMs.map((m) => m.toFixed(0)).join(' ')} ms, ${(result.bytesPerIdleClient / KB).toFixed(1)} KB/client\n`,
      );
    }
  }

  const rows = results.map((r) => {
    const med = median(r.roundMs);
    return [
      r.combiners,
      r.clients,
      r.readyMs / 1000,
      r.warmupMs,
      med,
      `${num(Math.min(...r.roundMs))}–${num(Math.max(...r.roundMs))}`,
      median(r.roundCpuMs),
      1000 / med,
      (med * 1000) / r.clients,
      r.bytesPerIdleClient / KB,
      r.heapAfterRoundsMB - r.heapAfterReadyMB,
      Math.min(...r.updates),
    ];
  });
  const table = markdownTable(
    ['combiners', 'clients', 'ready s', 'warm-up round ms', 'round ms (median)', 'min–max ms', 'CPU ms/round', 'rounds/s', 'µs per client·round', 'idle KB/client', 'heap Δ after rounds MB', 'updates/round (min)'],
    rows,
  );
  const perRound = markdownTable(
    ['combiners', 'clients', 'warm-up ms', ...Array.from({ length: flags.rounds }, (_, i) => `round ${i + 2} ms`)],
    results.filter((r) => r.clients >= 1000).map((r) => [r.combiners, r.clients, r.warmupMs, ...r.roundMs]),
  );
  console.log(`\n${table}\n\nPer-round times (flat in rounds):\n\n${perRound}\n`);

  const opts = flags.out ? { dir: flags.out } : {};
  if (!flags.profile) {
    writeReport(
      'scale',
      'Round overhead (bench/scale.ts)',
      [
        `No-op training, ${flags.params}-parameter model, one warm-up round then ${flags.rounds} timed rounds per configuration, whole federation in one process (in-process transport, no codec round trip), each configuration in a fresh process. ` +
          'Round time runs from one commit to the next; median, min–max, CPU (process user+system time per round) and rates are over the timed rounds; idle KB/client is (heap+external after ready − before start) / clients after full GCs. ' +
          'Small federations run mostly unoptimised code (too few events for V8 to optimise within a few rounds), hence their higher µs per client.',
        table,
        'Per-round times:',
        perRound,
        '![round time vs clients](scale.svg) ![round time per client](scale-per-client.svg)',
      ],
      opts,
    );
    writePlot(
      'scale.svg',
      combinerCounts.map((c) => ({
        name: `${c} combiner${c > 1 ? 's' : ''}`,
        points: results.filter((r) => r.combiners === c).map((r) => [r.clients, median(r.roundMs)] as [number, number]),
      })),
      { title: 'No-op round time vs clients (one process)', xLabel: 'clients (log)', yLabel: 'ms per round (median)', logX: true, yMin: 0 },
      opts,
    );
    // Linear in clients means a flat line here.
    writePlot(
      'scale-per-client.svg',
      combinerCounts.map((c) => ({
        name: `${c} combiner${c > 1 ? 's' : ''}`,
        points: results.filter((r) => r.combiners === c).map((r) => [r.clients, (median(r.roundMs) * 1000) / r.clients] as [number, number]),
      })),
      { title: 'Round time per client (flat = linear in clients)', xLabel: 'clients (log)', yLabel: 'µs per client per round', logX: true, yMin: 0 },
      opts,
    );
  }
  const big = results.filter((r) => r.clients === Math.max(...clientCounts)).sort((a, b) => b.combiners - a.combiners)[0]!;
  const tenK = results.filter((r) => r.clients === 10_000);
  emitJson({
    roundMs10k: big.clients === 10_000 ? Math.round(median(big.roundMs)) : null,
    roundMs10kByCombiners: Object.fromEntries(tenK.map((r) => [r.combiners, Math.round(median(r.roundMs))])),
    bytesPerIdleClient: Math.round(big.bytesPerIdleClient),
    configs: results.map((r) => ({
      clients: r.clients,
      combiners: r.combiners,
      readyMs: Math.round(r.readyMs),
      warmupMs: Math.round(r.warmupMs),
      roundMs: r.roundMs.map(Math.round),
      medianRoundMs: Math.round(median(r.roundMs)),
      cpuMsPerRound: Math.round(median(r.roundCpuMs)),
      bytesPerIdleClient: Math.round(r.bytesPerIdleClient),
    })),
  });
}

const entry = process.argv[1] === fileURLToPath(import.meta.url);
if (entry && process.argv.includes('--child')) {
  serveParent<ScaleConfig, FromChild>(async (cfg) => ({ type: 'result', result: await runConfig(cfg) }));
} else if (entry) {
  await main();
}
