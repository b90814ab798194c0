// Pseudo-distributed run: a whole federation (1 reducer, combiners, clients) training the 2-layer MLP
// on MNIST, every node its own actor system.
//  - default: one process, nodes connected by the in-process transport in strict mode (every frame
//    through the wire codec);
//  - --transport grpc|ws: still one process, but every link is a real loopback socket;
//  - --processes: every node is its own `fedstate` OS process over gRPC (or ws), and the session is
//    driven through the reducer's REST API (sandbox/processes.ts).
// Faults on purpose: --dropout / --stragglers (clients that vanish or stall each round, in any mode),
// and with --processes --kill reducer@N / combiner:K@N (SIGKILL mid-round; a reducer is restarted on
// its store) and --stop-at N (`fedstate stop` mid-round, measuring how long until every node is idle).
// The same seed gives the same data split per client, the same initial model and the same session
// settings in every mode, so their accuracies can be compared.
//
//   npx tsx sandbox/run.ts [--rounds 5] [--clients 5] [--combiners 2] [--transport grpc] [--processes] [--json] ...   (--help lists all)
import { adversarialTask, parseAttack, type AttackOptions } from '../src/actors/adversary.ts';
import { planFor } from '../src/actors/strategy.ts';
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
import { secureFederation } from '../src/security/dev-federation.ts';
import { flagHelp, parseFlags, type FlagSpec } from '../src/util/args.ts';
import { linePlot } from '../src/util/svg-plot.ts';
import { withDropout, dropoutModes, checkPlan, type DropoutMode } from '../src/actors/dropout.ts';
import { parseKillSpec, runProcesses, type KillReport, type KillSpec, type ProcessRunOptions, type StopReport } from './processes.ts';

const flags = {
  rounds: { type: 'number', default: 5, min: 1, integer: true, help: 'training rounds' },
  clients: { type: 'number', default: 5, min: 1, integer: true, help: 'clients (each holds a private shard of the 8,000 training digits)' },
  combiners: { type: 'number', default: 2, min: 1, integer: true, help: 'combiners' },
  'local-epochs': { type: 'number', default: 2, min: 1, integer: true, help: 'local epochs per round (E)' },
  'batch-size': { type: 'number', default: 20, min: 1, integer: true, help: 'local batch size (B)' },
  lr: { type: 'number', default: 0.2, min: 0, help: 'client SGD learning rate' },
  seed: { type: 'number', default: 1, min: 0, integer: true, help: 'seed for data split, model init and sampling' },
  partition: { type: 'string', default: 'iid', help: 'iid | dirichlet:ALPHA | shards:K | quantity:ALPHA' },
  strategy: { type: 'string', default: 'fedavg', help: 'aggregation plan, e.g. fedavg, trimmedmean:beta=0.2, multikrum:f=1, median+fedadam:lr=0.01 (see README, Strategies)' },
  attack: { type: 'string', help: 'FRACTION:scale[:FACTOR] or FRACTION:random[:SIGMA]: that fraction of the clients send Byzantine updates (in-process runs)' },
  fraction: { type: 'number', default: 1, min: 0, max: 1, help: 'fraction of clients sampled per round (C)' },
  'round-timeout': { type: 'number', default: 120_000, min: 100, integer: true, help: 'round timeout in ms' },
  'min-clients': { type: 'number', default: 1, min: 1, integer: true, help: 'quorum: a round starts once this many clients are connected (waits up to the quorum timeout)' },
  'buffer-size': { type: 'number', default: -1, min: -1, integer: true, help: 'a combiner closes its round after this many accepted updates (-1: wait for every selected client or the timeout)' },
  dropout: { type: 'number', default: 0, min: 0, max: 1, help: 'fraction of clients that drop out each round (seeded, src/actors/dropout.ts)' },
  stragglers: { type: 'number', default: 0, min: 0, max: 1, help: 'fraction of clients that stall past the round timeout each round' },
  'dropout-mode': { type: 'string', default: 'fail', choices: dropoutModes, help: "how a dropout vanishes: 'fail' (its training task fails) or 'disconnect' (it drops its combiner link)" },
  kill: { type: 'string', help: 'with --processes: SIGKILL a node mid-session, repeatable: reducer@ROUND (restarted on its store) or combiner:K@ROUND (stays dead); +MS waits longer (reducer@2+500)' },
  'stop-at': { type: 'number', min: 1, integer: true, help: 'with --processes: stop the session while this round\'s clients train and measure how long until every combiner and client is idle' },
  'stop-with': { type: 'string', default: 'api', choices: ['api', 'cli'], help: "--stop-at sends the stop request itself the moment a client trains ('api', what `fedstate stop` sends) or runs `fedstate stop` ('cli', a second or more later)" },
  transport: { type: 'string', choices: ['inproc', 'grpc', 'ws'], help: 'how nodes talk: inproc (default), or loopback grpc / ws sockets (default grpc with --processes)' },
  processes: { type: 'boolean', default: false, help: 'run every reducer, combiner and client as its own `fedstate` process' },
  tls: { type: 'boolean', default: false, help: 'mutual TLS on every link over grpc (or --transport ws): in one process with HMAC tokens, certificates in a temp dir; with --processes every node its own certificate from OUT/pki' },
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
  status: string;
  /** Updates refused (any reason) in the round. */
  rejected: number;
}

/** What the session's round records carry, in-process or from the REST API. */
interface RoundRecordLike {
  round: number;
  status: string;
  reason: string;
  updates: number;
  rejected: Record<string, number>;
  evalMetrics: Record<string, number>;
}

interface Outcome {
  status: string;
  failure: string;
  trail: { ok: boolean; entries: number; reason?: string };
  kills?: KillReport[];
  stop?: StopReport;
}

/** `--kill` may be given several times (parseFlags keeps one value): they are taken out first. */
function extractKills(argv: string[]): { rest: string[]; kills: string[] } {
  const rest: string[] = [];
  const kills: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--kill') {
      const v = argv[i + 1];
      if (v === undefined || v.startsWith('--')) throw new FedError('config', '--kill needs a value (reducer@ROUND or combiner:K@ROUND)');
      kills.push(...v.split(','));
      i++;
    } else if (a.startsWith('--kill=')) kills.push(...a.slice('--kill='.length).split(','));
    else rest.push(a);
  }
  return { rest, kills: kills.filter((k) => k.trim() !== '') };
}

async function main(): Promise<void> {
  const extracted = extractKills(process.argv.slice(2));
  const args = parseFlags(extracted.rest, flags);
  if (args.help) {
    console.log(`usage: npx tsx sandbox/run.ts [flags]\n\n${flagHelp(flags)}`);
    return;
  }
  const transport = (args.transport ?? (args.processes || args.tls ? 'grpc' : 'inproc')) as 'inproc' | 'grpc' | 'ws';
  if (args.tls && transport === 'inproc') throw new FedError('config', '--tls needs a network transport: --transport grpc or ws (inproc has no TLS)');
  if (args.processes && transport === 'inproc') throw new FedError('config', '--processes needs a network transport: --transport grpc or ws (inproc cannot cross processes)');
  const kills: KillSpec[] = extracted.kills.map((k) => parseKillSpec(k, args.combiners));
  if (!args.processes && (kills.length || args.stopAt !== undefined)) throw new FedError('config', '--kill and --stop-at act on node processes: add --processes');
  if (kills.filter((k) => k.target !== 'reducer').length >= args.combiners) throw new FedError('config', `--kill would leave no combiner alive (${args.combiners} combiner(s))`);
  checkPlan({ dropout: args.dropout, stragglers: args.stragglers, seed: args.seed, clientsTotal: args.clients });
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
    strategy: planFor(args.strategy).spec,
    ...(args.bufferSize > 0 ? { bufferSize: args.bufferSize } : {}),
    ...(args.minClients > 1 ? { minClients: args.minClients } : {}),
  };
  if (args.attack) parseSandboxAttack(args.attack, args.clients); // refuse a bad spec before anything starts
  if (args.attack && args.processes) throw new FedError('config', '--attack is for in-process runs');
  const how = args.processes ? `${1 + args.combiners + args.clients} processes over ${transport}${args.tls ? ' with mutual TLS' : ''}` : transport === 'inproc' ? `one process, inproc${args.strict ? ' (strict)' : ''}` : `one process over loopback ${transport}${args.tls ? ' with mutual TLS and tokens' : ''}`;
  // With --processes each node process picks its own backend; this one only builds the seed model.
  const backend = args.processes ? 'per process' : await initBackend();
  say(`fedstate sandbox: ${args.combiners} combiner(s), ${args.clients} client(s), ${args.rounds} round(s), MLP 784-200-200-10 on MNIST (8000 train / 2000 held out), partition ${args.partition}, ${how}, TF.js backend ${backend}`);
  const faultsOn = args.dropout > 0 || args.stragglers > 0;
  if (faultsOn) say(`faults: each round ${args.dropout} of the clients drop out (${args.dropoutMode}) and ${args.stragglers} straggle past the ${args.roundTimeout} ms round timeout (seed ${args.seed})`);
  for (const k of kills) say(`fault: SIGKILL ${k.target === 'reducer' ? 'the reducer (restarted on its store)' : `combiner ${k.target} (stays dead)`} once round ${k.round} is under way${k.delayMs ? ` + ${k.delayMs} ms` : ''}`);
  if (args.stopAt !== undefined) say(`fault: stop the session (${args.stopWith === 'cli' ? '`fedstate stop`' : 'the request `fedstate stop` sends'}) once round ${args.stopAt} is under way`);

  const lines: RoundLine[] = [];
  const bar = (done: number): void => {
    if (!process.stderr.isTTY) return;
    const width = 30;
    const fill = Math.round((done / args.rounds) * width);
    process.stderr.write(`\r[${'#'.repeat(fill)}${' '.repeat(width - fill)}] round ${Math.min(done + 1, args.rounds)}/${args.rounds}${done === args.rounds ? '\n' : ''}`);
  };
  const onRound = (r: RoundRecordLike, ms: number): void => {
    const rejected = Object.values(r.rejected ?? {}).reduce((n, x) => n + x, 0);
    const line: RoundLine = { round: r.round, accuracy: r.evalMetrics.accuracy ?? NaN, loss: r.evalMetrics.loss ?? NaN, updates: r.updates, ms: Math.round(ms), status: r.status, rejected };
    lines.push(line);
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    const refused = rejected ? `  rejected ${Object.entries(r.rejected).map(([k, v]) => `${k}:${v}`).join(',')}` : '';
    if (!args.json) say(`${String(line.round).padStart(5)}  ${line.accuracy.toFixed(4).padStart(8)}  ${line.loss.toFixed(4).padStart(7)}  ${String(line.updates).padStart(7)}  ${String(line.ms).padStart(6)}${r.status === 'ok' ? '' : `  FAILED: ${r.reason}`}${refused}`);
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
      kills,
      stopAt: args.stopAt,
      stopWith: args.stopWith as 'api' | 'cli',
      dropout: args.dropout,
      stragglers: args.stragglers,
      dropoutMode: args.dropoutMode,
      tls: args.tls,
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
  const finalAccuracy = lines.findLast((l) => l.status === 'ok')?.accuracy ?? NaN;
  const wallMs = Math.round(performance.now() - started);
  const ok = lines.filter((l) => l.status === 'ok').length;
  if (kills.length || args.stopAt !== undefined || faultsOn) {
    say(`\nrounds: ${ok} committed, ${lines.length - ok} failed, ${lines.reduce((n, l) => n + l.rejected, 0)} update(s) refused`);
    for (const k of outcome.kills ?? []) {
      if (k.skipped) say(`kill ${k.spec}: not performed (the session ended first)`);
      else if (k.target === 'reducer') say(`kill ${k.spec}: reducer SIGKILLed at ${(k.atMs / 1000).toFixed(1)} s in round ${k.round}; restarted in ${fmtS(k.restartMs)}, ${k.roundsLost ?? '?'} committed round(s) lost, next round committed ${fmtS(k.recoveryMs)} after the kill`);
      else say(`kill ${k.spec}: combiner ${k.target} SIGKILLed at ${(k.atMs / 1000).toFixed(1)} s in round ${k.round}; its ${k.clients?.length ?? 0} client(s) reassigned ${fmtS(k.reassignedMs)} after the kill`);
    }
    if (outcome.stop) say(`stop in round ${outcome.stop.round}: every combiner and client idle ${Number.isFinite(outcome.stop.idleMs) ? `${outcome.stop.idleMs} ms` : 'NOT within 15 s'} after the reducer stopped the session`);
  }
  say(`\nsession ${outcome.status}${outcome.failure ? ` (${outcome.failure})` : ''}: final accuracy ${finalAccuracy.toFixed(4)}, trail ${outcome.trail.ok ? `verified (${outcome.trail.entries} entries)` : `BROKEN: ${outcome.trail.reason}`}, ${(wallMs / 1000).toFixed(1)} s; plot ${plotPath}`);
  if (args.json) {
    console.log(
      JSON.stringify({
        rounds: lines.map((l) => ({ ...l, accuracy: round4(l.accuracy), loss: round4(l.loss) })),
        finalAccuracy: round4(finalAccuracy),
        status: outcome.status,
        trailVerified: outcome.trail.ok,
        trailEntries: outcome.trail.entries,
        ...(faultsOn ? { faults: { dropout: args.dropout, stragglers: args.stragglers, mode: args.dropoutMode, seed: args.seed } } : {}),
        ...(outcome.kills ? { kills: outcome.kills } : {}),
        ...(outcome.stop ? { stop: { ...outcome.stop, idleMs: Number.isFinite(outcome.stop.idleMs) ? outcome.stop.idleMs : null } } : {}),
        transport,
        processes: args.processes,
        tls: args.tls,
        wallMs,
      }),
    );
  }
  // A session stopped on purpose (--stop-at) ended as asked.
  if (outcome.status !== (args.stopAt !== undefined ? 'stopped' : 'done')) process.exitCode = 1;
}

type Args = ReturnType<typeof parseFlags<typeof flags>>;

/** `--attack 0.2:scale:-10`: which client indices attack, and how. */
function parseSandboxAttack(spec: string, clients: number): { indices: Set<number>; options: AttackOptions } {
  const colon = spec.indexOf(':');
  const fraction = Number(colon < 0 ? spec : spec.slice(0, colon));
  if (colon < 0 || !Number.isFinite(fraction) || fraction < 0 || fraction > 1) throw new FedError('config', `--attack expects FRACTION:MODE, e.g. 0.2:scale:-10, got "${spec}"`);
  const count = Math.round(fraction * clients);
  const indices = new Set(Array.from({ length: count }, (_, k) => Math.floor((k * clients) / Math.max(1, count))));
  return { indices, options: parseAttack(spec.slice(colon + 1)) };
}

async function runInProcess(args: Args, transport: 'inproc' | 'grpc' | 'ws', session: ProcessRunOptions['session'], header: () => void, onRound: (r: RoundRecordLike, ms: number) => void): Promise<Outcome> {
  const { train, test } = loadMnist({ train: 8000, test: 2000, seed: args.seed });
  const parts = partition(args.partition, train.y, args.clients, args.seed);
  const build = () => buildMlp({ seed: args.seed });
  const attack = args.attack ? parseSandboxAttack(args.attack, args.clients) : undefined;
  const store = args.store ? await openStore({ dir: args.store }) : undefined;
  const fed = await startFederation({
    combiners: args.combiners,
    clients: parts.map((idx, i) => {
      const honest = tfTask({ build, data: subset(train, idx), seed: args.seed * 1000 + i });
      // the attackers are spread evenly over the client indices (and so over the combiners)
      const task = attack && attack.indices.has(i) ? adversarialTask(honest, { ...attack.options, seed: args.seed * 1000 + i }) : honest;
      if (args.dropout === 0 && args.stragglers === 0) return task;
      return withDropout(task, {
        dropout: args.dropout,
        stragglers: args.stragglers,
        seed: args.seed,
        clientsTotal: args.clients,
        index: i,
        mode: args.dropoutMode as DropoutMode,
        disconnect: () => {
          const client = fed.clients[i];
          const combiner = client?.actor.getSnapshot().context.combiner;
          if (combiner) client!.node.linkTo(combiner)?.close('dropout: client vanished');
        },
      });
    }),
    strict: args.strict,
    store,
    evaluate: tfEvaluator(build, test),
    // Loopback sockets on ports the OS picks; each listener reports its real endpoint, which is what
    // combiners announce to the reducer and the reducer hands to clients in discovery.
    ...(args.tls
      ? await secureFederation(transport as 'grpc' | 'ws', { combiners: args.combiners, clients: args.clients })
      : transport === 'inproc' ? {} : { transport: () => createTransport(transport), endpoint: () => `${transport}://127.0.0.1:0` }),
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

const fmtS = (ms: number | undefined): string => (ms === undefined ? '(not measured)' : `${(ms / 1000).toFixed(1)} s`);

const round4 = (x: number): number | null => (Number.isFinite(x) ? Math.round(x * 10_000) / 10_000 : null);

main().catch((e) => {
  console.error(`sandbox failed: ${errorMessage(e)}`);
  process.exit(isFedError(e, 'cancelled') ? 130 : 1);
});
