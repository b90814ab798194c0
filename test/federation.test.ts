import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startFederation } from '../src/actors/federation.ts';
import { verifyTrail } from '../src/store/index.ts';
import { toyLayout, toyTask, weightedMean } from './helpers/toy-task.ts';

const SIZE = 64;
const targets = [1, 2, 3, 4, 5].map((k) => Float32Array.from({ length: SIZE }, (_, j) => k * 10 + j / SIZE));
const weights = [100, 200, 300, 50, 350];

test('in-process federation: 2 combiners, 5 clients, hierarchical FedAvg gives the weighted mean of the clients', async () => {
  const fed = await startFederation({ combiners: 2, clients: targets.map((t, i) => toyTask({ target: t, numExamples: weights[i]! })), strict: true });
  try {
    await fed.ready();
    const perCombiner = fed.combiners.map((c) => Object.keys(c.actor.getSnapshot().context.clients).length);
    assert.equal(perCombiner.sort(), [2, 3], 'least-packed discovery spreads clients');
    await fed.reducer.seed({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) });
    fed.reducer.start({ sessionId: 'toy', rounds: 2, roundTimeoutMs: 10_000, validate: true });
    const summary = await fed.reducer.finished();
    assert.is(summary.status, 'done', summary.failure);
    assert.is(summary.rounds.length, 2);
    for (const r of summary.rounds) {
      assert.is(r.status, 'ok');
      assert.is(r.updates, 5);
      assert.is(r.totalWeight, 1000);
      assert.ok(r.validation.mse !== undefined, 'validation metrics collected');
    }
    const global = await fed.reducer.globalModel();
    const expected = weightedMean(targets, weights);
    for (let j = 0; j < SIZE; j++) assert.ok(Math.abs(global.data[j]! - expected[j]!) < 1e-4, `coordinate ${j}: ${global.data[j]} vs ${expected[j]}`);
    const verified = await verifyTrail(fed.reducer.store);
    assert.equal(verified, { ok: true, entries: 3 });
    // every update was received straight into a stage slot of the FedAvg kernel and folded there
    const stats = fed.combiners.map((c) => c.stats);
    assert.is(stats.reduce((n, s) => n + s.updatesInPlace, 0), 10, JSON.stringify(stats));
    assert.is(stats.reduce((n, s) => n + s.updatesCopied, 0), 0);
    // and each combiner model straight into the reducer's stage slot: 2 combiners x 2 rounds
    assert.equal(fed.reducer.stats, { combinerModelsInPlace: 4, combinerModelsCopied: 0 });
  } finally {
    await fed.close();
  }
});

test('20 clients on one combiner: updates land in stage slots (reused), the rest are copied; the mean is exact', async () => {
  // integer values and weights: every partial sum is exact in Float64, so the result cannot depend on
  // the order in which updates arrive or are batched, and must equal the weighted mean bit for bit
  const n = 20;
  const ts = Array.from({ length: n }, (_, k) => Float32Array.from({ length: SIZE }, (_, j) => (k * 7 + j) % 50));
  const ws = ts.map((_, k) => 1 + k);
  const fed = await startFederation({ combiners: 1, clients: ts.map((t, k) => toyTask({ target: t, numExamples: ws[k]! })), strict: true });
  try {
    await fed.ready();
    await fed.reducer.seed({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) });
    fed.reducer.start({ sessionId: 'slots', rounds: 2, roundTimeoutMs: 20_000 });
    const summary = await fed.reducer.finished();
    assert.is(summary.status, 'done', summary.failure);
    for (const r of summary.rounds) assert.is(r.updates, n);
    const global = await fed.reducer.globalModel();
    assert.equal(global.data, weightedMean(ts, ws));
    const { updatesInPlace, updatesCopied } = fed.combiners[0]!.stats;
    assert.is(updatesInPlace + updatesCopied, 2 * n);
    assert.ok(updatesInPlace >= 8, `updates received in place: ${updatesInPlace}`);
  } finally {
    await fed.close();
  }
});

test('the session strategy applies at both levels: median at the combiners, FedAdam at the reducer with persisted state', async () => {
  const fed = await startFederation({ combiners: 2, clients: targets.map((t, i) => toyTask({ target: t, numExamples: weights[i]! })), strict: false });
  try {
    await fed.ready();
    const seed = await fed.reducer.seed({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) });
    fed.reducer.start({ sessionId: 'median-adam', rounds: 1, roundTimeoutMs: 10_000, strategy: 'median+fedadam:lr=0.5' });
    const summary = await fed.reducer.finished();
    assert.is(summary.status, 'done', summary.failure);
    // expected: per combiner the coordinate-wise median of its clients, then FedAvg over combiners
    // weighted by their total examples, then one FedAdam step from the zero seed
    const members = fed.combiners.map((c) => c.actor.getSnapshot().context.lastRound!.selected.map((k) => Number(k.slice('client/k'.length)) - 1));
    const reduced = new Float64Array(SIZE);
    let total = 0;
    for (const idx of members) {
      const w = idx.reduce((n, i) => n + weights[i]!, 0);
      total += w;
      for (let j = 0; j < SIZE; j++) {
        const vals = idx.map((i) => targets[i]![j]!).sort((a, b) => a - b);
        const mid = vals.length >> 1;
        const median = vals.length % 2 ? vals[mid]! : (vals[mid - 1]! + vals[mid]!) / 2;
        reduced[j]! += median * w;
      }
    }
    const global = await fed.reducer.globalModel();
    for (let j = 0; j < SIZE; j++) {
      const g = reduced[j]! / total; // pseudo-gradient from a zero seed
      // FedAdam's first step: m = (1-b1) g, v = b2 tau^2 + (1-b2) g^2, x = lr m / (sqrt(v) + tau)
      const m = 0.1 * g;
      const v = 0.99 * 1e-8 + 0.01 * g * g;
      const expected = (0.5 * m) / (Math.sqrt(v) + 1e-4);
      assert.ok(Math.abs(global.data[j]! - expected) < 1e-3 * Math.max(1, Math.abs(expected)), `coordinate ${j}: ${global.data[j]} vs ${expected}`);
    }
    const state = await fed.reducer.store.getState(`server-optimizer/${summary.globalModelId}`);
    assert.ok(state, 'optimizer state stored under the model it produced');
    assert.is.not(summary.globalModelId, seed);
    const trail = await fed.reducer.store.trail();
    assert.match(trail.at(-1)!.strategy, /^median\+fedadam:lr=0.5/);
  } finally {
    await fed.close();
  }
});

test('an unknown strategy is refused before the session starts', async () => {
  const fed = await startFederation({ combiners: 1, clients: [toyTask({ target: targets[0]!, numExamples: 1 })], strict: false });
  try {
    await fed.ready();
    await fed.reducer.seed({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) });
    assert.throws(() => fed.reducer.start({ sessionId: 'x', rounds: 1, strategy: 'fedavgg' }), /unknown strategy/);
    assert.is(fed.reducer.actor.getSnapshot().value, 'seeded');
  } finally {
    await fed.close();
  }
});

test.run();
