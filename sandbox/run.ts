// Pseudo-distributed run: a whole federation (1 reducer, combiners, clients) training the 2-layer MLP
// on MNIST, every node its own actor system.
//  - default: one process, nodes connected by the in-process transport in strict mode (every frame
//    through the wire codec);
//  - --transport grpc|ws: still one process, but every link is a real loopback socket;
//  - --processes: every node is its own `fedstate` OS process over gRPC (or ws), and the session is
//    driven through the reducer's REST API (sandbox/processes.ts).
// The same seed gives the same data split per client, the same initial model and the same session
// settings in every mode, so their accuracies can be compared.
//
//   npx tsx sandbox/run.ts [--rounds 5] [--clients 5] [--combiners 2] [--transport grpc] [--processes] [--json] ...   (--help lists all)
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startFederation } from '../src/actors/federation.ts';
import { sandboxDashboard, type SandboxDashboard } from '../src/api/dashboard.ts';
import { FedError, errorMessage, isFedError } from '../src/errors.ts';
import { loadMnist, subset } from '../src/data/mnist.ts';
import { partition } from '../src/data/partition.ts';
import { buildMlp, getParams, initBackend } from '../src/model/tf.ts';
import { tfEvaluator, tfTask } from '../src/model/tf-task.ts';
import { openStore } from '../src/store/index.ts';
import { verifyTrail } from '../src/store/trail.ts';
import { createTransport } from '../src/transport/registry.ts';
import { flagHelp, parseFlags, type FlagSpec } from '../src/util/args.ts';
import { linePlot } from '../src/util/svg-plot.ts';
import { runProcesses, type ProcessRunOptions } from './processes.ts';

const flags = {
  rounds: { type: 'number', default: 5, min: 1, integer: true, help: 'training rounds' },
  clients: { type: 'number', default: 5, min: 1, integer: true, help: 'clients (each holds a private shard of the 8,000 training digits)' },
  combiners: { type: 'number', default: 2, min: 1, integer: true, help: 'combiners' },
  'local-epochs': { type: 'number', default: 2, min: 1, integer: true, help: 'local epochs per round (E)' },
  'batch-size': { type: 'number', default: 20, min: 1, integer: true, help: 'local batch size (B)' },
  lr: { type: 'number', default: 0.2, min: 0, help: 'client SGD learning rate' },
  seed: { type: 'number', default: 1, min: 0, integer: true, help: 'seed for data split, model init and sampling' },
  partition: { type: 'string', default: 'iid', help: 'iid | dirichlet:ALPHA | shards:K | quantity:ALPHA' },
  fraction: { type: 'number', default: 1, min: 0, max: 1, help: 'fraction of clients sampled per round (C)' },
  'round-timeout': { type: 'number', default: 120_000, min: 100, integer: true, help: 'round timeout in ms' },
  transport: { type: 'string', choices: ['inproc', 'grpc', 'ws'], help: 'how nodes talk: inproc (default), or loopback grpc / ws sockets (default grpc with --processes)' },
  processes: { type: 'boolean', default: false, help: 'run every reducer, combiner and client as its own `fedstate` process' },
  'log-level': { type: 'string', default: 'info', choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], help: 'log level of the child processes (--processes; logs in OUT/logs)' },
  store: { type: 'string', help: 'persist the reducer store (level) in DIR instead of memory' },
  out: { type: 'string', default: 'out', help: 'directory for the accuracy plot' },
  strict: { type: 'boolean', default: true, help: 'round-trip every frame through the wire codec (inproc)' },
  json: { type: 'boolean', default: false, help: 'last stdout line is one JSON summary' },
  dashboard: { type: 'boolean', default: false, help: 'serve the dashboard during the run and keep it up after the session until Ctrl-C' },
  'dashboard-port': { type: 'number', default: 8090, min: 0, max: 65535, integer: true, help: 'port of --dashboard (0: any free port)' },
  help: { type: 'boolean', default: false, help: 'show this help' },
} satisfies Record<string, FlagSpec>;

interface RoundLine {
  round: number;
  accuracy: number;
  loss: number;
  updates: number;
  ms: number;
}

/** What the session's round records carry, in-process or from the REST API. */
interface RoundRecordLike {
  round: number;
  status: string;
  reason: string;
  updates: number;
  evalMetrics: Record<string, number>;
}

interface Outcome {
  status: string;
  failure: string;
  trail: { ok: boolean; entries: number; reason?: string };
}

async function main(): Promise<void> {
  const args = parseFlags(process.argv.slice(2), flags);
  if (args.help) {
    console.log(`usage: npx tsx sandbox/run.ts [flags]\n\n${flagHelp(flags)}`);
    return;
  }
  const transport = (args.transport ?? (args.processes ? 'grpc' : 'inproc')) as 'inproc' | 'grpc' | 'ws';
  if (args.processes && transport === 'inproc') throw new FedError('config', '--processes needs a network transport: --transport grpc or ws (inproc cannot cross processes)');
  if (args.processes && args.dashboard) throw new FedError('config', '--dashboard is for in-process runs; with --processes the reducer serves the dashboard at its API URL (printed) while the run lasts');
  const say = (line: string): void => {
    (args.json ? process.stderr : process.stdout).write(`${line}\n`);
  };
  const started = performance.now();
  const session = {
    sessionId: `sandbox-${args.seed}`,
    rounds: args.rounds,
    roundTimeoutMs: args.roundTimeout,
    localEpochs: args.localEpochs,
    batchSize: args.batchSize,
    learningRate: args.lr,
    fraction: args.fraction,
    seed: args.seed,
  };
  const how = args.processes ? `${1 + args.combiners + args.clients} processes over ${transport}` : transport === 'inproc' ? `one process, inproc${args.strict ? ' (strict)' : ''}` : `one process over loopback ${transport}`;
  // With --processes each node process picks its own backend; this one only builds the seed model.
  const backend = args.processes ? 'per process' : await initBackend();
  say(`fedstate sandbox: ${args.combiners} combiner(s), ${args.clients} client(s), ${args.rounds} round(s), MLP 784-200-200-10 on MNIST (8000 train / 2000 held out), partition ${args.partition}, ${how}, TF.js backend ${backend}`);

  const lines: RoundLine[] = [];
  const bar = (done: number): void => {
    if (!process.stderr.isTTY) return;
    const width = 30;
    const fill = Math.round((done / args.rounds) * width);
    process.stderr.write(`\r[${'#'.repeat(fill)}${' '.repeat(width - fill)}] round ${Math.min(done + 1, args.rounds)}/${args.rounds}${done === args.rounds ? '\n' : ''}`);
  };
  const onRound = (r: RoundRecordLike, ms: number): void => {
    const line: RoundLine = { round: r.round, accuracy: r.evalMetrics.accuracy ?? NaN, loss: r.evalMetrics.loss ?? NaN, updates: r.updates, ms: Math.round(ms) };
    lines.push(line);
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    if (!args.json) say(`${String(line.round).padStart(5)}  ${line.accuracy.toFixed(4).padStart(8)}  ${line.loss.toFixed(4).padStart(7)}  ${String(line.updates).padStart(7)}  ${String(line.ms).padStart(6)}${r.status === 'ok' ? '' : `  FAILED: ${r.reason}`}`);
    bar(lines.length);
  };
  const header = (): void => {
    bar(0);
    if (!args.json) say('\nround  accuracy  loss     updates  ms');
  };

  let outcome: Outcome;
  if (args.processes) {
    const interrupted = new AbortController();
    process.once('SIGINT', () => interrupted.abort());
    outcome = await runProcesses({
      transport: transport as 'grpc' | 'ws',
      combiners: args.combiners,
      clients: args.clients,
      seed: args.seed,
      partition: args.partition,
      session,
      store: args.store,
      out: args.out,
      logLevel: args.logLevel,
      say,
      signal: interrupted.signal,
      onStart: header,
      onRound,
    });
  } else {
    outcome = await runInProcess(args, transport, session, header, onRound);
  }

  mkdirSync(args.out, { recursive: true });
  const plotPath = join(args.out, 'sandbox-accuracy.svg');
  writeFileSync(
    plotPath,
    linePlot([{ name: 'held-out accuracy', points: lines.map((l) => [l.round, l.accuracy]) }], { title: `fedstate sandbox: ${args.clients} clients, ${args.combiners} combiners`, xLabel: 'round', yLabel: 'accuracy', yMax: 1 }),
  );
  const finalAccuracy = lines.at(-1)?.accuracy ?? NaN;
  const wallMs = Math.round(performance.now() - started);
  say(`\nsession ${outcome.status}${outcome.failure ? ` (${outcome.failure})` : ''}: final accuracy ${finalAccuracy.toFixed(4)}, trail ${outcome.trail.ok ? `verified (${outcome.trail.entries} entries)` : `BROKEN: ${outcome.trail.reason}`}, ${(wallMs / 1000).toFixed(1)} s; plot ${plotPath}`);
  if (args.json) {
    console.log(
      JSON.stringify({
        rounds: lines.map((l) => ({ ...l, accuracy: round4(l.accuracy), loss: round4(l.loss) })),
        finalAccuracy: round4(finalAccuracy),
        status: outcome.status,
        trailVerified: outcome.trail.ok,
        transport,
        processes: args.processes,
        wallMs,
      }),
    );
  }
  if (outcome.status !== 'done') process.exitCode = 1;
}

type Args = ReturnType<typeof parseFlags<typeof flags>>;

async function runInProcess(args: Args, transport: 'inproc' | 'grpc' | 'ws', session: ProcessRunOptions['session'], header: () => void, onRound: (r: RoundRecordLike, ms: number) => void): Promise<Outcome> {
  const { train, test } = loadMnist({ train: 8000, test: 2000, seed: args.seed });
  const parts = partition(args.partition, train.y, args.clients, args.seed);
  const build = () => buildMlp({ seed: args.seed });
  const store = args.store ? await openStore({ dir: args.store }) : undefined;
  const fed = await startFederation({
    combiners: args.combiners,
    clients: parts.map((idx, i) => tfTask({ build, data: subset(train, idx), seed: args.seed * 1000 + i })),
    strict: args.strict,
    store,
    evaluate: tfEvaluator(build, test),
    // Loopback sockets on ports the OS picks; each listener reports its real endpoint, which is what
    // combiners announce to the reducer and the reducer hands to clients in discovery.
    ...(transport === 'inproc' ? {} : { transport: () => createTransport(transport), endpoint: () => `${transport}://127.0.0.1:0` }),
  });
  let dashboard: SandboxDashboard | undefined;
  try {
    await fed.ready();
    if (args.dashboard) dashboard = await sandboxDashboard(fed, { port: args.dashboardPort, json: args.json });
    await fed.reducer.seed(getParams(build()));
    let roundStart = performance.now();
    let seen = 0;
    header();
    fed.reducer.actor.subscribe((snap) => {
      const history = snap.context.history;
      while (seen < history.length) {
        const now = performance.now();
        onRound(history[seen++]!, now - roundStart);
        roundStart = now;
      }
    });
    fed.reducer.start(session);
    const summary = await fed.reducer.finished();
    const trail = await verifyTrail(fed.reducer.store);
    return { status: summary.status, failure: summary.failure, trail: trail.ok ? trail : { ok: false, entries: trail.entries, reason: trail.reason } };
  } finally {
    if (dashboard) dashboard.keepServing(() => fed.close());
    else await fed.close();
  }
}

const round4 = (x: number): number | null => (Number.isFinite(x) ? Math.round(x * 10_000) / 10_000 : null);

main().catch((e) => {
  console.error(`sandbox failed: ${errorMessage(e)}`);
  process.exit(isFedError(e, 'cancelled') ? 130 : 1);
});
