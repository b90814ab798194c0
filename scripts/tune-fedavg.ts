// Measures plain FedAvg on MNIST with the model helpers alone (no actors, no transport), to choose
// the local training settings the sandbox and the integration tests use.
//
//   npx tsx scripts/tune-fedavg.ts                          the chosen settings
//   npx tsx scripts/tune-fedavg.ts --epochs 2 --batch 20 --lr 0.1
//   npx tsx scripts/tune-fedavg.ts --grid "1,10,0.05 5,32,0.1"   several E,B,lr settings, summary table at the end
//   options: --rounds 5 --clients 5 --partition iid --seed 0 --train 8000 --test 2000
//
// Each round every client starts from the global parameters, trains E epochs of minibatch SGD on its
// shard, and the global model becomes the average of the client models weighted by example count.
import * as tf from '@tensorflow/tfjs';
import { parseArgs } from 'node:util';
import { loadMnist, subset, type Dataset } from '../src/data/mnist.ts';
import { partition } from '../src/data/partition.ts';
import { deriveSeed } from '../src/data/random.ts';
import { buildMlp, evaluate, getParams, initBackend, setParams, trainLocal } from '../src/model/tf.ts';
import { makeParams, type Params } from '../src/model/params.ts';

interface Setting {
  epochs: number;
  batch: number;
  lr: number;
}

interface Outcome extends Setting {
  accuracy: number[];
  roundTrainMs: number[];
}

const { values } = parseArgs({
  options: {
    epochs: { type: 'string', default: '5' },
    batch: { type: 'string', default: '32' },
    lr: { type: 'string', default: '0.2' },
    grid: { type: 'string' },
    rounds: { type: 'string', default: '5' },
    clients: { type: 'string', default: '5' },
    partition: { type: 'string', default: 'iid' },
    seed: { type: 'string', default: '0' },
    train: { type: 'string', default: '8000' },
    test: { type: 'string', default: '2000' },
  },
});

const rounds = Number(values.rounds);
const clientCount = Number(values.clients);
const seed = Number(values.seed);

function weightedAverage(updates: Array<{ params: Params; weight: number }>): Params {
  const first = updates[0]!.params;
  // accumulate in doubles so the average does not depend on the order clients arrive in
  const sum = new Float64Array(first.data.length);
  let total = 0;
  for (const { params, weight } of updates) {
    for (let i = 0; i < sum.length; i++) sum[i]! += params.data[i]! * weight;
    total += weight;
  }
  return makeParams(first.layout, Float32Array.from(sum, (v) => v / total));
}

async function runFedAvg(setting: Setting, shards: Dataset[], test: Dataset): Promise<Outcome> {
  const model = buildMlp({ hidden: 200, seed });
  let global = getParams(model);
  const initial = evaluate(model, test);
  console.log(`\nE=${setting.epochs} B=${setting.batch} lr=${setting.lr}   round 0: accuracy ${initial.accuracy.toFixed(4)}`);
  const outcome: Outcome = { ...setting, accuracy: [], roundTrainMs: [] };
  for (let round = 1; round <= rounds; round++) {
    const updates: Array<{ params: Params; weight: number }> = [];
    let trainMs = 0;
    const clientMs: string[] = [];
    for (const [c, shard] of shards.entries()) {
      setParams(model, global);
      const r = await trainLocal(model, shard, {
        epochs: setting.epochs,
        batchSize: setting.batch,
        learningRate: setting.lr,
        seed: deriveSeed(seed, 'client', c, 'round', round),
      });
      updates.push({ params: getParams(model), weight: r.numExamples });
      trainMs += r.ms;
      clientMs.push(r.ms.toFixed(0));
    }
    const aggStarted = performance.now();
    global = weightedAverage(updates);
    const aggMs = performance.now() - aggStarted;
    setParams(model, global);
    const evalStarted = performance.now();
    const ev = evaluate(model, test);
    const evalMs = performance.now() - evalStarted;
    outcome.accuracy.push(ev.accuracy);
    outcome.roundTrainMs.push(trainMs);
    console.log(
      `  round ${round}: accuracy ${ev.accuracy.toFixed(4)}  loss ${ev.loss.toFixed(4)}  ` +
        `train ${trainMs.toFixed(0)} ms (clients ${clientMs.join('/')})  aggregate ${aggMs.toFixed(0)} ms  eval ${evalMs.toFixed(0)} ms`,
    );
  }
  model.dispose();
  return outcome;
}

function parseSetting(text: string): Setting {
  const [epochs, batch, lr] = text.split(',').map(Number);
  if (!Number.isInteger(epochs) || !Number.isInteger(batch) || !(lr! > 0)) throw new Error(`--grid wants E,B,lr, got "${text}"`);
  return { epochs: epochs!, batch: batch!, lr: lr! };
}

async function main(): Promise<void> {
  const backend = await initBackend();
  const loadStarted = performance.now();
  const { train, test } = loadMnist({ train: Number(values.train), test: Number(values.test), seed });
  const loadMs = performance.now() - loadStarted;
  const parts = partition(values.partition, train.y, clientCount, seed);
  const shards = parts.map((indices) => subset(train, indices));
  console.log(
    `backend ${backend}; MNIST load ${loadMs.toFixed(0)} ms; ${train.n} train / ${test.n} test digits; ` +
      `${clientCount} clients (${values.partition}: ${shards.map((s) => s.n).join('/')}); ${rounds} rounds; MLP 784-200-200-10`,
  );
  const settings = values.grid ? values.grid.trim().split(/[\s;]+/).map(parseSetting) : [{ epochs: Number(values.epochs), batch: Number(values.batch), lr: Number(values.lr) }];
  const outcomes: Outcome[] = [];
  for (const s of settings) outcomes.push(await runFedAvg(s, shards, test));
  console.log('\n  E    B     lr     final   rising  mean round train ms   accuracy per round');
  for (const o of outcomes) {
    const rising = o.accuracy.every((a, i) => i === 0 || a >= o.accuracy[i - 1]! - 0.002);
    const meanMs = o.roundTrainMs.reduce((s, x) => s + x, 0) / o.roundTrainMs.length;
    console.log(
      `  ${String(o.epochs).padEnd(4)} ${String(o.batch).padEnd(5)} ${String(o.lr).padEnd(6)} ${o.accuracy.at(-1)!.toFixed(4)}  ${rising ? 'yes' : 'no '}     ` +
        `${meanMs.toFixed(0).padStart(8)}              ${o.accuracy.map((a) => a.toFixed(3)).join(' ')}`,
    );
  }
  console.log(`tensors alive at exit: ${tf.memory().numTensors}`);
}

await main();
