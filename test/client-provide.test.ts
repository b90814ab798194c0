// Every client runs the same provided machine (providing it per client cost ~24 KB each); its IO — node,
// task code, the update it serves — is looked up per actor. These check that clients sharing the
// implementations still each use only their own.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startFederation } from '../src/actors/federation.ts';
import type { ClientHandle } from '../src/actors/client.ts';
import { MemoryBlobs } from '../src/actors/blobs.ts';
import { encodeModel } from '../src/model/codec.ts';
import { contentHash } from '../src/model/hash.ts';
import { toyLayout, toyTask, weightedMean } from './helpers/toy-task.ts';

const SIZE = 4;

/** The client's node holds exactly one blob: the update its own task code produced. */
function servesOnlyItsOwnUpdate(client: ClientHandle, target: Float32Array): void {
  const blobs = client.node.blobs as MemoryBlobs;
  assert.is(blobs.size, 1, `${client.address} serves one update`);
  assert.ok(blobs.get(contentHash(encodeModel({ layout: toyLayout(SIZE), data: target }))), `${client.address} serves its own update`);
}

test('clients share one provided machine, and each trains with its own code and serves its own update', async () => {
  const targets = [new Float32Array(SIZE).fill(1), new Float32Array(SIZE).fill(5), new Float32Array(SIZE).fill(-2)];
  const weights = [10, 30, 20];
  const codes = targets.map((target, i) => toyTask({ target, numExamples: weights[i]! }));
  const fed = await startFederation({ combiners: 2, clients: codes, strict: true });
  try {
    await fed.ready();
    const machines = new Set(fed.clients.map((c) => c.actor.getSnapshot().machine));
    assert.is(machines.size, 1, 'one provided machine for all clients');

    await fed.reducer.seed({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) });
    fed.reducer.start({ sessionId: 'own-io', rounds: 2, roundTimeoutMs: 10_000, minClients: 3 });
    const summary = await fed.reducer.finished();
    assert.is(summary.status, 'done', summary.failure);
    assert.equal(
      summary.rounds.map((r) => r.updates),
      [3, 3],
    );
    const global = await fed.reducer.globalModel();
    const expected = weightedMean(targets, weights);
    assert.ok(
      global.data.every((x, j) => Math.abs(x - expected[j]!) < 1e-6),
      `global ${Array.from(global.data)} != ${Array.from(expected)}`,
    );

    for (const [i, client] of fed.clients.entries()) {
      assert.is(codes[i]!.trained, 2, `${client.address} ran its own code once per round`);
      assert.is(client.actor.getSnapshot().context.stats.trained, 2);
      servesOnlyItsOwnUpdate(client, targets[i]!);
    }
  } finally {
    await fed.close();
  }
});

test('a stopped client leaves the others working', async () => {
  const targets = [1, 2].map((v) => new Float32Array(SIZE).fill(v));
  const codes = targets.map((target) => toyTask({ target, numExamples: 10 }));
  const fed = await startFederation({ combiners: 1, clients: codes, strict: true });
  try {
    await fed.ready();
    await fed.clients[0]!.stop();
    assert.ok(fed.clients[0]!.actor.getSnapshot().matches('stopped'));
    await fed.reducer.seed({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) });
    fed.reducer.start({ sessionId: 'after-stop', rounds: 1, roundTimeoutMs: 10_000, minClients: 1 });
    const summary = await fed.reducer.finished();
    assert.is(summary.status, 'done', summary.failure);
    assert.is(summary.rounds[0]!.updates, 1);
    assert.is(codes[0]!.trained, 0);
    assert.is(codes[1]!.trained, 1);
    const global = await fed.reducer.globalModel();
    assert.ok(global.data.every((x) => Math.abs(x - 2) < 1e-6));
    servesOnlyItsOwnUpdate(fed.clients[1]!, targets[1]!);
    assert.is((fed.clients[0]!.node.blobs as MemoryBlobs).size, 0);
  } finally {
    await fed.close();
  }
});

test.run();
