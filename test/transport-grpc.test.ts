// gRPC transport specifics: what a misbehaving or absent peer looks like at the FrameChannel, seen
// through real @grpc/grpc-js clients and servers that speak the same Link method but send garbage.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as grpc from '@grpc/grpc-js';
import { isFedError } from '../src/errors.ts';
import { encodeFrame } from '../src/protocol/codec.ts';
import { encodeForSend } from '../src/transport/chunk-frame.ts';
import { GrpcTransport, LINK_METHOD, grpcChannelOptions, linkServiceDefinition } from '../src/transport/grpc.ts';
import type { FrameChannel } from '../src/transport/types.ts';
import { MiB, checkSplitOnWire, closedPort, heartbeat, listenRecording, muteServer, record, sleep, until, type Recording } from './helpers/transport-harness.ts';

const identity = (b: Buffer): Buffer => b;

const portOf = (endpoint: string): number => Number(/:(\d+)$/.exec(endpoint)?.[1]);

/** A bare grpc-js client on the Link method, writing whatever bytes the test wants. */
function rawClient(endpoint: string, opts: grpc.ChannelOptions = grpcChannelOptions()): {
  call: grpc.ClientDuplexStream<Buffer, Buffer>;
  status: Promise<grpc.StatusObject>;
  client: grpc.Client;
} {
  const client = new grpc.Client(`127.0.0.1:${portOf(endpoint)}`, grpc.credentials.createInsecure(), opts);
  const call = client.makeBidiStreamRequest<Buffer, Buffer>(LINK_METHOD, identity, identity);
  call.on('error', () => undefined);
  call.on('data', () => undefined);
  const status = new Promise<grpc.StatusObject>((r) => call.on('status', r));
  return { call, status, client };
}

/** A bare grpc-js server on the Link method whose handler the test writes. */
async function rawServer(handler: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => void, opts = grpcChannelOptions()): Promise<{ endpoint: string; server: grpc.Server }> {
  const server = new grpc.Server(opts);
  server.addService(linkServiceDefinition, { link: handler });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return { endpoint: `grpc://127.0.0.1:${port}`, server };
}

test('listen on port 0 reports the real port; a taken port is a conflict', async () => {
  const t = new GrpcTransport();
  const l = await t.listen('grpc://127.0.0.1:0', () => undefined);
  assert.match(l.endpoint, /^grpc:\/\/127\.0\.0\.1:\d+$/);
  assert.ok(portOf(l.endpoint) > 0);
  try {
    await t.listen(l.endpoint, () => undefined);
    assert.unreachable('second listen on a taken port');
  } catch (e) {
    assert.ok(isFedError(e, 'conflict') || isFedError(e, 'config'), String(e));
  }
  await l.close();
});

test('endpoints of the wrong kind or shape are refused with a config error', async () => {
  const t = new GrpcTransport();
  for (const bad of ['ws://127.0.0.1:1', 'grpc://127.0.0.1', 'grpc://host:99999', 'grpc:/x:1', '127.0.0.1:5']) {
    try {
      await t.dial(bad);
      assert.unreachable(bad);
    } catch (e) {
      assert.ok(isFedError(e, 'config'), `${bad}: ${String(e)}`);
    }
  }
});

test('dialing a port nobody listens on fails fast with a closed error', async () => {
  const port = await closedPort();
  const t0 = Date.now();
  try {
    await new GrpcTransport().dial(`grpc://127.0.0.1:${port}`);
    assert.unreachable('dial to a closed port');
  } catch (e) {
    assert.ok(isFedError(e, 'closed'), String(e));
  }
  assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
});

test('dialing something that accepts TCP but never speaks HTTP/2 times out', async () => {
  const mute = await muteServer();
  try {
    await new GrpcTransport({ dialTimeoutMs: 400 }).dial(`grpc://127.0.0.1:${mute.port}`);
    assert.unreachable('dial to a mute server');
  } catch (e) {
    assert.ok(isFedError(e, 'timeout') || isFedError(e, 'closed'), String(e));
  } finally {
    mute.close();
  }
});

test('garbage from a client closes that channel with malformed; the client gets INVALID_ARGUMENT; the server serves on', async () => {
  const { listener, accepted } = await listenRecording(new GrpcTransport());
  const raw = rawClient(listener.endpoint);
  raw.call.write(Buffer.from([0xff, 0xff, 0xff, 0x01, 0x02]));
  const status = await raw.status;
  assert.is(status.code, grpc.status.INVALID_ARGUMENT);
  assert.match(status.details, /malformed/);
  await until(() => accepted[0]?.closes.length === 1, 5000, 'server channel closed');
  assert.ok(isFedError(accepted[0]?.closes[0], 'malformed'), String(accepted[0]?.closes[0]));
  raw.client.close();

  // A well-behaved client is still served.
  const ch = await new GrpcTransport().dial(listener.endpoint);
  await ch.send(heartbeat(1));
  await until(() => accepted[1]?.frames.length === 1, 5000, 'second client served');
  ch.close();
  await sleep(20);
  assert.is(accepted[0]?.closes.length, 1, 'onClose fired exactly once');
  await listener.close();
});

test('garbage from a server closes the client channel with malformed', async () => {
  let cancelled = false;
  const { endpoint, server } = await rawServer((call) => {
    call.on('cancelled', () => (cancelled = true));
    call.on('error', () => undefined);
    call.write(Buffer.from('this is not a protobuf Frame'));
  });
  const ch = await new GrpcTransport().dial(endpoint);
  const r = record(ch);
  await until(() => r.closes.length === 1, 5000, 'client channel closed');
  assert.ok(isFedError(r.closes[0], 'malformed'), String(r.closes[0]));
  assert.is(r.frames.length, 0);
  await until(() => cancelled, 5000, 'server saw the client give up');
  server.forceShutdown();
});

test('a frame over the receiver\'s limit ends the stream with oversized on both sides (client to server)', async () => {
  const { listener, accepted } = await listenRecording(new GrpcTransport());
  // The sender allows bigger frames than the receiver: only the receiving side can refuse.
  const ch = await new GrpcTransport({ maxFrameBytes: 4 * MiB }).dial(listener.endpoint);
  const r = record(ch);
  await ch.send({ kind: 'blobChunk', blobChunk: { streamId: 1, offset: 0, total: 0, data: new Uint8Array(2 * MiB), last: false, error: '' } });
  await until(() => r.closes.length === 1, 5000, 'sender sees the refusal');
  assert.ok(isFedError(r.closes[0], 'oversized'), String(r.closes[0]));
  await until(() => accepted[0]?.closes.length === 1, 5000, 'receiver side ended');
  assert.ok(isFedError(accepted[0]?.closes[0], 'oversized'), `receiver: ${String(accepted[0]?.closes[0])}`);
  await listener.close();
});

test('a frame over the receiver\'s limit ends the stream with oversized (server to client)', async () => {
  let serverSide: Recording | undefined;
  const listener = await new GrpcTransport({ maxFrameBytes: 4 * MiB }).listen('grpc://127.0.0.1:0', (ch) => {
    serverSide = record(ch);
    void ch.send({ kind: 'blobChunk', blobChunk: { streamId: 1, offset: 0, total: 0, data: new Uint8Array(2 * MiB), last: false, error: '' } });
  });
  const ch = await new GrpcTransport().dial(listener.endpoint);
  const r = record(ch);
  await until(() => r.closes.length === 1, 5000, 'client refuses the big frame');
  assert.ok(isFedError(r.closes[0], 'oversized'), String(r.closes[0]));
  assert.is(r.frames.length, 0);
  await until(() => (serverSide?.closes.length ?? 0) === 1, 5000, 'server side ends');
  await listener.close();
});

test('a frame handler that throws ends the channel with internal, and the process lives on', async () => {
  let acceptedCh: FrameChannel | undefined;
  const listener = await new GrpcTransport().listen('grpc://127.0.0.1:0', (c) => {
    acceptedCh = c;
    record(c);
  });
  const ch = await new GrpcTransport().dial(listener.endpoint);
  const closes: Array<Error | undefined> = [];
  ch.onFrame = () => {
    throw new Error('handler bug');
  };
  ch.onClose = (e) => closes.push(e);
  await ch.send(heartbeat(0)); // the server learns of the stream with the first frame
  await until(() => acceptedCh !== undefined, 5000, 'accepted');
  await acceptedCh!.send(heartbeat(1));
  await until(() => closes.length === 1, 5000, 'channel ended by the throwing handler');
  assert.ok(isFedError(closes[0], 'internal'), String(closes[0]));
  assert.match(String(closes[0]), /handler bug/);
  await listener.close();
});

test('the reason given to close() on the server reaches the client', async () => {
  const listener = await new GrpcTransport().listen('grpc://127.0.0.1:0', (ch) => {
    ch.onFrame = () => ch.close('round over, see you');
  });
  const ch = await new GrpcTransport().dial(listener.endpoint);
  const r = record(ch);
  await ch.send(heartbeat(1));
  await until(() => r.closes.length === 1, 5000, 'closed');
  assert.ok(isFedError(r.closes[0], 'closed'), String(r.closes[0]));
  assert.match(String(r.closes[0]), /round over, see you/);
  await listener.close();
});

test('encoded frames on the wire are plain protobuf Frame bytes', async () => {
  const got: Buffer[] = [];
  const { endpoint, server } = await rawServer((call) => {
    call.on('data', (b: Buffer) => got.push(b));
    call.on('error', () => undefined);
  });
  const ch = await new GrpcTransport().dial(endpoint);
  const frame = heartbeat(7);
  await ch.send(frame);
  await until(() => got.length === 1, 5000, 'raw server got the frame');
  assert.is(Buffer.compare(got[0]!, Buffer.from(encodeFrame(frame))), 0);
  ch.close();
  server.forceShutdown();
});

test('a 1 MiB chunk frame goes as two messages, head then payload, that joined are its protobuf bytes', async () => {
  const got: Buffer[] = [];
  const { endpoint, server } = await rawServer((call) => {
    call.on('data', (b: Buffer) => got.push(b));
    call.on('error', () => undefined);
  });
  const ch = await new GrpcTransport().dial(endpoint);
  await checkSplitOnWire(ch, got);
  ch.close();
  server.forceShutdown();
});

test('a chunk head followed by a payload of another length closes the channel with malformed', async () => {
  const { listener, accepted } = await listenRecording(new GrpcTransport());
  const raw = rawClient(listener.endpoint);
  const { bytes } = encodeForSend({ kind: 'blobChunk', blobChunk: { streamId: 1, offset: 0, total: MiB, data: new Uint8Array(MiB), last: false, error: '' } });
  raw.call.write(bytes);
  raw.call.write(Buffer.alloc(MiB + 1));
  const status = await raw.status;
  assert.is(status.code, grpc.status.INVALID_ARGUMENT);
  assert.match(status.details, /payload of 1048577 bytes/);
  await until(() => accepted[0]?.closes.length === 1, 5000, 'server channel closed');
  assert.ok(isFedError(accepted[0]?.closes[0], 'malformed'), String(accepted[0]?.closes[0]));
  assert.is(accepted[0]?.frames.length, 0, 'no frame delivered from the broken pair');
  raw.client.close();
  await listener.close();
});

test('a stream that ends cleanly after a chunk head and before its payload is reported as malformed, not a clean close', async () => {
  const { listener, accepted } = await listenRecording(new GrpcTransport());
  const raw = rawClient(listener.endpoint);
  const { bytes } = encodeForSend({ kind: 'blobChunk', blobChunk: { streamId: 1, offset: 0, total: MiB, data: new Uint8Array(MiB), last: false, error: '' } });
  raw.call.write(bytes);
  raw.call.end();
  await until(() => accepted[0]?.closes.length === 1, 5000, 'server channel closed');
  const e = accepted[0]?.closes[0];
  assert.ok(isFedError(e, 'malformed'), String(e));
  assert.match(String(e), /inside a chunk frame/);
  assert.is(accepted[0]?.frames.length, 0);
  raw.client.close();
  await listener.close();
});

test.run();
