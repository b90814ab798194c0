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
  } finally {
    await fed.close();
  }
});

test.run();
