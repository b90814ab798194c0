// Token authentication and identity binding on the federation links: only the right peers get in, a
// peer can only speak as the actors its token names, and the federation keeps training throughout.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startFederation } from '../src/actors/federation.ts';
import { Node } from '../src/actors/node.ts';
import { isFedError, type FedError } from '../src/errors.ts';
import { makeMessage } from '../src/protocol/codec.ts';
import { InprocTransport } from '../src/transport/inproc.ts';
import { mayHost, mintToken, verifyToken } from '../src/security/token.ts';
import { toyLayout, toyTask, weightedMean } from './helpers/toy-task.ts';

const SECRET = 'test-secret-0123456789';
const SIZE = 8;
const target = (k: number) => new Float32Array(SIZE).fill(k);

test('tokens: verify, refuse tampering, wrong secret, expiry; identities host only their own addresses', () => {
  const t = mintToken(SECRET, { sub: 'k1', role: 'client' });
  assert.equal({ ...verifyToken(SECRET, t), iat: 0 }, { sub: 'k1', role: 'client', iat: 0, exp: 0 });
  const [h, p, sig] = t.split('.');
  const forged = `${h}.${Buffer.from(JSON.stringify({ sub: 'k1', role: 'reducer', iat: 0, exp: 0 })).toString('base64url')}.${sig}`;
  const refusals: Array<[string, () => unknown]> = [
    ['empty', () => verifyToken(SECRET, '')],
    ['garbage', () => verifyToken(SECRET, 'a.b.c')],
    ['forged role', () => verifyToken(SECRET, forged)],
    ['wrong secret', () => verifyToken('another-secret-0123456789', t)],
    ['expired', () => verifyToken(SECRET, mintToken(SECRET, { sub: 'k1', role: 'client', ttlSeconds: 1 }, Date.now() - 10_000))],
  ];
  for (const [name, fn] of refusals) {
    try {
      fn();
      assert.unreachable(name);
    } catch (e) {
      assert.ok(isFedError(e, 'unauthenticated'), `${name}: ${String(e)}`);
    }
  }
  assert.ok(p);
  assert.ok(mayHost({ sub: 'k1', role: 'client' }, 'client/k1'));
  assert.not.ok(mayHost({ sub: 'k1', role: 'client' }, 'client/k2'));
  assert.not.ok(mayHost({ sub: 'k1', role: 'client' }, 'combiner/k1'));
  assert.not.ok(mayHost({ sub: 'c1', role: 'combiner' }, 'reducer/main'));
  assert.ok(mayHost({ sub: 'site-a-*', role: 'client' }, 'client/site-a-17'));
  assert.not.ok(mayHost({ sub: 'site-a-*', role: 'client' }, 'client/site-b-1'));
  assert.not.ok(mayHost({ sub: 'ops', role: 'admin' }, 'reducer/main'));
});

test('with tokens on every link the federation trains; intruders are refused with typed errors and change nothing', async () => {
  const fed = await startFederation({ combiners: 1, clients: [1, 2].map((k) => toyTask({ target: target(k), numExamples: 10, delayMs: 50 })), strict: true, auth: { secret: SECRET } });
  const combiner = fed.combiners[0]!;
  const rejections: FedError[] = [];
  const combinerNode = combiner.node;
  try {
    await fed.ready();
    // record refusals seen by the combiner and the reducer nodes
    fed.reducer.node.on('rejected', (e) => rejections.push(e));
    combinerNode.on('rejected', (e) => rejections.push(e));
    await fed.reducer.seed({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) });
    fed.reducer.start({ sessionId: 'secure', rounds: 3, roundTimeoutMs: 5_000 });

    const network = (fed.reducer.node.transport as InprocTransport).network;
    const intruder = (name: string, token?: string) => new Node({ name, transport: new InprocTransport(network, { strict: true }), token });
    // 1. no token at all
    const anon = intruder('anon');
    anon.host('client/anon', () => undefined);
    await anon.dial(combiner.endpoint).then(() => assert.unreachable('unauthenticated link accepted'), (e) => assert.ok(isFedError(e), String(e)));
    // 2. a valid client token for k9 announcing someone else's address
    const liar = intruder('liar', mintToken(SECRET, { sub: 'k9', role: 'client' }));
    liar.host('client/k1', () => undefined);
    await liar.dial(combiner.endpoint).then(() => assert.unreachable('impersonating link accepted'), (e) => assert.ok(isFedError(e), String(e)));
    // 3. an expired token
    const late = intruder('late', mintToken(SECRET, { sub: 'k8', role: 'client', ttlSeconds: 1 }, Date.now() - 60_000));
    late.host('client/k8', () => undefined);
    await late.dial(combiner.endpoint).then(() => assert.unreachable('expired token accepted'), (e) => assert.ok(isFedError(e), String(e)));
    // 4. a legitimate client that tries to act as the reducer: its StartRound and a forged update are ignored
    const rogue = intruder('rogue', mintToken(SECRET, { sub: 'k7', role: 'client' }));
    rogue.host('client/k7', () => undefined);
    await rogue.dial(combiner.endpoint);
    rogue.send('client/k7', combiner.address, makeMessage('StartRound', { sessionId: 'evil', round: 99, task: 'train', modelId: 'x' }));
    rogue.send('client/k7', combiner.address, makeMessage('TrainResult', { sessionId: 'secure', round: 1, taskId: 't', baseModelId: 'x', updateId: 'y', numExamples: 1_000_000 }));
    // 5. announcing a foreign address after the hello
    rogue.host('client/k2', () => undefined);

    const summary = await fed.reducer.finished();
    assert.is(summary.status, 'done', summary.failure);
    assert.ok(summary.rounds.every((r) => r.updates === 2), 'only the two genuine clients were aggregated');
    const global = await fed.reducer.globalModel();
    const expected = weightedMean([target(1), target(2)], [10, 10]);
    assert.ok(global.data.every((x, j) => Math.abs(x - expected[j]!) < 1e-5), 'aggregate untouched by the intruders');
    assert.ok(combiner.actor.getSnapshot().context.totals.rounds >= 3);
    assert.not.ok(combiner.actor.getSnapshot().context.lastRound?.sessionId === 'evil', 'the forged StartRound was ignored');
    const codes = rejections.map((e) => e.code);
    assert.ok(codes.includes('unauthenticated'), codes.join(','));
    assert.ok(codes.includes('forbidden'), codes.join(','));
    assert.ok(codes.includes('impersonation'), codes.join(','));
    await Promise.all([anon, liar, late, rogue].map((n) => n.close()));
  } finally {
    await fed.close();
  }
});

test.run();
