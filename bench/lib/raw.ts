// Raw transport ceilings, in this process: how long the bare library takes to move N bytes, with no
// framing, no hashing and no fedstate code. A round's time over the same transport divided by this
// says what the runtime costs on top of the wire.
//   memcpy  one Uint8Array.set of the bytes into a fresh buffer (the in-process "wire")
//   grpc    a bare @grpc/grpc-js bidi stream on loopback, identity serializers, 1 MiB messages paced by
//           write()/'drain', with the channel options fedstate's gRPC transport uses
//   ws      a bare ws socket on loopback, 1 MiB binary messages paced by send callbacks and a 2 MiB
//           bufferedAmount high-water mark, with fedstate's ws socket options
// The receiving side copies each message into one buffer of the full size, as a blob pull must.
import * as grpc from '@grpc/grpc-js';
import WebSocket, { WebSocketServer } from 'ws';
import { grpcChannelOptions } from '../../src/transport/grpc.ts';
import { CHUNK_BYTES } from '../../src/transport/types.ts';
import { wsSocketOptions } from '../../src/transport/ws.ts';

const METHOD = '/bench.Raw/Push';
const identity = (b: Buffer): Buffer => b;
const HIGH_WATER = 2 * 1024 * 1024;

export interface RawPath {
  /** Moves `bytes` once from one end to the other; resolves when the receiver holds all of them. */
  transfer(bytes: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

export function memcpyPath(): RawPath {
  return {
    transfer: async (bytes) => {
      const out = new Uint8Array(bytes.byteLength);
      out.set(bytes);
    },
    close: async () => undefined,
  };
}

/** The bytes as 1 MiB Buffer views (no copy). */
export function chunked(bytes: Uint8Array): Buffer[] {
  const out: Buffer[] = [];
  for (let o = 0; o < bytes.byteLength; o += CHUNK_BYTES) {
    out.push(Buffer.from(bytes.buffer, bytes.byteOffset + o, Math.min(CHUNK_BYTES, bytes.byteLength - o)));
  }
  return out;
}

/** Sends the chunks over a ws socket keeping at most `highWater` bytes queued, topping up from each send callback. */
export function sendPaced(ws: WebSocket, chunks: Buffer[], highWater = HIGH_WATER): void {
  let next = 0;
  const pump = (): void => {
    while (next < chunks.length && ws.bufferedAmount <= highWater) ws.send(chunks[next++]!, { binary: true }, later);
  };
  const later = (err?: Error): void => {
    if (!err) pump();
  };
  pump();
}

/** Where a raw path's receiver gathers one transfer. */
interface Sink {
  total: number;
  buffer: Uint8Array;
  got: number;
  done: () => void;
}

const sinkFor = (bytes: Uint8Array, done: () => void): Sink => ({ total: bytes.byteLength, buffer: new Uint8Array(bytes.byteLength), got: 0, done });

function receive(s: Sink, b: Buffer): void {
  s.buffer.set(b, s.got);
  s.got += b.byteLength;
  if (s.got === s.total) s.done();
}

export async function grpcPath(): Promise<RawPath> {
  let sink: Sink | undefined;
  const server = new grpc.Server(grpcChannelOptions());
  server.addService(
    { push: { path: METHOD, requestStream: true, responseStream: true, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity } },
    {
      push: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        call.on('error', () => undefined);
        call.on('data', (b: Buffer) => receive(sink!, b));
        call.on('end', () => call.end());
      },
    },
  );
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), grpcChannelOptions());
  await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 10_000, (e) => (e ? reject(e) : resolve())));
  const call = client.makeBidiStreamRequest<Buffer, Buffer>(METHOD, identity, identity);
  call.on('error', () => undefined);
  return {
    transfer: (bytes) =>
      new Promise<void>((resolve) => {
        sink = sinkFor(bytes, resolve);
        const chunks = chunked(bytes);
        let next = 0;
        const pump = (): void => {
          while (next < chunks.length) {
            if (!call.write(chunks[next++]!)) {
              call.once('drain', pump);
              return;
            }
          }
        };
        pump();
      }),
    close: async () => {
      call.end();
      client.close();
      await new Promise<void>((r) => server.tryShutdown(() => r()));
    },
  };
}

export async function wsPath(): Promise<RawPath> {
  let sink: Sink | undefined;
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, ...wsSocketOptions() });
  await new Promise((r) => wss.once('listening', r));
  wss.on('connection', (sock) => {
    sock.on('message', (b: Buffer) => receive(sink!, b));
  });
  const a = wss.address();
  const ws = new WebSocket(`ws://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/`, wsSocketOptions());
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return {
    transfer: (bytes) =>
      new Promise<void>((resolve) => {
        sink = sinkFor(bytes, resolve);
        sendPaced(ws, chunked(bytes));
      }),
    close: async () => {
      ws.close();
      await new Promise<void>((r) => wss.close(() => r()));
    },
  };
}

/** Median of `reps` timed transfers of `bytes` (after one untimed), in ms. */
export async function timeTransfer(path: RawPath, bytes: Uint8Array, reps = 3): Promise<number> {
  await path.transfer(bytes);
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    await path.transfer(bytes);
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1]!;
}
