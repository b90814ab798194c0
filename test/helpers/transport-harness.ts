// Set-up shared by the socket transport tests (grpc, ws): polling for an outcome, recording what a
// channel delivers, and a listener on a free local port that records every channel it accepts.
import * as assert from 'uvu/assert';
import net from 'node:net';
import { encodeFrame, makeMessage } from '../../src/protocol/codec.ts';
import type { Frame } from '../../src/protocol/generated.ts';
import type { FrameChannel, Listener, Transport } from '../../src/transport/types.ts';

export const MiB = 1024 * 1024;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(5);
  }
}

export interface Recording {
  frames: Frame[];
  closes: Array<Error | undefined>;
}

export function record(ch: FrameChannel): Recording {
  const r: Recording = { frames: [], closes: [] };
  ch.onFrame = (f) => r.frames.push(f);
  ch.onClose = (e) => r.closes.push(e);
  return r;
}

export const heartbeat = (seq: number): Frame => ({
  kind: 'envelope',
  envelope: { from: 'client/a', to: 'combiner/b', body: makeMessage('Heartbeat', { seq }) },
});

/** Listens on a free port of 127.0.0.1 and records every accepted channel, in order. */
export async function listenRecording(t: Transport): Promise<{ listener: Listener; accepted: Recording[] }> {
  const accepted: Recording[] = [];
  const listener = await t.listen(`${t.kind}://127.0.0.1:0`, (ch) => accepted.push(record(ch)));
  return { listener, accepted };
}

/** A local port that was free a moment ago, so that nobody listens on it. */
export async function closedPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  return port;
}

/** A TCP server that accepts connections and never says a word; `close` also drops its connections. */
export async function muteServer(): Promise<{ port: number; close: () => void }> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => sockets.push(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/**
 * Sends a 1 MiB chunk frame over `ch` and checks what a bare peer of the library received (`got`, its
 * messages in order): two messages, the frame's head and then the payload, that joined are the
 * frame's protobuf bytes.
 */
export async function checkSplitOnWire(ch: FrameChannel, got: Buffer[]): Promise<void> {
  const data = new Uint8Array(MiB).map((_, i) => i * 7);
  const frame: Frame = { kind: 'blobChunk', blobChunk: { streamId: 9, offset: 3 * MiB, total: 8 * MiB, data, last: false, error: '' } };
  await ch.send(frame);
  await until(() => got.length === 2, 5000, 'bare peer got head and payload');
  assert.ok(got[0]!.byteLength < 64, `head of ${got[0]!.byteLength} bytes`);
  assert.is(got[1]!.byteLength, MiB);
  assert.is(Buffer.compare(Buffer.concat(got), Buffer.from(encodeFrame(frame))), 0);
}
