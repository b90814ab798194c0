// The combiner statechart refuses every kind of bad update with a reason, acknowledges the refusal to
// the sender, counts it in the round report, and the aggregate equals FedAvg over the good updates only.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createActor, fromCallback, fromPromise } from 'xstate';
import type { Outbound } from '../machines/common.ts';
import { combinerMachine, type FetchRequest, type FetchedUpdate } from '../machines/combiner.ts';
import { makeMessage } from '../src/protocol/codec.ts';
import type { Message } from '../src/protocol/generated.ts';
import { FedAvgAccumulator, weightedMean } from '../src/strategies/fedavg.ts';

const SIZE = 4;
const LAYOUT = 'layout-A';
const MODEL = 'global-model-hash';

type Content = { data: Float32Array; layoutKey?: string } | { fail: 'hash-mismatch' | 'fetch-failed' };

function harness(contents: Record<string, Content>) {
  let acc: FedAvgAccumulator | undefined;
  let aggregate: Float32Array | undefined;
  const folded: string[] = [];
  const logic = combinerMachine.provide({
    actors: {
      stageModel: fromPromise(async () => ({ size: SIZE, layoutKey: LAYOUT })),
      aggregate: fromPromise(async () => {
        aggregate = acc!.finish();
        return { modelId: 'combiner-model', ms: 0 };
      }),
      fetcher: fromCallback<FetchRequest>(({ receive, sendBack }) => {
        receive((req) => {
          const c = contents[req.updateId];
          const base = { type: 'update.fetched' as const, sessionId: req.sessionId, round: req.round, client: req.client };
          const reply: FetchedUpdate =
            !c || 'fail' in c ? { ...base, ok: false, reason: c ? c.fail : 'fetch-failed' } : { ...base, ok: true, data: c.data, layoutKey: c.layoutKey ?? LAYOUT };
          queueMicrotask(() => sendBack(reply));
        });
      }),
    },
    actions: {
      beginAggregation: (_, p) => {
        acc = new FedAvgAccumulator(p.size);
      },
      foldUpdate: (_, p) => {
        acc!.add(p.data, p.weight);
        folded.push(String(p.weight));
      },
      discardAggregation: () => undefined,
    },
  });
  const actor = createActor(logic, { input: { self: 'combiner/c1', reducer: 'reducer/main' } });
  const sent: Outbound[] = [];
  actor.on('outbound', (e) => sent.push(e));
  actor.start();
  let at = 1_000;
  const send = (from: string, body: Message) => actor.send({ ...body, from, at: at++ } as never);
  return { actor, sent, send, folded, result: () => aggregate };
}

const settle = () => new Promise((r) => setTimeout(r, 10));

test('every kind of bad update is rejected with its reason and never reaches the aggregate', async () => {
  const good1 = Float32Array.from([1, 2, 3, 4]);
  const good2 = Float32Array.from([5, 6, 7, 8]);
  const nan = Float32Array.from([1, NaN, 3, 4]);
  const inf = Float32Array.from([1, 2, Infinity, 4]);
  const h = harness({
    u1: { data: good1 },
    u2: { data: good2 },
    uShape: { data: Float32Array.from([1, 2, 3]) },
    uLayout: { data: Float32Array.from([1, 2, 3, 4]), layoutKey: 'layout-B' },
    uNan: { data: nan },
    uInf: { data: inf },
    uHash: { fail: 'hash-mismatch' },
  });
  const clients = ['g1', 'g2', 'shape', 'layout', 'nan', 'inf', 'hash', 'base', 'weight'].map((c) => `client/${c}`);
  for (const c of clients) h.send(c, makeMessage('ClientHello', { client: c, numExamples: 10 }));
  h.send('reducer/main', makeMessage('StartRound', { sessionId: 's1', round: 3, task: 'train', modelId: MODEL, config: { ...makeMessage('StartRound').config, timeoutMs: 60_000, minUpdates: 1 } }));
  await settle();
  assert.ok(h.actor.getSnapshot().matches('collecting'));
  const result = (client: string, fields: Partial<Extract<Message, { type: 'TrainResult' }>>) =>
    h.send(`client/${client}`, makeMessage('TrainResult', { taskId: `s1:3:train:client/${client}`, sessionId: 's1', round: 3, baseModelId: MODEL, numExamples: 10, ...fields }));

  result('g1', { updateId: 'u1', numExamples: 30 });
  result('g2', { updateId: 'u2', numExamples: 10 });
  result('shape', { updateId: 'uShape' });
  result('layout', { updateId: 'uLayout' });
  result('nan', { updateId: 'uNan' });
  result('inf', { updateId: 'uInf' });
  result('hash', { updateId: 'uHash' });
  result('base', { updateId: 'u1', baseModelId: 'some-older-model' });
  result('weight', { updateId: 'u1', numExamples: 0 });
  result('g1', { updateId: 'u1', numExamples: 30 }); // duplicate
  result('outsider', { updateId: 'u1' }); // never joined, never selected
  h.send('client/g2', makeMessage('TrainResult', { taskId: 'x', sessionId: 's0', round: 3, baseModelId: MODEL, updateId: 'u2', numExamples: 10 })); // other session
  h.send('client/g2', makeMessage('TrainResult', { taskId: 'x', sessionId: 's1', round: 2, baseModelId: MODEL, updateId: 'u2', numExamples: 10 })); // old round
  await settle();

  const report = h.sent.find((o) => o.body.type === 'RoundReport')?.body as Extract<Message, { type: 'RoundReport' }> | undefined;
  assert.ok(report, 'the round closed and reported');
  assert.is(report.status, 'ok');
  assert.is(report.updates, 2);
  assert.is(report.totalWeight, 40);
  const rejected = Object.fromEntries(report.rejected.map((r) => [r.reason, r.count]));
  assert.equal(rejected, {
    'wrong-shape': 2,
    'not-finite': 2,
    'hash-mismatch': 1,
    'base-mismatch': 1,
    'bad-weight': 1,
    duplicate: 1,
    unselected: 1,
    'wrong-session': 1,
    'stale-round': 1,
  });
  // every refusal is acknowledged to its sender with the reason
  const acks = h.sent.filter((o) => o.body.type === 'UpdateAck').map((o) => [o.to, (o.body as Extract<Message, { type: 'UpdateAck' }>).reason]);
  assert.ok(acks.some(([to, r]) => to === 'client/nan' && r === 'not-finite'));
  assert.ok(acks.some(([to, r]) => to === 'client/outsider' && r === 'unselected'));
  assert.equal(h.folded, ['30', '10'], 'only the two good updates were folded');
  const expected = weightedMean([good1, good2], [30, 10]);
  assert.equal(Array.from(h.result()!), Array.from(expected), 'aggregate equals FedAvg over the good updates alone');

  // A result for the closed round is refused as late and changes nothing.
  result('g2', { updateId: 'u2' });
  await settle();
  const lastAck = h.sent.filter((o) => o.body.type === 'UpdateAck').at(-1)!;
  assert.is((lastAck.body as Extract<Message, { type: 'UpdateAck' }>).reason, 'late');
  assert.is(h.actor.getSnapshot().context.totals.accepted, 2);
});

test('below the minimum number of accepted updates the round fails explicitly', async () => {
  const h = harness({ u1: { data: Float32Array.from([1, 2, 3, 4]) }, bad: { data: Float32Array.from([NaN, 0, 0, 0]) } });
  for (const c of ['client/a', 'client/b']) h.send(c, makeMessage('ClientHello', { client: c, numExamples: 5 }));
  h.send('reducer/main', makeMessage('StartRound', { sessionId: 's', round: 1, task: 'train', modelId: MODEL, config: { ...makeMessage('StartRound').config, minUpdates: 2, timeoutMs: 60_000 } }));
  await settle();
  h.send('client/a', makeMessage('TrainResult', { taskId: 's:1:train:client/a', sessionId: 's', round: 1, baseModelId: MODEL, updateId: 'u1', numExamples: 5 }));
  h.send('client/b', makeMessage('TrainResult', { taskId: 's:1:train:client/b', sessionId: 's', round: 1, baseModelId: MODEL, updateId: 'bad', numExamples: 5 }));
  await settle();
  const report = h.sent.find((o) => o.body.type === 'RoundReport')?.body as Extract<Message, { type: 'RoundReport' }>;
  assert.is(report.status, 'failed');
  assert.is(report.reason, 'too-few-updates');
  assert.is(report.modelId, '');
  assert.is(h.result(), undefined, 'no aggregate was produced');
});

test.run();
