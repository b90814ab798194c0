// Pseudo-distributed run: a whole federation (1 reducer, combiners, clients) training the 2-layer MLP
// on MNIST, every node its own actor system, connected in one process by the in-process transport
// in strict mode (every frame through the wire codec).
//
//   npx tsx sandbox/run.ts [--rounds 5] [--clients 5] [--combiners 2] [--json] ...   (--help lists all)
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startFederation } from '../src/actors/federation.ts';
import { errorMessage } from '../src/errors.ts';
import { loadMnist, subset } from '../src/data/mnist.ts';
import { partition } from '../src/data/partition.ts';
import { buildMlp, getParams, initBackend } from '../src/model/tf.ts';
import { tfEvaluator, tfTask } from '../src/model/tf-task.ts';
import { openStore } from '../src/store/index.ts';
import { verifyTrail } from '../src/store/trail.ts';
import { flagHelp, parseFlags, type FlagSpec } from '../src/util/args.ts';
import { linePlot } from '../src/util/svg-plot.ts';

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
  store: { type: 'string', help: 'persist the reducer store (level) in DIR instead of memory' },
  out: { type: 'string', default: 'out', help: 'directory for the accuracy plot' },
  strict: { type: 'boolean', default: true, help: 'round-trip every frame through the wire codec' },
  json: { type: 'boolean', default: false, help: 'last stdout line is one JSON summary' },
  help: { type: 'boolean', default: false, help: 'show this help' },
} satisfies Record<string, FlagSpec>;

interface RoundLine {
  round: number;
  accuracy: number;
  loss: number;
  updates: number;
  ms: number;
}

async function main(): Promise<void> {
  const args = parseFlags(process.argv.slice(2), flags);
  if (args.help) {
    console.log(`usage: npx tsx sandbox/run.ts [flags]\n\n${flagHelp(flags)}`);
    return;
  }
  const say = (line: string): void => {
    (args.json ? process.stderr : process.stdout).write(`${line}\n`);
  };
  const started = performance.now();
  const backend = await initBackend();
  const { train, test } = loadMnist({ train: 8000, test: 2000, seed: args.seed });
  const parts = partition(args.partition, train.y, args.clients, args.seed);
  const build = () => buildMlp({ seed: args.seed });
  const store = args.store ? await openStore({ dir: args.store }) : undefined;
  say(`fedstate sandbox: ${args.combiners} combiner(s), ${args.clients} client(s), ${args.rounds} round(s), MLP 784-200-200-10 on MNIST (${train.n} train / ${test.n} held out), partition ${args.partition}, TF.js backend ${backend}`);

  const fed = await startFederation({
    combiners: args.combiners,
    clients: parts.map((idx, i) => tfTask({ build, data: subset(train, idx), seed: args.seed * 1000 + i })),
    strict: args.strict,
    store,
    evaluate: tfEvaluator(build, test),
  });
  const lines: RoundLine[] = [];
  try {
    await fed.ready();
    await fed.reducer.seed(getParams(build()));
    let roundStart = performance.now();
    let seen = 0;
    const bar = (done: number): void => {
      if (!process.stderr.isTTY) return;
      const width = 30;
      const fill = Math.round((done / args.rounds) * width);
      process.stderr.write(`\r[${'#'.repeat(fill)}${' '.repeat(width - fill)}] round ${Math.min(done + 1, args.rounds)}/${args.rounds}${done === args.rounds ? '\n' : ''}`);
    };
    bar(0);
    if (!args.json) say('\nround  accuracy  loss     updates  ms');
    fed.reducer.actor.subscribe((snap) => {
      const history = snap.context.history;
      while (seen < history.length) {
        const r = history[seen++]!;
        const now = performance.now();
        const line: RoundLine = { round: r.round, accuracy: r.evalMetrics.accuracy ?? NaN, loss: r.evalMetrics.loss ?? NaN, updates: r.updates, ms: Math.round(now - roundStart) };
        roundStart = now;
        lines.push(line);
        if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
        if (!args.json) say(`${String(line.round).padStart(5)}  ${line.accuracy.toFixed(4).padStart(8)}  ${line.loss.toFixed(4).padStart(7)}  ${String(line.updates).padStart(7)}  ${String(line.ms).padStart(6)}${r.status === 'ok' ? '' : `  FAILED: ${r.reason}`}`);
        bar(lines.length);
      }
    });
    fed.reducer.start({
      sessionId: `sandbox-${args.seed}`,
      rounds: args.rounds,
      roundTimeoutMs: args.roundTimeout,
      localEpochs: args.localEpochs,
      batchSize: args.batchSize,
      learningRate: args.lr,
      fraction: args.fraction,
      seed: args.seed,
    });
    const summary = await fed.reducer.finished();
    const trail = await verifyTrail(fed.reducer.store);
    mkdirSync(args.out, { recursive: true });
    const plotPath = join(args.out, 'sandbox-accuracy.svg');
    writeFileSync(
      plotPath,
      linePlot([{ name: 'held-out accuracy', points: lines.map((l) => [l.round, l.accuracy]) }], { title: `fedstate sandbox: ${args.clients} clients, ${args.combiners} combiners`, xLabel: 'round', yLabel: 'accuracy', yMax: 1 }),
    );
    const finalAccuracy = lines.at(-1)?.accuracy ?? NaN;
    say(`\nsession ${summary.status}${summary.failure ? ` (${summary.failure})` : ''}: final accuracy ${finalAccuracy.toFixed(4)}, trail ${trail.ok ? `verified (${trail.entries} entries)` : `BROKEN: ${trail.reason}`}, ${((performance.now() - started) / 1000).toFixed(1)} s; plot ${plotPath}`);
    if (args.json) {
      console.log(JSON.stringify({ rounds: lines.map((l) => ({ ...l, accuracy: round4(l.accuracy), loss: round4(l.loss) })), finalAccuracy: round4(finalAccuracy), status: summary.status, trailVerified: trail.ok }));
    }
    if (summary.status !== 'done') process.exitCode = 1;
  } finally {
    await fed.close();
  }
}

const round4 = (x: number): number | null => (Number.isFinite(x) ? Math.round(x * 10_000) / 10_000 : null);

main().catch((e) => {
  console.error(`sandbox failed: ${errorMessage(e)}`);
  process.exit(1);
});
