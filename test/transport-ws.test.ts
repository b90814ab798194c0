// WebSocket transport specifics: native masking, and what a misbehaving or absent peer looks like at
// the FrameChannel, seen through bare `ws` sockets that send text, garbage or oversized messages.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type net from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { isFedError } from '../src/errors.ts';
import { encodeFrame } from '../src/protocol/codec.ts';
import { encodeForSend } from '../src/transport/chunk-frame.ts';
import type { FrameChannel } from '../src/transport/types.ts';
import { WsTransport, maskingEngine, wsSocketOptions } from '../src/transport/ws.ts';
import { MiB, checkSplitOnWire, closedPort, heartbeat, listenRecording, muteServer, record, sleep, until } from './helpers/transport-harness.ts';

/** A bare ws client; resolves once open, with a promise of the close code it eventually sees. */
async function rawClient(endpoint: string, opts = {}): Promise<{ ws: WebSocket; closed: Promise<{ code: number; reason: string }> }> {
  const ws = new WebSocket(`${endpoint}/`, { ...wsSocketOptions(), ...opts });
  ws.on('error', () => undefined);
  const closed = new Promise<{ code: number; reason: string }>((r) => ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
  await new Promise((r) => ws.once('open', r));
  return { ws, closed };
}

async function rawServer(onConnection: (ws: WebSocket) => void): Promise<{ endpoint: string; wss: WebSocketServer }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, ...wsSocketOptions() });
  await new Promise((r) => wss.once('listening', r));
  wss.on('connection', (ws) => {
    ws.on('error', () => undefined);
    onConnection(ws);
  });
  return { endpoint: `ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}`, wss };
}

test('ws masks with native code (bufferutil on Node < 22, Node itself later), not the JS fallback', () => {
  const engine = maskingEngine();
  assert.ok(engine === 'bufferutil' || engine === 'node', `masking engine: ${engine}`);
});

test('listen on port 0 reports the real port; a taken port is a conflict', async () => {
  const t = new WsTransport();
  const l = await t.listen('ws://127.0.0.1:0', () => undefined);
  assert.match(l.endpoint, /^ws:\/\/127\.0\.0\.1:\d+$/);
  try {
    await t.listen(l.endpoint, () => undefined);
    assert.unreachable('second listen on a taken port');
  } catch (e) {
    assert.ok(isFedError(e, 'conflict'), String(e));
  }
  await l.close();
});

test('dialing a port nobody listens on fails with closed; a mute server times out', async () => {
  const port = await closedPort();
  try {
    await new WsTransport().dial(`ws://127.0.0.1:${port}`);
    assert.unreachable('dial to a closed port');
  } catch (e) {
    assert.ok(isFedError(e, 'closed'), String(e));
  }

  const mute = await muteServer();
  try {
    await new WsTransport({ dialTimeoutMs: 300 }).dial(`ws://127.0.0.1:${mute.port}`);
    assert.unreachable('dial to a mute server');
  } catch (e) {
    assert.ok(isFedError(e, 'timeout'), String(e));
  } finally {
    mute.close();
  }
});

test('a text message closes the channel with malformed (1007) and the server serves on', async () => {
  const { listener, accepted } = await listenRecording(new WsTransport());
  const raw = await rawClient(listener.endpoint);
  raw.ws.send('hello as text');
  const { code } = await raw.closed;
  assert.is(code, 1007);
  await until(() => accepted[0]?.closes.length === 1, 5000, 'server channel closed');
  assert.ok(isFedError(accepted[0]?.closes[0], 'malformed'), String(accepted[0]?.closes[0]));

  const ch = await new WsTransport().dial(listener.endpoint);
  await ch.send(heartbeat(1));
  await until(() => accepted[1]?.frames.length === 1, 5000, 'next client served');
  ch.close();
  await sleep(20);
  assert.is(accepted[0]?.closes.length, 1, 'onClose fired exactly once');
  await listener.close();
});

test('undecodable binary from a client closes that channel with malformed', async () => {
  const { listener, accepted } = await listenRecording(new WsTransport());
  const raw = await rawClient(listener.endpoint);
  raw.ws.send(Buffer.from([0xff, 0xff, 0xff, 0x01, 0x02]));
  const { code, reason } = await raw.closed;
  assert.is(code, 1007);
  assert.match(reason, /malformed/);
  await until(() => accepted[0]?.closes.length === 1, 5000, 'server channel closed');
  assert.ok(isFedError(accepted[0]?.closes[0], 'malformed'), String(accepted[0]?.closes[0]));
  await listener.close();
});

test('undecodable binary from a server closes the client channel with malformed', async () => {
  const { endpoint, wss } = await rawServer((ws) => ws.send(Buffer.from('not a Frame at all')));
  const ch = await new WsTransport().dial(endpoint);
  const r = record(ch);
  await until(() => r.closes.length === 1, 5000, 'client channel closed');
  assert.ok(isFedError(r.closes[0], 'malformed'), String(r.closes[0]));
  assert.is(r.frames.length, 0);
  wss.close();
  for (const c of wss.clients) c.terminate();
});

test('a message over maxPayload ends the channel with oversized on both sides', async () => {
  const { listener, accepted } = await listenRecording(new WsTransport());
  // The sender allows bigger frames than the receiver: only the receiving side can refuse.
  const ch = await new WsTransport({ maxFrameBytes: 4 * MiB }).dial(listener.endpoint);
  const r = record(ch);
  await ch.send({ kind: 'blobChunk', blobChunk: { streamId: 1, offset: 0, total: 0, data: new Uint8Array(2 * MiB), last: false, error: '' } });
  await until(() => r.closes.length === 1 && accepted[0]?.closes.length === 1, 5000, 'both sides ended');
  assert.ok(isFedError(accepted[0]?.closes[0], 'oversized'), `receiver: ${String(accepted[0]?.closes[0])}`);
  assert.ok(isFedError(r.closes[0], 'oversized'), `sender: ${String(r.closes[0])}`);
  await listener.close();
});

test('a frame handler that throws ends the channel with internal, and the process lives on', async () => {
  let acceptedCh: FrameChannel | undefined;
  const listener = await new WsTransport().listen('ws://127.0.0.1:0', (c) => {
    acceptedCh = c;
    record(c);
  });
  const ch = await new WsTransport().dial(listener.endpoint);
  const closes: Array<Error | undefined> = [];
  ch.onFrame = () => {
    throw new Error('handler bug');
  };
  ch.onClose = (e) => closes.push(e);
  await until(() => acceptedCh !== undefined, 5000, 'accepted');
  await acceptedCh!.send(heartbeat(1));
  await until(() => closes.length === 1, 5000, 'channel ended by the throwing handler');
  assert.ok(isFedError(closes[0], 'internal'), String(closes[0]));
  await listener.close();
});

test('the reason given to close() reaches the peer, both ways', async () => {
  const { listener, accepted } = await listenRecording(new WsTransport());
  const ch = await new WsTransport().dial(listener.endpoint);
  const r = record(ch);
  await until(() => accepted.length === 1, 5000, 'accepted');
  ch.close('client done for today');
  await until(() => accepted[0]?.closes.length === 1, 5000, 'server sees the close');
  assert.match(String(accepted[0]?.closes[0]), /client done for today/);
  assert.equal(r.closes, [undefined]);

  const ch2 = await new WsTransport().dial(listener.endpoint);
  const r2 = record(ch2);
  await until(() => accepted.length === 2, 5000, 'accepted again');
  await listener.close();
  await until(() => r2.closes.length === 1, 5000, 'client sees the listener close');
  assert.match(String(r2.closes[0]), /listener closed/);
});

test('frames that arrive before the handler is attached wait for it', async () => {
  // The server speaks first, in the same breath as the handshake.
  const listener = await new WsTransport().listen('ws://127.0.0.1:0', (c) => {
    for (let i = 0; i < 5; i++) void c.send(heartbeat(i));
  });
  const ch = await new WsTransport().dial(listener.endpoint);
  await sleep(100); // handler attached late on purpose
  const r = record(ch);
  await until(() => r.frames.length === 5, 5000, 'early frames delivered');
  r.frames.forEach((f, i) => assert.ok(f.kind === 'envelope' && f.envelope.body.type === 'Heartbeat' && f.envelope.body.seq === i));
  ch.close();
  await listener.close();
});

test('send() waits while more than the high-water mark is queued, and resumes', async () => {
  // A reader that does not read: its socket is paused, so the sender's buffer fills.
  let serverWs: WebSocket | undefined;
  const { endpoint, wss } = await rawServer((ws) => {
    serverWs = ws;
    ws.pause();
  });
  const ch = await new WsTransport({ highWaterMark: 256 * 1024 }).dial(endpoint);
  record(ch);
  await until(() => serverWs !== undefined, 5000, 'connected');
  const data = new Uint8Array(MiB);
  let accepted = 0;
  let stalled: Promise<void> | undefined;
  for (let i = 0; i < 200; i++) {
    const p = ch.send({ kind: 'blobChunk', blobChunk: { streamId: 1, offset: i, total: 0, data, last: false, error: '' } });
    if (!(await Promise.race([p.then(() => true), sleep(300).then(() => false)]))) {
      stalled = p;
      break;
    }
    accepted++;
  }
  assert.ok(stalled, 'send() never waited');
  assert.ok(accepted < 64, `${accepted} MiB accepted by a paused reader`);
  let received = 0;
  // each chunk frame is two messages: a head, then its 1 MiB payload
  serverWs!.on('message', (b: Buffer) => (received += b.byteLength === MiB ? 1 : 0));
  serverWs!.resume();
  await stalled;
  await until(() => received === accepted + 1, 10_000, 'everything delivered after resume');
  ch.close();
  wss.close();
  for (const c of wss.clients) c.terminate();
});

test('encoded frames on the wire are plain protobuf Frame bytes', async () => {
  const got: Buffer[] = [];
  const { endpoint, wss } = await rawServer((ws) => ws.on('message', (b: Buffer) => got.push(b)));
  const ch = await new WsTransport().dial(endpoint);
  const frame = heartbeat(7);
  await ch.send(frame);
  await until(() => got.length === 1, 5000, 'raw server got the frame');
  assert.is(Buffer.compare(got[0]!, Buffer.from(encodeFrame(frame))), 0);
  ch.close();
  wss.close();
  for (const c of wss.clients) c.terminate();
});

test('a 1 MiB chunk frame goes as two messages, head then payload, that joined are its protobuf bytes', async () => {
  const got: Buffer[] = [];
  const { endpoint, wss } = await rawServer((ws) => ws.on('message', (b: Buffer) => got.push(b)));
  const ch = await new WsTransport().dial(endpoint);
  await checkSplitOnWire(ch, got);
  ch.close();
  wss.close();
  for (const c of wss.clients) c.terminate();
});

test('a chunk head followed by a payload of another length closes the channel with malformed', async () => {
  const { listener, accepted } = await listenRecording(new WsTransport());
  const raw = await rawClient(listener.endpoint);
  const { bytes } = encodeForSend({ kind: 'blobChunk', blobChunk: { streamId: 1, offset: 0, total: MiB, data: new Uint8Array(MiB), last: false, error: '' } });
  raw.ws.send(bytes);
  raw.ws.send(new Uint8Array(MiB - 1));
  const { code, reason } = await raw.closed;
  assert.is(code, 1007);
  assert.match(reason, /payload of 1048575 bytes/);
  await until(() => accepted[0]?.closes.length === 1, 5000, 'server channel closed');
  assert.ok(isFedError(accepted[0]?.closes[0], 'malformed'), String(accepted[0]?.closes[0]));
  assert.is(accepted[0]?.frames.length, 0, 'no frame delivered from the broken pair');
  await listener.close();
});

test('a stream that ends cleanly after a chunk head and before its payload is reported as malformed, not a clean close', async () => {
  const { listener, accepted } = await listenRecording(new WsTransport());
  const raw = await rawClient(listener.endpoint);
  const { bytes } = encodeForSend({ kind: 'blobChunk', blobChunk: { streamId: 1, offset: 0, total: MiB, data: new Uint8Array(MiB), last: false, error: '' } });
  raw.ws.send(bytes);
  raw.ws.close(1000, 'done');
  await raw.closed;
  await until(() => accepted[0]?.closes.length === 1, 5000, 'server channel closed');
  const e = accepted[0]?.closes[0];
  assert.ok(isFedError(e, 'malformed'), String(e));
  assert.match(String(e), /inside a chunk frame/);
  assert.is(accepted[0]?.frames.length, 0);
  await listener.close();
});

test.run();
