// The transport contract: every transport (inproc in strict codec mode, grpc, ws) must pass the same
// suite, first on its raw FrameChannels, then through the Link that all of them share. The socket
// transports also face real processes: this file re-runs itself as a child peer (FEDSTATE_CONTRACT_PEER)
// that can be frozen (SIGSTOP) or killed, which is how a slow reader and a vanished peer look on a wire.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fork, type ChildProcess } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import fc from 'fast-check';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { FedError, isFedError } from '../src/errors.ts';
import { decodeFrame, encodeFrame, makeMessage } from '../src/protocol/codec.ts';
import type { Envelope, Frame } from '../src/protocol/generated.ts';
import { SPLIT_MIN_BYTES, decodeWireFrame, decodeWireMessage, encodeForSend, encodeWireFrame, joinHead } from '../src/transport/chunk-frame.ts';
import { formatEndpoint, parseEndpoint } from '../src/transport/endpoint.ts';
import { GrpcTransport } from '../src/transport/grpc.ts';
import { WsTransport } from '../src/transport/ws.ts';
import { InprocNetwork } from '../src/transport/inproc.ts';
import { Link, partialOf } from '../src/transport/link.ts';
import { OFF_THREAD_MIN_BYTES, hashWorker } from '../src/transport/off-thread-hash.ts';
import { InprocTransport } from '../src/transport/inproc.ts';
import { createTransport, transportFor } from '../src/transport/registry.ts';
import { CHUNK_BYTES, type FrameChannel, type Listener, type Transport, type TransportKind } from '../src/transport/types.ts';

// ------------------------------------------------------------------------------------------------
// Child peer mode: listen (or dial), count and hash what arrives, report on request over IPC.
// ------------------------------------------------------------------------------------------------

interface PeerConfig {
  kind: 'grpc' | 'ws';
  mode: 'listen' | 'dial';
  endpoint?: string;
  opts?: Record<string, number>;
}

const peerEnv = process.env.FEDSTATE_CONTRACT_PEER;
if (peerEnv) {
  await runPeer(JSON.parse(peerEnv) as PeerConfig);
  await new Promise(() => undefined); // never registers or runs the tests below; exits on disconnect
}

async function runPeer(cfg: PeerConfig): Promise<void> {
  const transport = createTransport(cfg.kind, cfg.opts ?? {});
  const hash = createHash('sha256');
  let frames = 0;
  let bytes = 0;
  const attach = (ch: FrameChannel): void => {
    ch.onFrame = (f) => {
      frames++;
      if (f.kind === 'blobChunk') {
        bytes += f.blobChunk.data.byteLength;
        hash.update(f.blobChunk.data);
      }
    };
    ch.onClose = () => undefined;
  };
  if (cfg.mode === 'listen') {
    const l = await transport.listen(`${cfg.kind}://127.0.0.1:0`, attach);
    process.send?.({ endpoint: l.endpoint });
  } else {
    attach(await transport.dial(cfg.endpoint ?? ''));
    process.send?.({ dialed: true });
  }
  process.on('message', (m) => {
    if (m === 'report') process.send?.({ frames, bytes, hash: hash.copy().digest('hex') });
  });
  process.on('disconnect', () => process.exit(0));
}

// ------------------------------------------------------------------------------------------------
// Harness
// ------------------------------------------------------------------------------------------------

const selfPath = fileURLToPath(import.meta.url);
const kinds: TransportKind[] = ['inproc', 'grpc', 'ws'];
const socketKinds: Array<'grpc' | 'ws'> = ['grpc', 'ws'];
const MiB = 1024 * 1024;

let inprocNetwork = new InprocNetwork();
let inprocSeq = 0;

function transportOf(kind: TransportKind, opts: Record<string, number> = {}): Transport {
  // inproc runs strict: every frame goes through the protobuf codec, like on a wire.
  if (kind === 'inproc') return createTransport('inproc', { network: inprocNetwork, strict: true });
  return createTransport(kind, opts);
}

const anyEndpoint = (kind: TransportKind): string =>
  kind === 'inproc' ? `inproc://contract-${++inprocSeq}` : `${kind}://127.0.0.1:0`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(5);
  }
}

interface Pair {
  dialer: FrameChannel;
  acceptor: FrameChannel;
  listener: Listener;
  transport: Transport;
}

async function channelPair(kind: TransportKind, opts: Record<string, number> = {}): Promise<Pair> {
  const transport = transportOf(kind, opts);
  let accepted!: (ch: FrameChannel) => void;
  const acceptorP = new Promise<FrameChannel>((r) => (accepted = r));
  const listener = await transport.listen(anyEndpoint(kind), (ch) => accepted(ch));
  const dialer = await transport.dial(listener.endpoint);
  const acceptor = await within(5000, acceptorP, 'accept');
  return { dialer, acceptor, listener, transport };
}

/** Records what a channel delivers and how it ended. */
function record(ch: FrameChannel): { frames: Frame[]; closes: Array<Error | undefined> } {
  const r = { frames: [] as Frame[], closes: [] as Array<Error | undefined> };
  ch.onFrame = (f) => r.frames.push(f);
  ch.onClose = (e) => r.closes.push(e);
  return r;
}

const heartbeat = (seq: number, from = 'client/a', to = 'combiner/b'): Frame => ({
  kind: 'envelope',
  envelope: { from, to, body: makeMessage('Heartbeat', { seq }) },
});

const chunkFrame = (streamId: number, offset: number, data: Uint8Array, last = false): Frame => ({
  kind: 'blobChunk',
  blobChunk: { streamId, offset, total: 0, data, last, error: '' },
});

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function randomBlob(bytes: number): Uint8Array {
  const b = new Uint8Array(bytes);
  // randomFillSync caps one call at 2^31-1 bytes; fill in slices to stay well below.
  for (let o = 0; o < bytes; o += 64 * MiB) randomFillSync(b, o, Math.min(64 * MiB, bytes - o));
  return b;
}

// Link helpers: node "a" (dials, hosts client/a) and node "b" (listens, hosts combiner/b).

interface LinkSide {
  blobs: Map<string, Uint8Array>;
  envelopes: Envelope[];
}

const side = (): LinkSide => ({ blobs: new Map(), envelopes: [] });

function linkOn(channel: FrameChannel, node: string, actor: string, s: LinkSide, extra: { window?: number } = {}): Link {
  return new Link(channel, {
    node,
    actors: () => [actor],
    blobs: { get: (h) => s.blobs.get(h) },
    onEnvelope: (env) => s.envelopes.push(env),
    ...extra,
  });
}

interface LinkPair {
  a: Link;
  b: Link;
  sa: LinkSide;
  sb: LinkSide;
  listener: Listener;
  transport: Transport;
  acceptedChannels: FrameChannel[];
}

async function linkPair(
  kind: TransportKind,
  opts: {
    sa?: LinkSide;
    sb?: LinkSide;
    wrapDialer?: (ch: FrameChannel) => FrameChannel;
    wrapAcceptor?: (ch: FrameChannel) => FrameChannel;
    dialVia?: (endpoint: string) => Promise<string>;
    window?: number;
  } = {},
): Promise<LinkPair> {
  const transport = transportOf(kind);
  const sa = opts.sa ?? side();
  const sb = opts.sb ?? side();
  const acceptedChannels: FrameChannel[] = [];
  let bReady!: (l: Link) => void;
  const bP = new Promise<Link>((r) => (bReady = r));
  const listener = await transport.listen(anyEndpoint(kind), (ch) => {
    acceptedChannels.push(ch);
    const b = linkOn(opts.wrapAcceptor ? opts.wrapAcceptor(ch) : ch, 'node-b', 'combiner/b', sb, { window: opts.window });
    void b.start().then(bReady, () => undefined);
  });
  const raw = await transport.dial(opts.dialVia ? await opts.dialVia(listener.endpoint) : listener.endpoint);
  const a = await linkOn(opts.wrapDialer ? opts.wrapDialer(raw) : raw, 'node-a', 'client/a', sa, { window: opts.window }).start();
  const b = await within(5000, bP, 'acceptor link');
  return { a, b, sa, sb, listener, transport, acceptedChannels };
}

/** A FrameChannel decorator: observe or delay what flows through, without touching the transport. */
class Tap implements FrameChannel {
  onFrame: (frame: Frame) => void = () => undefined;
  onClose: (error?: Error) => void = () => undefined;
  sent = 0;
  delivered = 0;
  private readonly queue: Frame[] = [];
  private draining = false;

  constructor(
    readonly inner: FrameChannel,
    private readonly hooks: { delayMs?: number; onFrame?: (f: Frame, tap: Tap) => void; onSend?: (f: Frame, tap: Tap) => void } = {},
  ) {
    inner.onFrame = (f) => {
      this.hooks.onFrame?.(f, this);
      if (!this.hooks.delayMs) return this.deliver(f);
      this.queue.push(f);
      if (!this.draining) void this.drain();
    };
    inner.onClose = (e) => this.onClose(e);
  }

  get peer(): string {
    return this.inner.peer;
  }

  private deliver(f: Frame): void {
    this.delivered++;
    this.onFrame(f);
  }

  private async drain(): Promise<void> {
    this.draining = true;
    for (let f = this.queue.shift(); f; f = this.queue.shift()) {
      await sleep(this.hooks.delayMs ?? 0);
      this.deliver(f);
    }
    this.draining = false;
  }

  send(frame: Frame): Promise<void> {
    this.sent++;
    this.hooks.onSend?.(frame, this);
    return this.inner.send(frame);
  }

  close(reason?: string): void {
    this.inner.close(reason);
  }
}

/** A TCP relay in front of a socket transport's listener, so a test can cut the wire (RST) mid-stream. */
async function tcpRelay(targetPort: number): Promise<{ port: number; cut: () => void; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    cut: () => {
      for (const s of sockets) s.resetAndDestroy();
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/**
 * A link pair whose holder (b) holds `blob`, and whose link drops when the requester (a) sees its
 * `cutAt`-th chunk: socket transports lose the TCP connection itself (RST through a relay), inproc
 * loses its peer.
 */
async function cuttablePair(kind: TransportKind, blob: Uint8Array, cutAt: number, window?: number) {
  const hash = sha256(blob);
  const sb = side();
  sb.blobs.set(hash, blob);
  let relay: Awaited<ReturnType<typeof tcpRelay>> | undefined;
  let cut = (): void => undefined;
  const seen = { chunks: 0 };
  const p = await linkPair(kind, {
    sb,
    window,
    dialVia: async (ep) => {
      if (kind === 'inproc') return ep;
      relay = await tcpRelay(parseEndpoint(ep).port);
      return `${kind}://127.0.0.1:${relay.port}`;
    },
    wrapDialer: (ch) => new Tap(ch, { onFrame: (f) => void (f.kind === 'blobChunk' && ++seen.chunks === cutAt && cut()) }),
  });
  cut = kind === 'inproc' ? () => p.acceptedChannels[0]?.close('dropped') : () => relay?.cut();
  return { p, hash, seen, closeRelay: async () => relay?.close() };
}

interface Child {
  proc: ChildProcess;
  next: () => Promise<Record<string, unknown>>;
  report: () => Promise<{ frames: number; bytes: number; hash: string }>;
  kill: () => void;
}

async function spawnPeer(cfg: PeerConfig): Promise<Child & { hello: Record<string, unknown> }> {
  const proc = fork(selfPath, [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, FEDSTATE_CONTRACT_PEER: JSON.stringify(cfg) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const inbox: Array<Record<string, unknown>> = [];
  let waiting: ((m: Record<string, unknown>) => void) | undefined;
  proc.on('message', (m) => {
    const msg = m as Record<string, unknown>;
    if (waiting) {
      const w = waiting;
      waiting = undefined;
      w(msg);
    } else inbox.push(msg);
  });
  const next = (): Promise<Record<string, unknown>> => {
    const m = inbox.shift();
    if (m) return Promise.resolve(m);
    return new Promise((r) => (waiting = r));
  };
  const child: Child = {
    proc,
    next,
    report: async () => {
      proc.send('report');
      return (await within(10_000, next(), 'peer report')) as { frames: number; bytes: number; hash: string };
    },
    kill: () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    },
  };
  const hello = await within(60_000, next(), 'peer start');
  return { ...child, hello };
}

const closeCount = (closes: Array<Error | undefined>): number => closes.length;

// Starting a peer process costs about a second (tsx compiles this file); the listening peers the
// socket tests need are started together, the first time one is asked for.
const LISTEN_PEERS_PER_KIND = 3;
let listenPeers: Map<'grpc' | 'ws', Array<Promise<Child & { hello: Record<string, unknown> }>>> | undefined;
const allPeers: Child[] = [];
process.on('exit', () => allPeers.forEach((c) => c.kill()));

function listeningPeer(kind: 'grpc' | 'ws'): Promise<Child & { hello: Record<string, unknown> }> {
  listenPeers ??= new Map(
    socketKinds.map((k) => [
      k,
      Array.from({ length: LISTEN_PEERS_PER_KIND }, () =>
        spawnPeer({ kind: k, mode: 'listen' }).then((c) => {
          allPeers.push(c);
          return c;
        }),
      ),
    ]),
  );
  const next = listenPeers.get(kind)?.shift();
  if (!next) throw new Error(`more than ${LISTEN_PEERS_PER_KIND} listening ${kind} peers asked for`);
  return next;
}

// ------------------------------------------------------------------------------------------------
// Endpoints, registry, wire encoding
// ------------------------------------------------------------------------------------------------

test('endpoints: the three forms parse and print back; anything else is a config error', () => {
  for (const ep of ['inproc://reducer', 'grpc://127.0.0.1:7001', 'ws://combiner-1.local:0', 'grpc://[::1]:5']) {
    assert.is(formatEndpoint(parseEndpoint(ep)), ep);
  }
  assert.equal(parseEndpoint('grpc://10.0.0.2:12080'), { kind: 'grpc', host: '10.0.0.2', port: 12080 });
  const bad = ['', 'grpc://', 'grpc://host', 'grpc://host:65536', 'http://h:1', 'inproc://a:1', 'ws://h:1/path', 'grpc://a b:1', 'reducer'];
  for (const ep of bad) {
    try {
      parseEndpoint(ep);
      assert.unreachable(ep);
    } catch (e) {
      assert.ok(isFedError(e, 'config'), `${ep}: ${String(e)}`);
    }
  }
  try {
    parseEndpoint('ws://h:1', 'grpc');
    assert.unreachable('kind mismatch');
  } catch (e) {
    assert.ok(isFedError(e, 'config'));
  }
});

test('registry: createTransport and transportFor pick the implementation; unknown kinds are refused', () => {
  assert.ok(createTransport('grpc') instanceof GrpcTransport);
  assert.ok(createTransport('ws', { highWaterMark: 1 }) instanceof WsTransport);
  assert.ok(createTransport('inproc') instanceof InprocTransport);
  assert.ok(transportFor('ws://127.0.0.1:1') instanceof WsTransport);
  assert.is(transportFor('grpc://127.0.0.1:1', { grpc: { keepaliveMs: 5 } }).kind, 'grpc');
  try {
    createTransport('carrier-pigeon');
    assert.unreachable('unknown kind');
  } catch (e) {
    assert.ok(isFedError(e, 'config'), String(e));
  }
});

/** The FedError code fn throws with, or 'ok'. */
function typedRefusalOf(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (e) {
    return e instanceof FedError ? e.code : `untyped: ${String(e)}`;
  }
}

const arbChunk = fc.record({
  streamId: fc.nat({ max: 0xffffffff }),
  offset: fc.oneof(fc.nat({ max: 2 ** 40 }), fc.double()),
  total: fc.oneof(fc.nat({ max: 2 ** 40 }), fc.double({ noNaN: true })),
  data: fc.uint8Array({ maxLength: 300 }),
  last: fc.boolean(),
  error: fc.oneof(fc.constant(''), fc.string()),
});

const sameChunk = (a: Frame, b: Frame): boolean => {
  if (a.kind !== 'blobChunk' || b.kind !== 'blobChunk') return false;
  const x = a.blobChunk;
  const y = b.blobChunk;
  return (
    x.streamId === y.streamId &&
    Object.is(x.offset, y.offset) &&
    Object.is(x.total, y.total) &&
    x.last === y.last &&
    x.error === y.error &&
    Buffer.compare(Buffer.from(x.data), Buffer.from(y.data)) === 0
  );
};

test('wire: the blob chunk fast path and the protobuf codec agree in both directions', () => {
  fc.assert(
    fc.property(arbChunk, (chunk) => {
      const frame: Frame = { kind: 'blobChunk', blobChunk: chunk };
      const fast = encodeWireFrame(frame);
      const slow = encodeFrame(frame);
      return (
        sameChunk(decodeFrame(fast), frame) &&
        sameChunk(decodeWireFrame(slow), frame) &&
        sameChunk(decodeWireFrame(fast), frame)
      );
    }),
    { numRuns: 500 },
  );
});

test('wire: truncated or corrupted chunk frames are refused exactly as the codec refuses them', () => {
  fc.assert(
    fc.property(arbChunk, fc.nat(), fc.nat({ max: 255 }), (chunk, at, byte) => {
      const bytes = encodeWireFrame({ kind: 'blobChunk', blobChunk: chunk });
      const cut = bytes.subarray(0, at % bytes.length);
      const flipped = Buffer.from(bytes);
      flipped[at % bytes.length] = byte;
      for (const input of [cut, flipped]) {
        let slow: unknown;
        let fast: unknown;
        try {
          slow = decodeFrame(input);
        } catch (e) {
          slow = e;
        }
        try {
          fast = decodeWireFrame(input);
        } catch (e) {
          fast = e;
        }
        if (slow instanceof Error || fast instanceof Error) {
          if (!(slow instanceof FedError) || !(fast instanceof FedError) || slow.code !== fast.code) return false;
        } else if (!((slow as Frame).kind === 'blobChunk' ? sameChunk(slow as Frame, fast as Frame) : JSON.stringify(slow) === JSON.stringify(fast))) {
          return false;
        }
      }
      return true;
    }),
    { numRuns: 500 },
  );
});

test('wire: a large chunk goes as head + payload, which joined are protobuf Frame bytes; the receiver rebuilds it from the two', () => {
  const sizes = fc.oneof(fc.integer({ min: SPLIT_MIN_BYTES - 2, max: SPLIT_MIN_BYTES + 2 }), fc.integer({ min: 0, max: 3 * SPLIT_MIN_BYTES }));
  fc.assert(
    fc.property(arbChunk, sizes, fc.nat({ max: 255 }), (chunk, size, fill) => {
      const frame: Frame = { kind: 'blobChunk', blobChunk: { ...chunk, data: new Uint8Array(size).fill(fill) } };
      const { bytes, tail } = encodeForSend(frame);
      // split exactly when the payload is large and there is no error text (error chunks carry no
      // payload in practice; these may)
      if ((tail !== undefined) !== (size >= SPLIT_MIN_BYTES && chunk.error === '')) return false;
      const whole = tail ? Buffer.concat([bytes, tail]) : bytes;
      if (!sameChunk(decodeFrame(whole, 1 << 24), frame)) return false; // the generic codec reads the joined bytes
      if (!tail) return sameChunk(decodeWireFrame(bytes, 1 << 24), frame);
      // the head alone is a truncated frame to anything but a channel expecting a payload next
      const alone = typedRefusalOf(() => decodeWireFrame(bytes, 1 << 24));
      if (alone !== 'malformed') return false;
      const head = decodeWireMessage(bytes, 1 << 24);
      if (!('missing' in head) || head.missing !== size) return false;
      // the payload is a view of the message it came in, not a copy
      const rebuilt = joinHead(head, tail);
      return sameChunk(rebuilt, frame) && rebuilt.kind === 'blobChunk' && rebuilt.blobChunk.data.buffer === tail.buffer;
    }),
    { numRuns: 300 },
  );
});

test('wire: a head whose frame would exceed the limit is oversized; a payload of another length is malformed', () => {
  const frame: Frame = { kind: 'blobChunk', blobChunk: { streamId: 3, offset: 0, total: 2 * MiB, data: new Uint8Array(2 * MiB), last: false, error: '' } };
  const { bytes, tail } = encodeForSend(frame);
  assert.ok(tail && bytes.byteLength < 64, `head of ${bytes.byteLength} bytes`);
  assert.is(typedRefusalOf(() => decodeWireMessage(bytes, 2 * MiB)), 'oversized');
  const head = decodeWireMessage(bytes, 4 * MiB);
  assert.ok('missing' in head);
  for (const n of [0, 2 * MiB - 1, 2 * MiB + 1]) {
    assert.is(typedRefusalOf(() => joinHead(head, new Uint8Array(n))), 'malformed', `payload of ${n} bytes`);
  }
  // a frame whose declared length runs past the message without a trailing data field is no head
  const cut = encodeWireFrame({ kind: 'blobChunk', blobChunk: { streamId: 1, offset: 0, total: 0, data: new Uint8Array(10), last: true, error: '' } });
  assert.is(typedRefusalOf(() => decodeWireMessage(cut.subarray(0, cut.byteLength - 1))), 'malformed');
});

test('wire: a chunk frame whose payload is a full 1 MiB stays within the default frame limit', () => {
  const bytes = encodeWireFrame(chunkFrame(0xffffffff, 2 ** 40, new Uint8Array(CHUNK_BYTES), true));
  assert.ok(bytes.byteLength < CHUNK_BYTES + 64, `${bytes.byteLength} bytes`);
  assert.ok(sameChunk(decodeWireFrame(bytes), chunkFrame(0xffffffff, 2 ** 40, new Uint8Array(CHUNK_BYTES), true)));
  try {
    decodeWireFrame(new Uint8Array(2 * MiB));
    assert.unreachable('oversized decode');
  } catch (e) {
    assert.ok(isFedError(e, 'oversized'));
  }
});

// ------------------------------------------------------------------------------------------------
// Raw FrameChannel contract
// ------------------------------------------------------------------------------------------------

for (const kind of kinds) {
  test(`${kind}: listener reports a dialable endpoint`, async () => {
    const t = transportOf(kind);
    const l = await t.listen(anyEndpoint(kind), (ch) => ch.close());
    const ep = parseEndpoint(l.endpoint, kind);
    if (kind !== 'inproc') assert.ok(ep.port > 0, `real port in ${l.endpoint}`);
    await l.close();
  });

  test(`${kind}: 10,000 frames each way arrive complete and in order`, async () => {
    const { dialer, acceptor, listener } = await channelPair(kind);
    const atA = record(dialer);
    const atB = record(acceptor);
    const n = 10_000;
    const small = new Uint8Array(64);
    // Both directions at once, envelopes interleaved with small chunk frames.
    const pump = async (ch: FrameChannel, from: string, to: string): Promise<void> => {
      for (let i = 0; i < n; i++) await ch.send(i % 5 === 4 ? chunkFrame(7, i, small) : heartbeat(i, from, to));
    };
    await Promise.all([pump(dialer, 'client/a', 'combiner/b'), pump(acceptor, 'combiner/b', 'client/a')]);
    await until(() => atA.frames.length === n && atB.frames.length === n, 20_000, 'all frames');
    for (const got of [atA.frames, atB.frames]) {
      got.forEach((f, i) => {
        const seq = f.kind === 'envelope' && f.envelope.body.type === 'Heartbeat' ? f.envelope.body.seq : f.kind === 'blobChunk' ? f.blobChunk.offset : -1;
        if (seq !== i) assert.unreachable(`frame ${i} arrived as ${seq}`);
      });
    }
    dialer.close();
    await listener.close();
  });

  test(`${kind}: 64 full 1 MiB chunk frames, sent from plain and from shared memory, arrive intact and in order`, async () => {
    const { dialer, acceptor, listener } = await channelPair(kind);
    const atB = record(acceptor);
    const blob = randomBlob(64 * CHUNK_BYTES);
    // a fetched model is held in shared memory (hashed off-thread) and served from there
    const shared = new Uint8Array(new SharedArrayBuffer(blob.byteLength));
    shared.set(blob);
    for (let o = 0; o < blob.byteLength; o += CHUNK_BYTES) {
      const from = (o / CHUNK_BYTES) % 2 ? shared : blob;
      await dialer.send(chunkFrame(1, o, from.subarray(o, o + CHUNK_BYTES), o + CHUNK_BYTES === blob.byteLength));
    }
    await until(() => atB.frames.length === 64, 20_000, 'chunks');
    const h = createHash('sha256');
    atB.frames.forEach((f, i) => {
      assert.is(f.kind, 'blobChunk');
      if (f.kind !== 'blobChunk') return;
      assert.is(f.blobChunk.offset, i * CHUNK_BYTES);
      assert.is(f.blobChunk.data.byteLength, CHUNK_BYTES);
      h.update(f.blobChunk.data);
    });
    assert.is(h.digest('hex'), sha256(blob));
    dialer.close();
    await listener.close();
  });

  for (const closer of ['dialer', 'acceptor'] as const) {
    test(`${kind}: ${closer} closes: frames sent before arrive, each side's onClose fires once, later sends reject`, async () => {
      const pair = await channelPair(kind);
      const self = pair[closer];
      const other = closer === 'dialer' ? pair.acceptor : pair.dialer;
      const atSelf = record(self);
      const atOther = record(other);
      for (let i = 0; i < 100; i++) await self.send(heartbeat(i));
      self.close('test over');
      assert.equal(atSelf.closes, [undefined], 'local close reports no error, synchronously');
      await until(() => atOther.closes.length > 0, 5000, 'peer sees the close');
      assert.is(atOther.frames.length, 100, 'everything sent before close was delivered');
      const err = atOther.closes[0];
      assert.ok(isFedError(err, 'closed'), `peer close error: ${String(err)}`);
      for (const ch of [self, other]) {
        try {
          await ch.send(heartbeat(1));
          assert.unreachable('send after close');
        } catch (e) {
          assert.ok(isFedError(e, 'closed'), String(e));
        }
      }
      self.close('again');
      other.close('again');
      await sleep(50);
      assert.is(closeCount(atSelf.closes), 1);
      assert.is(closeCount(atOther.closes), 1);
      await pair.listener.close();
    });
  }

  test(`${kind}: a frame that cannot be encoded is refused by send() and the channel stays usable`, async () => {
    const { dialer, acceptor, listener } = await channelPair(kind);
    const atB = record(acceptor);
    const bad: Frame = { kind: 'envelope', envelope: { from: 'nobody', to: 'combiner/b', body: makeMessage('Heartbeat') } };
    try {
      await dialer.send(bad);
      assert.unreachable('bad address accepted');
    } catch (e) {
      assert.ok(isFedError(e, 'malformed'), String(e));
    }
    if (kind !== 'inproc') {
      try {
        await dialer.send(chunkFrame(1, 0, new Uint8Array(2 * MiB)));
        assert.unreachable('oversized frame accepted');
      } catch (e) {
        assert.ok(isFedError(e, 'oversized'), String(e));
      }
    }
    await dialer.send(heartbeat(42));
    await until(() => atB.frames.length === 1, 5000, 'good frame after bad ones');
    assert.is(atB.closes.length, 0);
    dialer.close();
    await listener.close();
  });

  test(`${kind}: listener close refuses new dials${kind === 'inproc' ? '' : ' and ends its channels'}`, async () => {
    const { dialer, listener, transport } = await channelPair(kind);
    const atA = record(dialer);
    await within(10_000, listener.close(), 'listener close');
    // inproc's listener close only stops accepting (its channels live on); the socket transports
    // end their accepted channels too, like a server shutting down.
    if (kind !== 'inproc') {
      await until(() => atA.closes.length === 1, 5000, 'dialer sees listener close');
      assert.ok(isFedError(atA.closes[0], 'closed'), String(atA.closes[0]));
    } else {
      dialer.close();
    }
    try {
      await transport.dial(listener.endpoint);
      assert.unreachable('dial to a closed listener');
    } catch (e) {
      assert.ok(isFedError(e, 'closed'), String(e));
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Through the Link
// ------------------------------------------------------------------------------------------------

for (const kind of kinds) {
  test(`${kind} link: 5,000 envelopes each way arrive in order`, async () => {
    const p = await linkPair(kind);
    const n = 5000;
    for (let i = 0; i < n; i++) {
      p.a.send({ from: 'client/a', to: 'combiner/b', body: makeMessage('Heartbeat', { seq: i }) });
      p.b.send({ from: 'combiner/b', to: 'client/a', body: makeMessage('Heartbeat', { seq: i }) });
    }
    await until(() => p.sa.envelopes.length === n && p.sb.envelopes.length === n, 20_000, 'envelopes');
    for (const envs of [p.sa.envelopes, p.sb.envelopes]) {
      envs.forEach((e, i) => {
        if (e.body.type !== 'Heartbeat' || e.body.seq !== i) assert.unreachable(`envelope ${i} out of order`);
      });
    }
    assert.is(p.a.stats.rejected + p.b.stats.rejected, 0);
    p.a.close();
    await p.listener.close();
  });

  test(`${kind} link: a 100 MB blob is fetched and sha256-verified; unknown blobs are refused`, async () => {
    const blob = randomBlob(100 * 1000 * 1000 + 12345); // not a multiple of the chunk size
    const hash = sha256(blob);
    const sb = side();
    sb.blobs.set(hash, blob);
    const p = await linkPair(kind, { sb });
    const started = performance.now();
    const got = await within(60_000, p.a.fetchBlob(hash), '100 MB fetch');
    const ms = performance.now() - started;
    assert.is(got.byteLength, blob.byteLength);
    assert.is(sha256(got), hash);
    console.log(`    ${kind}: 100 MB blob in ${ms.toFixed(0)} ms (${(blob.byteLength / MiB / (ms / 1000)).toFixed(0)} MiB/s)`);
    try {
      await p.a.fetchBlob('0'.repeat(64));
      assert.unreachable('unknown blob fetched');
    } catch (e) {
      assert.ok(isFedError(e, 'not-found'), String(e));
    }
    p.a.close();
    await p.listener.close();
  });

  test(`${kind} link: large blobs are verified off-thread: altered bytes are refused, concurrent fetches each verify`, async () => {
    const sizes = [OFF_THREAD_MIN_BYTES, 3 * CHUNK_BYTES + 7, 9 * CHUNK_BYTES + 1];
    const blobs = sizes.map((n) => randomBlob(n));
    const sb = side();
    for (const b of blobs) sb.blobs.set(sha256(b), b);
    // a holder that lies: the bytes it serves under this hash had one byte flipped in the last chunk
    const honest = randomBlob(6 * CHUNK_BYTES);
    const lie = honest.slice();
    lie[lie.length - 2]! ^= 1;
    sb.blobs.set(sha256(honest), lie);
    const p = await linkPair(kind, { sb });
    try {
      const got = await within(30_000, Promise.all(blobs.map((b) => p.a.fetchBlob(sha256(b)))), 'concurrent fetches');
      got.forEach((g, i) => assert.ok(Buffer.from(g).equals(blobs[i]!), `blob ${i} arrived intact`));
      // the off-thread path hands over the shared buffer it hashed (no copy), the inline path its own
      assert.is(got[0]!.buffer instanceof SharedArrayBuffer, hashWorker() !== null);
      assert.not.ok(got[1]!.buffer instanceof SharedArrayBuffer, "a blob under the threshold is hashed inline");
      try {
        await within(30_000, p.a.fetchBlob(sha256(honest)), 'lying fetch');
        assert.unreachable('altered blob accepted');
      } catch (e) {
        assert.ok(isFedError(e, 'hash-mismatch'), String(e));
      }
    } finally {
      // closed even when an assertion fails, so a failing test cannot hang the file
      p.a.close();
      await p.listener.close();
    }
  });

  test(`${kind} link: a hash worker that dies mid-blob costs a second pass, never a wrong answer`, async () => {
    const blob = randomBlob(8 * CHUNK_BYTES + 5);
    const honest = randomBlob(6 * CHUNK_BYTES);
    const lie = honest.slice();
    lie[3]! ^= 1;
    const sb = side();
    sb.blobs.set(sha256(blob), blob);
    sb.blobs.set(sha256(honest), lie);
    const p = await linkPair(kind, { sb });
    try {
      const worker = hashWorker();
      const fetching = p.a.fetchBlob(sha256(blob));
      const lying = p.a.fetchBlob(sha256(honest)).then(
        () => 'accepted',
        (e: unknown) => e,
      );
      // fault injection: the worker thread goes away while both blobs are arriving
      if (worker) await (worker as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
      assert.ok(Buffer.from(await within(30_000, fetching, 'fetch after the worker died')).equals(blob));
      const refused = await within(30_000, lying, 'lying fetch after the worker died');
      assert.ok(isFedError(refused, 'hash-mismatch'), String(refused));
      // the next large blob gets a new worker
      const next = hashWorker();
      if (worker) assert.ok(next !== null && next !== worker, 'a new worker replaces the dead one');
      assert.ok(Buffer.from(await within(30_000, p.a.fetchBlob(sha256(blob)), 'fetch with the new worker')).equals(blob));
    } finally {
      p.a.close();
      await p.listener.close();
    }
  });

  test(`${kind} link: fetchBlob into a caller's buffer: reused across fetches, verified, wrong sizes refused`, async () => {
    const blob = randomBlob(OFF_THREAD_MIN_BYTES + 3);
    const other = randomBlob(OFF_THREAD_MIN_BYTES + 3);
    const sb = side();
    sb.blobs.set(sha256(blob), blob);
    sb.blobs.set(sha256(other), other);
    const p = await linkPair(kind, { sb });
    try {
      for (const backing of [new SharedArrayBuffer(blob.byteLength + 16), new ArrayBuffer(blob.byteLength + 16)]) {
        const mine = new Uint8Array(backing, 16, blob.byteLength); // an offset view: the hash must start at its first byte
        const asked: number[] = [];
        const into = (total: number): Uint8Array => (asked.push(total), mine);
        const a = await within(30_000, p.a.fetchBlob(sha256(blob), { into }), 'fetch into');
        assert.ok(a === mine && Buffer.from(mine).equals(blob));
        const b = await within(30_000, p.a.fetchBlob(sha256(other), { into }), 'fetch into again');
        assert.ok(b === mine && Buffer.from(mine).equals(other), 'the same buffer, now holding the second blob');
        assert.equal(asked, [blob.byteLength, blob.byteLength]);
      }
      try {
        await within(30_000, p.a.fetchBlob(sha256(blob), { into: () => new Uint8Array(8) }), 'wrong size');
        assert.unreachable('a buffer of the wrong size was written');
      } catch (e) {
        assert.ok(isFedError(e, 'config'), String(e));
      }
      // the link is still usable after the refusal
      assert.ok(Buffer.from(await within(30_000, p.a.fetchBlob(sha256(blob)), 'plain fetch')).equals(blob));
    } finally {
      // closed even when an assertion fails, so a failing test cannot hang the file
      p.a.close();
      await p.listener.close();
    }
  });

  test(`${kind} link: a slow consumer keeps the holder within its credit window`, async () => {
    const blob = randomBlob(48 * CHUNK_BYTES);
    const hash = sha256(blob);
    const sb = side();
    sb.blobs.set(hash, blob);
    const window = 4;
    let holderChunks = 0;
    let consumerChunks = 0;
    let maxAhead = 0;
    const p = await linkPair(kind, {
      sb,
      window,
      // The fetching side takes each frame 3 ms late: a consumer slower than the wire.
      wrapDialer: (ch) =>
        new Tap(ch, {
          delayMs: 3,
          onFrame: (f) => {
            if (f.kind === 'blobChunk') consumerChunks++;
          },
        }),
      wrapAcceptor: (ch) =>
        new Tap(ch, {
          onSend: (f) => {
            if (f.kind !== 'blobChunk') return;
            holderChunks++;
            maxAhead = Math.max(maxAhead, holderChunks - consumerChunks);
          },
        }),
    });
    const got = await within(30_000, p.a.fetchBlob(hash), 'slow fetch');
    assert.is(sha256(got), hash);
    // consumerChunks counts arrivals at the wire edge, before the delay; what bounds the holder is the
    // credit it got back, so it may run at most one window ahead of what the consumer has received.
    assert.ok(maxAhead <= window + 1, `holder ran ${maxAhead} chunks ahead with a window of ${window}`);
    p.a.close();
    await p.listener.close();
  });

  test(`${kind} link: a link dropped mid-transfer rejects the fetch; nothing half-done is kept; a retry succeeds`, async () => {
    const { p, hash, seen, closeRelay } = await cuttablePair(kind, randomBlob(40 * CHUNK_BYTES), 10);
    // What a node would do: store the blob only once the fetch resolved (verified).
    const stored = new Map<string, Uint8Array>();
    const fetch = p.a.fetchBlob(hash).then((b) => void stored.set(hash, b));
    try {
      await within(20_000, fetch, 'fetch on a dropped link');
      assert.unreachable('fetch survived a dropped link');
    } catch (e) {
      assert.ok(isFedError(e, 'closed'), `fetch rejected with ${String(e)}`);
      assert.match((e as FedError).message, /not received/);
    }
    assert.ok(seen.chunks >= 10 && seen.chunks < 40, `dropped mid-transfer (${seen.chunks} chunks seen)`);
    assert.is(stored.size, 0, 'nothing stored from a failed fetch');
    assert.not.ok(p.a.isOpen);
    await until(() => !p.b.isOpen, 5000, 'holder side notices the drop');

    const retry = await linkOn(await p.transport.dial(p.listener.endpoint), 'node-a', 'client/a', side()).start();
    const got = await within(20_000, retry.fetchBlob(hash), 'retry fetch');
    stored.set(hash, got);
    assert.is(sha256(got), hash);
    retry.close();
    await p.listener.close();
    await closeRelay();
  });

  for (const [chunks, cutAt] of [
    [40, 10],
    [3, 2],
  ] as const) {
    const hashing = chunks * CHUNK_BYTES >= OFF_THREAD_MIN_BYTES ? 'hashed off-thread' : 'hashed inline';
    test(`${kind} link: a ${chunks} MiB transfer (${hashing}) cut by a dropped link resumes on a new link with only the rest; a lying holder for the rest is caught`, async () => {
      const blob = randomBlob(chunks * CHUNK_BYTES);
      // one chunk of credit at a time, so the holder has not sent the rest before the cut
      const window = 1;
      const { p, hash, seen, closeRelay } = await cuttablePair(kind, blob, cutAt, window);
      const failed = await p.a.fetchBlob(hash, { resumable: true }).then(
        () => assert.unreachable('fetch survived a dropped link'),
        (e: unknown) => e,
      );
      assert.ok(isFedError(failed, 'closed'), String(failed));
      const partial = partialOf(failed);
      assert.ok(partial, 'a partial blob comes with the rejection');
      assert.ok(partial.received >= (cutAt - 1) * CHUNK_BYTES && partial.received < blob.byteLength, `${partial.received} bytes kept`);
      assert.is(partial.total, blob.byteLength);

      // an honest holder: only the rest moves, and the whole blob verifies
      const retry = await linkOn(await p.transport.dial(p.listener.endpoint), 'node-a', 'client/a', side()).start();
      const got = await within(20_000, retry.fetchBlob(hash, { resume: partial }), 'resumed fetch');
      assert.is(retry.stats.bytesIn, blob.byteLength - partial.received, 'the resumed link carried only the rest');
      assert.is(sha256(got), hash);
      assert.ok(Buffer.compare(Buffer.from(got), Buffer.from(blob)) === 0);
      // a partial blob is spent once resumed: it cannot be resumed twice, and discarding it frees nothing twice
      assert.ok(partial.isSpent);
      const twice = await retry.fetchBlob(hash, { resume: partial }).then(
        () => assert.unreachable('a spent partial blob was resumed'),
        (e: unknown) => e,
      );
      assert.ok(isFedError(twice, 'config'), String(twice));
      partial.discard();
      assert.is(hashWorker()?.openJobs ?? 0, 0, 'no hash job left running');
      retry.close();

      // the same cut again, and a holder that now answers with other bytes under that hash: the final
      // check covers the prefix as it arrived from the first holder and the rest from this one
      seen.chunks = 0;
      const again = await p.transport.dial(p.listener.endpoint);
      const second = await linkOn(new Tap(again, { onFrame: (f) => void (f.kind === 'blobChunk' && ++seen.chunks === cutAt && again.close('dropped')) }), 'node-a', 'client/a', side(), { window }).start();
      const failedAgain = await second.fetchBlob(hash, { resumable: true }).then(
        () => assert.unreachable('fetch survived a dropped link'),
        (e: unknown) => e,
      );
      const part2 = partialOf(failedAgain);
      assert.ok(part2, String(failedAgain));
      const liar = side();
      const forged = Uint8Array.from(blob);
      forged[forged.length - 1]! ^= 0xff;
      liar.blobs.set(hash, forged);
      const liarListener = await p.transport.listen(anyEndpoint(kind), (ch) => void linkOn(ch, 'node-l', 'combiner/l', liar).start().catch(() => undefined));
      const toLiar = await linkOn(await p.transport.dial(liarListener.endpoint), 'node-a', 'client/a', side()).start();
      const lied = await toLiar.fetchBlob(hash, { resume: part2 }).then(
        () => assert.unreachable('a forged rest was accepted'),
        (e: unknown) => e,
      );
      assert.ok(isFedError(lied, 'hash-mismatch'), String(lied));
      toLiar.close();
      await liarListener.close();
      await p.listener.close();
      await closeRelay();
    });
  }

  test(`${kind} link: a fetch its caller aborts rejects 'cancelled' and stops the holder; the link carries on`, async () => {
    const blob = randomBlob(40 * CHUNK_BYTES);
    const hash = sha256(blob);
    const sb = side();
    sb.blobs.set(hash, blob);
    const ac = new AbortController();
    let chunks = 0;
    const p = await linkPair(kind, { sb, window: 1, wrapDialer: (ch) => new Tap(ch, { onFrame: (f) => void (f.kind === 'blobChunk' && ++chunks === 5 && ac.abort()) }) });
    const e = await p.a.fetchBlob(hash, { signal: ac.signal }).then(
      () => assert.unreachable('an aborted fetch resolved'),
      (err: unknown) => err,
    );
    assert.ok(isFedError(e, 'cancelled'), String(e));
    const sentAtAbort = p.b.stats.bytesOut;
    await sleep(300);
    assert.ok(p.b.stats.bytesOut - sentAtAbort <= 2 * CHUNK_BYTES, `the holder went on sending ${p.b.stats.bytesOut - sentAtAbort} bytes`);
    assert.ok(p.b.stats.bytesOut < 10 * CHUNK_BYTES, `${p.b.stats.bytesOut} bytes sent of ${blob.byteLength}`);
    assert.equal(p.a.blobStreams, { incoming: 0, outgoing: 0 });
    assert.equal(p.b.blobStreams, { incoming: 0, outgoing: 0 }, 'the holder was told and let the stream go');
    assert.is(hashWorker()?.openJobs ?? 0, 0, 'no hash job left running');
    // an already aborted signal never asks, and the link still serves a later fetch
    assert.ok(isFedError(await p.a.fetchBlob(hash, { signal: ac.signal }).catch((err: unknown) => err), 'cancelled'));
    assert.is(sha256(await within(20_000, p.a.fetchBlob(hash), 'fetch after a cancelled one')), hash);
    p.a.close();
    await p.listener.close();
  });

  test(`${kind} link: after the listener restarts on the same endpoint, a redial gets a working link`, async () => {
    const p = await linkPair(kind);
    p.a.send({ from: 'client/a', to: 'combiner/b', body: makeMessage('Heartbeat', { seq: 1 }) });
    await until(() => p.sb.envelopes.length === 1, 5000, 'first envelope');
    const endpoint = p.listener.endpoint;
    await within(10_000, p.listener.close(), 'listener close');
    if (kind === 'inproc') p.b.close('node b restarting'); // see the listener-close test above
    await until(() => !p.a.isOpen, 5000, 'link notices the listener going away');
    try {
      await p.transport.dial(endpoint);
      assert.unreachable('dial succeeded while nothing listens');
    } catch (e) {
      assert.ok(isFedError(e, 'closed'), String(e));
    }
    const sb2 = side();
    const listener2 = await p.transport.listen(endpoint, (ch) => void linkOn(ch, 'node-b', 'combiner/b', sb2).start().catch(() => undefined));
    assert.is(listener2.endpoint, endpoint, 'same endpoint again');
    const a2 = await linkOn(await dialWithRetry(p.transport, endpoint), 'node-a', 'client/a', side()).start();
    a2.send({ from: 'client/a', to: 'combiner/b', body: makeMessage('Heartbeat', { seq: 2 }) });
    await until(() => sb2.envelopes.length === 1, 5000, 'envelope over the new link');
    a2.close();
    await listener2.close();
  });
}

async function dialWithRetry(t: Transport, endpoint: string): Promise<FrameChannel> {
  const end = Date.now() + 5000;
  for (;;) {
    try {
      return await t.dial(endpoint);
    } catch (e) {
      if (Date.now() > end) throw e;
      await sleep(50);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Socket transports against a real peer process
// ------------------------------------------------------------------------------------------------

for (const kind of socketKinds) {
  test(`${kind}: a stopped reader stalls send() at a bounded buffer; all frames arrive, in order, after it resumes`, async () => {
    const child = await listeningPeer(kind);
    try {
      const ch = await transportOf(kind).dial(String(child.hello.endpoint));
      const r = record(ch);
      child.proc.kill('SIGSTOP');
      const sent = createHash('sha256');
      let accepted = 0;
      let stalled: Promise<void> | undefined;
      const rss0 = process.memoryUsage().rss;
      const end = Date.now() + 5000;
      while (Date.now() < end) {
        // a fresh payload per frame: a chunk's data is lent to the channel until it is written out
        const payload = randomBlob(CHUNK_BYTES);
        const p = ch.send(chunkFrame(1, accepted * CHUNK_BYTES, payload));
        sent.update(payload);
        if (!(await Promise.race([p.then(() => true), sleep(500).then(() => false)]))) {
          stalled = p;
          break;
        }
        accepted++;
      }
      const grown = (process.memoryUsage().rss - rss0) / MiB;
      console.log(`    ${kind}: stopped reader: ${accepted} MiB accepted before send() stalled, rss +${grown.toFixed(0)} MiB`);
      assert.ok(stalled, 'send() kept resolving for 5 s against a stopped reader');
      assert.ok(accepted < 48, `${accepted} MiB accepted against a stopped reader`);
      assert.ok(grown < 160, `rss grew by ${grown.toFixed(0)} MiB`);
      child.proc.kill('SIGCONT');
      await within(10_000, stalled!, 'stalled send completes after the reader resumes');
      let report = await child.report();
      const deadline = Date.now() + 10_000;
      while (report.frames < accepted + 1 && Date.now() < deadline) {
        await sleep(50);
        report = await child.report();
      }
      assert.is(report.frames, accepted + 1);
      assert.is(report.hash, sent.digest('hex'), 'the reader got exactly the bytes sent, in order');
      assert.is(r.closes.length, 0);
      ch.close();
    } finally {
      child.kill();
    }
  });

  test(`${kind}: a killed peer process ends the channel once, with a 'closed' error`, async () => {
    const child = await listeningPeer(kind);
    try {
      const ch = await transportOf(kind).dial(String(child.hello.endpoint));
      const r = record(ch);
      await ch.send(heartbeat(1));
      child.kill();
      await until(() => r.closes.length > 0, 10_000, 'close after the peer died');
      await sleep(300);
      assert.is(r.closes.length, 1);
      const err = r.closes[0];
      assert.ok(isFedError(err, 'closed'), String(err));
      try {
        await ch.send(heartbeat(2));
        assert.unreachable('send to a dead peer');
      } catch (e) {
        assert.ok(isFedError(e, 'closed'), String(e));
      }
    } finally {
      child.kill();
    }
  });

  // Short enough for a test, long enough that a loaded machine's scheduling hiccups are not deaths.
  const fastKeepalive = { keepaliveMs: 300, keepaliveTimeoutMs: 700 };

  test(`${kind}: a frozen listener is detected by the dialer's keepalive`, async () => {
    const child = await listeningPeer(kind);
    try {
      const ch = await transportOf(kind, fastKeepalive).dial(String(child.hello.endpoint));
      const r = record(ch);
      await sleep(1200); // a healthy peer answers pings: no false alarm
      assert.is(r.closes.length, 0, 'healthy link kept');
      child.proc.kill('SIGSTOP');
      const t0 = Date.now();
      await until(() => r.closes.length > 0, 8000, 'keepalive notices the frozen peer');
      const err = r.closes[0];
      console.log(`    ${kind}: frozen listener detected after ${Date.now() - t0} ms: ${String(err)}`);
      assert.ok(isFedError(err, 'timeout') || isFedError(err, 'closed'), String(err));
    } finally {
      child.kill();
    }
  });

  test(`${kind}: a frozen dialer is detected by the listener's keepalive`, async () => {
    let accepted: FrameChannel | undefined;
    let r: ReturnType<typeof record> | undefined;
    const listener = await transportOf(kind, fastKeepalive).listen(`${kind}://127.0.0.1:0`, (ch) => {
      accepted = ch;
      r = record(ch);
    });
    const child = await spawnPeer({ kind, mode: 'dial', endpoint: listener.endpoint });
    try {
      await until(() => accepted !== undefined, 5000, 'child dialed');
      await sleep(1200);
      assert.is(r?.closes.length, 0, 'healthy link kept');
      child.proc.kill('SIGSTOP');
      const t0 = Date.now();
      await until(() => (r?.closes.length ?? 0) > 0, 8000, 'keepalive notices the frozen dialer');
      const err = r?.closes[0];
      console.log(`    ${kind}: frozen dialer detected after ${Date.now() - t0} ms: ${String(err)}`);
      assert.ok(isFedError(err, 'timeout') || isFedError(err, 'closed'), String(err));
    } finally {
      child.kill();
      await listener.close();
    }
  });
}

test.run();
