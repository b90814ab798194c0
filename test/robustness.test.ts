// Robust aggregation on real MNIST training: 20% of the clients send boosted sign-flipped updates.
// Plain FedAvg is wrecked; trimmed mean and Multi-Krum stay within 2 points of the clean run.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { adversarialTask } from '../src/actors/adversary.ts';
import { startFederation } from '../src/actors/federation.ts';
import type { TaskCode } from '../src/actors/client.ts';
import { loadMnist, subset } from '../src/data/mnist.ts';
import { iid } from '../src/data/partition.ts';
import { buildMlp, getParams, initBackend } from '../src/model/tf.ts';
import { tfEvaluator, tfTask } from '../src/model/tf-task.ts';

const CLIENTS = 10;
const ROUNDS = 3;
const { train, test: held } = loadMnist({ train: 8000, test: 2000, seed: 3 });
const parts = iid(train.n, CLIENTS, 3);
const build = () => buildMlp({ seed: 3 });

async function run(strategy: string, malicious: boolean): Promise<number> {
  const clients: TaskCode[] = parts.map((idx, i) => {
    const honest = tfTask({ build, data: subset(train, idx), seed: 300 + i });
    // clients 1 and 6 are malicious: one per combiner under least-packed assignment of 10 clients to 2
    return malicious && (i === 0 || i === 5) ? adversarialTask(honest, { mode: 'scale', factor: -10 }) : honest;
  });
  const fed = await startFederation({ combiners: 2, clients, strict: false, evaluate: tfEvaluator(build, held) });
  try {
    await fed.ready();
    const home = (k: string) => fed.combiners.findIndex((c) => Object.hasOwn(c.actor.getSnapshot().context.clients, k));
    assert.is.not(home('client/k1'), home('client/k6'), 'one attacker per combiner (the f=1 / beta=0.2 setting assumes it)');
    await fed.reducer.seed(getParams(build()));
    fed.reducer.start({ sessionId: `${strategy}-${malicious}`, rounds: ROUNDS, roundTimeoutMs: 120_000, localEpochs: 1, batchSize: 20, learningRate: 0.2, strategy });
    const summary = await fed.reducer.finished();
    assert.is(summary.status, 'done', summary.failure);
    return summary.rounds.at(-1)!.evalMetrics.accuracy!;
  } finally {
    await fed.close();
  }
}

test('20% sign-flipping clients: FedAvg degrades, trimmed mean and Multi-Krum stay within 2 points of clean', async () => {
  await initBackend();
  const clean = await run('fedavg', false);
  const fedavg = await run('fedavg', true);
  const trimmed = await run('trimmedmean:beta=0.2', true);
  const krum = await run('multikrum:f=1', true);
  console.log(`  final accuracy after ${ROUNDS} rounds: clean FedAvg ${clean.toFixed(4)}, attacked FedAvg ${fedavg.toFixed(4)}, attacked trimmed mean ${trimmed.toFixed(4)}, attacked Multi-Krum ${krum.toFixed(4)}`);
  assert.ok(clean > 0.85, `clean run trains (${clean})`);
  assert.ok(fedavg < clean - 0.1, `plain FedAvg is degraded by the attack (${fedavg} vs ${clean})`);
  assert.ok(trimmed >= clean - 0.02, `trimmed mean within 2 points (${trimmed} vs ${clean})`);
  assert.ok(krum >= clean - 0.02, `Multi-Krum within 2 points (${krum} vs ${clean})`);
});

test.run();
