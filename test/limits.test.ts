// Limits with clear errors: a peer flooding envelopes is rate-limited and then cut off while the
// federation trains on to the exact result; new connections per IP are rate-limited at grpc and ws
// listeners; a blob request's huge credit window is clamped; a frame over the receiver's size limit
// and a model over its model-size limit are refused as 'oversized'; the REST API answers 429.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { startFederation } from '../src/actors/federation.ts';
import { Node } from '../src/actors/node.ts';
import { ApiServer } from '../src/api/server.ts';
import { FedError, isFedError } from '../src/errors.ts';
import { makeMessage } from '../src/protocol/codec.ts';
import { GuardedChannel, limitTransport } from '../src/security/limits.ts';
import { mintToken } from '../src/security/token.ts';
import { GrpcTransport } from '../src/transport/grpc.ts';
import { InprocNetwork, InprocTransport } from '../src/transport/inproc.ts';
import { Link } from '../src/transport/link.ts';
import type { FrameChannel, Transport } from '../src/transport/types.ts';
import { WsTransport } from '../src/transport/ws.ts';
import { toyLayout, toyTask, weightedMean } from './helpers/toy-task.ts';

const SECRET = 'limits-secret-0123456789';
const SIZE = 8;
const target = (k: number): Float32Array => new Float32Array(SIZE).fill(k);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

test('a flood of envelopes from one peer is rate-limited and its link closed; the federation trains on exactly', async () => {
  const refusals: FedError[] = [];
  const limits = { requestRate: { perSecond: 100, burst: 200 }, abuseThreshold: 300 };
  const fed = await startFederation({
    combiners: 1,
    clients: [1, 2].map((k) => toyTask({ target: target(k), numExamples: 10 * k, delayMs: 40 })),
    auth: { secret: SECRET },
    transport: () => limitTransport(new GrpcTransport(), limits, { onRefused: (e) => refusals.push(e) }),
    endpoint: () => 'grpc://127.0.0.1:0',
  });
  const flooder = new Node({ name: 'flooder', transport: new GrpcTransport(), token: mintToken(SECRET, { sub: 'k9', role: 'client' }) });
  try {
    await fed.ready();
    await fed.reducer.seed({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) });
    fed.reducer.start({ sessionId: 'flood', rounds: 3, roundTimeoutMs: 10_000 });
    const combiner = fed.combiners[0]!;
    flooder.host('client/k9', () => undefined);
    const link = await flooder.dial(combiner.endpoint);
    const closed = new Promise<Error | undefined>((resolve) => flooder.once('linkDown', (_l, _u, e) => resolve(e)));
    let sent = 0;
    for (let i = 0; i < 5_000 && link.isOpen; i++) {
      flooder.send('client/k9', combiner.address, makeMessage('Heartbeat', { seq: i }));
      sent++;
      if (i % 200 === 0) await sleep(1);
    }
    const why = await closed;
    assert.ok(isFedError(why, 'rate-limited'), `the flooder's link ends with rate-limited: ${String(why)}`);
    assert.ok(refusals.filter((e) => e.code === 'rate-limited').length > 300, `${refusals.length} refusals counted`);
    assert.ok(sent > 500);

    const summary = await fed.reducer.finished();
    assert.is(summary.status, 'done', summary.failure);
    assert.equal(summary.rounds.map((r) => r.updates), [2, 2, 2]);
    const global = await fed.reducer.globalModel();
    const expected = weightedMean([target(1), target(2)], [10, 20]);
    assert.ok(global.data.every((x, j) => Math.abs(x - expected[j]!) < 1e-5));
  } finally {
    await flooder.close();
    await fed.close();
  }
});

for (const kind of ['grpc', 'ws'] as const) {
  test(`${kind}: new connections per remote IP are rate-limited at the listener, before any TLS or HTTP work`, async () => {
    const refused: FedError[] = [];
    const opts = { connectionRate: { perSecond: 1, burst: 3 }, onRefused: (e: FedError) => refused.push(e), dialTimeoutMs: 2_000 };
    const server: Transport = kind === 'grpc' ? new GrpcTransport(opts) : new WsTransport(opts);
    const client: Transport = kind === 'grpc' ? new GrpcTransport({ dialTimeoutMs: 2_000 }) : new WsTransport({ dialTimeoutMs: 2_000 });
    const accepted: FrameChannel[] = [];
    const listener = await server.listen(`${kind}://127.0.0.1:0`, (ch) => accepted.push(ch));
    const outcomes: Array<'ok' | string> = [];
    const channels: FrameChannel[] = [];
    for (let i = 0; i < 6; i++) {
      try {
        channels.push(await client.dial(listener.endpoint));
        outcomes.push('ok');
      } catch (e) {
        outcomes.push(isFedError(e) ? e.code : String(e));
      }
    }
    assert.equal(outcomes.slice(0, 3), ['ok', 'ok', 'ok'], outcomes.join(','));
    assert.ok(outcomes.slice(3).every((o) => o !== 'ok'), outcomes.join(','));
    assert.ok(refused.length >= 3 && refused.every((e) => e.code === 'rate-limited'), refused.map((e) => e.message).join('; '));
    assert.match(refused[0]!.message, /too many new connections from 127\.0\.0\.1/);
    for (const ch of channels) ch.close();
    await listener.close();
  });
}

test('a blob request with a huge credit window is clamped: the holder sends at most maxWindow chunks ahead', async () => {
  const network = new InprocNetwork();
  const chunkBytes = 1024;
  const blob = new Uint8Array(100 * chunkBytes).map((_, i) => i % 251);
  const hash = sha(blob);
  let guarded: GuardedChannel | undefined;
  let holderLink: Link | undefined;
  await new InprocTransport(network).listen('inproc://holder', (ch) => {
    guarded = new GuardedChannel(ch, { maxWindow: 4 });
    holderLink = new Link(guarded, { node: 'holder', actors: () => [], blobs: { get: (h) => (h === hash ? blob : undefined) }, onEnvelope: () => undefined, chunkBytes, answerHello: true });
    void holderLink.start().catch(() => undefined);
  });
  const greedy = await new Link(await new InprocTransport(network).dial('inproc://holder'), { node: 'greedy', actors: () => [], blobs: { get: () => undefined }, onEnvelope: () => undefined, window: 1_000_000 }).start();
  const fetching = greedy.fetchBlob(hash);
  fetching.catch(() => undefined);
  await sleep(200);
  assert.is(holderLink!.stats.bytesOut, 4 * chunkBytes, 'four chunks, then the holder waits for credit');
  assert.ok(guarded!.stats.clamped >= 1);
  greedy.close();
  // an honest requester (default window 8) gets the whole blob through the same limit
  let honest: Link | undefined;
  await new InprocTransport(network).listen('inproc://holder2', (ch) => {
    const l = new Link(new GuardedChannel(ch, { maxWindow: 4 }), { node: 'holder2', actors: () => [], blobs: { get: () => blob }, onEnvelope: () => undefined, chunkBytes, answerHello: true });
    void l.start().catch(() => undefined);
  });
  honest = await new Link(await new InprocTransport(network).dial('inproc://holder2'), { node: 'honest', actors: () => [], blobs: { get: () => undefined }, onEnvelope: () => undefined, window: 8 }).start();
  const got = await honest.fetchBlob(hash);
  assert.is(got.byteLength, blob.byteLength);
  honest.close();
});

test('a frame over the receiving node\'s frame limit and a model over its model-size limit are refused as oversized', async () => {
  const blob = new Uint8Array(3 * 1024 * 1024).map((_, i) => (i * 7) % 256);
  const hash = sha(blob);
  const holder = new Node({ name: 'holder', transport: new GrpcTransport() });
  await holder.blobs.put(blob);
  holder.host('combiner/h', () => undefined);
  const listener = await holder.listen('grpc://127.0.0.1:0');
  // 1. frames: 1 MiB chunks against a 256 KiB frame limit
  const small = new Node({ name: 'small-frames', transport: new GrpcTransport({ maxFrameBytes: 256 * 1024 }) });
  small.host('client/s', () => undefined);
  await small.dial(listener.endpoint);
  try {
    await small.fetchBlob('combiner/h', hash);
    assert.unreachable('oversized frame accepted');
  } catch (e) {
    assert.ok(isFedError(e), String(e));
    assert.match(String(e), /oversized/);
  }
  // 2. models: a 3 MiB model against a 1 MiB model limit, refused before anything is allocated
  const capped = new Node({ name: 'capped', transport: new GrpcTransport(), link: { maxBlobBytes: 1024 * 1024 } });
  capped.host('client/c', () => undefined);
  await capped.dial(listener.endpoint);
  try {
    await capped.fetchBlob('combiner/h', hash);
    assert.unreachable('oversized model accepted');
  } catch (e) {
    assert.ok(isFedError(e, 'oversized'), String(e));
    assert.match(String(e), /exceeds the limit of 1048576/);
  }
  // the same link still serves a model within the limit
  const fine = new Uint8Array(512 * 1024).fill(3);
  await holder.blobs.put(fine);
  assert.is((await capped.fetchBlob('combiner/h', sha(fine))).byteLength, fine.byteLength);
  await Promise.all([small.close(), capped.close(), holder.close()]);
});

test('REST API: requests beyond the per-IP rate are answered 429 rate-limited with Retry-After', async () => {
  const api = new ApiServer({ rateLimit: { perSecond: 5, burst: 10 } });
  api.route('GET', '/api/ping', () => ({ json: { ok: true } }));
  const base = await api.listen(0);
  try {
    const answers = await Promise.all(Array.from({ length: 30 }, () => fetch(`${base}/api/ping`)));
    const statuses = answers.map((a) => a.status);
    assert.is(statuses.filter((s) => s === 200).length, 10, statuses.join(','));
    const limited = answers.find((a) => a.status === 429)!;
    assert.ok(limited, 'some were refused');
    assert.equal(((await limited.json()) as { error: string }).error, 'rate-limited');
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    assert.is(api.rateLimited, 20);
    await sleep(1_100);
    assert.is((await fetch(`${base}/api/ping`)).status, 200, 'served again once tokens flowed back');
  } finally {
    await api.close();
  }
});

test.run();
