// What the socket transports (grpc, ws) share: the wire encoding, with a fast path for blob chunk
// frames, and the channel bookkeeping (size limits, decode-or-refuse, exactly one onClose).
//
// A model moves as 1 MiB BlobChunk frames. Encoding one as a single protobuf message would copy the
// payload into it, and a holder serving a model to many peers would pay that copy per peer. Instead
// a chunk frame with a large payload goes out as two messages of the socket library: its *head*,
// the frame's protobuf bytes up to and including the length prefix of `data` (encoded as the last
// field), then the payload itself, a view of the holder's bytes that the library writes from (ws
// sends it as is; grpc-js makes the one copy it makes of every message). Head and payload together
// are exactly the bytes of an ordinary protobuf `Frame`. The receiving side recognises a head by
// its declared length running past the message by exactly the length of its final `data` field,
// and takes the next message as that payload (a view, no copy). A head is read only in the form
// written here (no error text, `data` last); any other message that runs short is refused as
// malformed. Otherwise, whatever the fast decoder does not fully understand goes to the generic
// decoder, which is the one that defines what a whole frame is.
import { FedError, errorMessage } from '../errors.ts';
import { decodeFrame, encodeFrame, loneSurrogate } from '../protocol/codec.ts';
import type { BlobChunk, Frame } from '../protocol/generated.ts';
import { CHUNK_BYTES, type FrameChannel } from './types.ts';

/**
 * Default per-frame limit for the socket transports: one full chunk frame (1 MiB of payload plus a
 * few dozen header bytes) with 64 KiB to spare, which also bounds the largest control frame.
 */
export const DEFAULT_MAX_FRAME_BYTES = CHUNK_BYTES + 64 * 1024;

/** Frames held for a channel whose owner has not attached its handler yet. */
const MAX_EARLY_FRAMES = 1024;

// Frame.blob_chunk is field 4, length-delimited; BlobChunk's fields in declaration order.
const TAG_FRAME_BLOB_CHUNK = (4 << 3) | 2;
const TAG_STREAM_ID = (1 << 3) | 0;
const TAG_OFFSET = (2 << 3) | 1;
const TAG_TOTAL = (3 << 3) | 1;
const TAG_DATA = (4 << 3) | 2;
const TAG_LAST = (5 << 3) | 0;
const TAG_ERROR = (6 << 3) | 2;

const varintSize = (n: number): number => (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5);

function writeVarint(buf: Buffer, pos: number, n: number): number {
  while (n >= 0x80) {
    buf[pos++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  buf[pos++] = n;
  return pos;
}

const isUint32 = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffffffff;

/** Chunk payloads at least this large travel as their own message after the frame's head. */
export const SPLIT_MIN_BYTES = 64 * 1024;

/** A frame's bytes, and for a split chunk frame the payload that follows them as the next message. */
export interface Encoded {
  bytes: Buffer;
  tail?: Buffer;
}

/** `data` is written last, so that with `split` everything before the payload is the head. */
function encodeChunk(c: BlobChunk, split: boolean): Encoded | undefined {
  if (!isUint32(c.streamId) || typeof c.offset !== 'number' || typeof c.total !== 'number') return undefined;
  if (!(c.data instanceof Uint8Array) || typeof c.last !== 'boolean' || typeof c.error !== 'string') return undefined;
  // an error text UTF-8 cannot carry (a lone surrogate) goes to the codec, which refuses it, instead of
  // being sent with U+FFFD in its place
  if (c.error && loneSurrogate.test(c.error)) return undefined;
  const errorBytes = c.error ? Buffer.from(c.error, 'utf8') : undefined;
  const dataLen = c.data.byteLength;
  let inner = 0;
  if (c.streamId !== 0) inner += 1 + varintSize(c.streamId);
  // Zero is omitted as proto3 does, but not -0: its sign bit is part of the value.
  const hasOffset = !Object.is(c.offset, 0);
  const hasTotal = !Object.is(c.total, 0);
  if (hasOffset) inner += 9;
  if (hasTotal) inner += 9;
  if (c.last) inner += 2;
  if (errorBytes) inner += 1 + varintSize(errorBytes.length) + errorBytes.length;
  if (dataLen !== 0) inner += 1 + varintSize(dataLen) + dataLen;
  const size = 1 + varintSize(inner) + inner;
  // the fast decoder leaves error texts to the generic one, which cannot read a head (chunks that
  // report an error carry no payload anyway)
  const apart = split && dataLen >= SPLIT_MIN_BYTES && !errorBytes;
  const out = Buffer.allocUnsafe(apart ? size - dataLen : size);
  out[0] = TAG_FRAME_BLOB_CHUNK;
  let pos = writeVarint(out, 1, inner);
  if (c.streamId !== 0) {
    out[pos++] = TAG_STREAM_ID;
    pos = writeVarint(out, pos, c.streamId);
  }
  if (hasOffset) {
    out[pos++] = TAG_OFFSET;
    pos = out.writeDoubleLE(c.offset, pos);
  }
  if (hasTotal) {
    out[pos++] = TAG_TOTAL;
    pos = out.writeDoubleLE(c.total, pos);
  }
  if (c.last) {
    out[pos++] = TAG_LAST;
    out[pos++] = 1;
  }
  if (errorBytes) {
    out[pos++] = TAG_ERROR;
    pos = writeVarint(out, pos, errorBytes.length);
    pos += errorBytes.copy(out, pos);
  }
  if (dataLen !== 0) {
    out[pos++] = TAG_DATA;
    pos = writeVarint(out, pos, dataLen);
    if (apart) return { bytes: out, tail: Buffer.from(c.data.buffer, c.data.byteOffset, dataLen) };
    out.set(c.data, pos);
  }
  return { bytes: out };
}

/** Frame -> protobuf bytes as one Buffer: what a socket transport carries, head and payload joined. */
export function encodeWireFrame(frame: Frame): Buffer {
  return encodeForSend(frame, false).bytes;
}

/** As encodeWireFrame, but a chunk frame with a large payload comes as head plus payload (no copy). */
export function encodeForSend(frame: Frame, split = true): Encoded {
  if (frame.kind === 'blobChunk') {
    const fast = encodeChunk(frame.blobChunk, split);
    if (fast) return fast;
  }
  const bytes = encodeFrame(frame);
  return { bytes: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
}

const noBytes = Buffer.alloc(0);

/** Reads a varint of at most 32 bits; -1 when it is longer or runs past `end`. */
function readVarint32(bytes: Uint8Array, pos: number, end: number, out: { pos: number }): number {
  let value = 0;
  for (let shift = 0; shift < 35; shift += 7) {
    if (pos >= end) return -1;
    const b = bytes[pos++]!;
    value += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) {
      out.pos = pos;
      return value <= 0xffffffff ? value : -1;
    }
  }
  return -1;
}

/** A split chunk frame's head: the chunk, whose payload of `missing` bytes is the next message. */
export interface ChunkHead {
  chunk: BlobChunk;
  missing: number;
}

function decodeChunk(bytes: Uint8Array, allowHead: boolean): Frame | ChunkHead | undefined {
  const cursor = { pos: 0 };
  const innerLen = readVarint32(bytes, 1, bytes.length, cursor);
  if (innerLen < 0) return undefined;
  const missing = cursor.pos + innerLen - bytes.length;
  if (missing < 0 || (missing > 0 && !allowHead)) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const chunk: BlobChunk = { streamId: 0, offset: 0, total: 0, data: noBytes, last: false, error: '' };
  let pos = cursor.pos;
  const end = bytes.length;
  while (pos < end) {
    const tag = bytes[pos++]!;
    switch (tag) {
      case TAG_STREAM_ID: {
        const v = readVarint32(bytes, pos, end, cursor);
        if (v < 0) return undefined;
        chunk.streamId = v;
        pos = cursor.pos;
        break;
      }
      case TAG_OFFSET:
      case TAG_TOTAL: {
        if (pos + 8 > end) return undefined;
        const v = view.getFloat64(pos, true);
        if (tag === TAG_OFFSET) chunk.offset = v;
        else chunk.total = v;
        pos += 8;
        break;
      }
      case TAG_DATA: {
        const len = readVarint32(bytes, pos, end, cursor);
        if (len < 0) return undefined;
        if (cursor.pos + len > end) {
          // a head: the message ends with the length of a payload that is exactly what the frame still lacks
          return missing > 0 && len === missing && cursor.pos === end ? { chunk, missing } : undefined;
        }
        // A Buffer view, like the generic decoder returns, so both paths hand out the same type.
        chunk.data = Buffer.from(bytes.buffer, bytes.byteOffset + cursor.pos, len);
        pos = cursor.pos + len;
        break;
      }
      case TAG_LAST: {
        // A one-byte varint only; anything longer is rare enough to leave to the generic decoder.
        const b = bytes[pos++];
        if (b === undefined || b >= 0x80) return undefined;
        chunk.last = b !== 0;
        break;
      }
      default:
        // error strings (UTF-8 handling), unknown fields, odd encodings: generic path.
        return undefined;
    }
  }
  return missing === 0 ? { kind: 'blobChunk', blobChunk: chunk } : undefined;
}

function checkSize(bytes: number, maxBytes: number): void {
  if (bytes > maxBytes) throw new FedError('oversized', `frame of ${bytes} bytes exceeds the limit of ${maxBytes}`);
}

/**
 * protobuf bytes -> Frame, refusing oversized or malformed input with a typed FedError. Blob chunk
 * payloads are views into `bytes`, which the caller must not reuse afterwards.
 */
export function decodeWireFrame(bytes: Uint8Array, maxBytes = DEFAULT_MAX_FRAME_BYTES): Frame {
  checkSize(bytes.byteLength, maxBytes);
  if (bytes[0] === TAG_FRAME_BLOB_CHUNK) {
    const fast = decodeChunk(bytes, false) as Frame | undefined;
    if (fast) return fast;
  }
  return decodeFrame(bytes, maxBytes);
}

/** One message of a socket transport: a whole frame, or the head of a chunk frame whose payload comes next. */
export function decodeWireMessage(bytes: Uint8Array, maxBytes = DEFAULT_MAX_FRAME_BYTES): Frame | ChunkHead {
  if (bytes[0] === TAG_FRAME_BLOB_CHUNK && bytes.byteLength <= maxBytes) {
    const fast = decodeChunk(bytes, true);
    if (fast && 'missing' in fast) checkSize(bytes.byteLength + fast.missing, maxBytes);
    if (fast) return fast;
  }
  return decodeWireFrame(bytes, maxBytes);
}

/** The chunk frame a head and the message after it make; the payload is a view into `payload`. */
export function joinHead(head: ChunkHead, payload: Uint8Array): Frame {
  if (payload.byteLength !== head.missing) {
    throw new FedError('malformed', `blob chunk payload of ${payload.byteLength} bytes after a head announcing ${head.missing}`);
  }
  const chunk = { ...head.chunk, data: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength) };
  return { kind: 'blobChunk', blobChunk: chunk };
}

/**
 * What the socket transports share: encode/size-check on send, decode-or-refuse on receive, one
 * onClose per channel, and send() promises that never dangle once the channel is gone.
 */
export abstract class WireChannel implements FrameChannel {
  abstract readonly peer: string;
  protected closed = false;
  private closeError: Error | undefined;
  private readonly waiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  // dial() resolves asynchronously, and a socket can deliver the peer's first frames (its hello,
  // often in the same TCP segment as the handshake) before the caller attached its handlers; they
  // wait here, as they would in a socket buffer, and so does the end of the channel.
  private frameHandler: ((frame: Frame) => void) | undefined;
  private closeHandler: ((error?: Error) => void) | undefined;
  private readonly early: Frame[] = [];
  private pendingClose: { error?: Error } | undefined;
  private flushScheduled = false;
  /** The head of a split chunk frame, until its payload (the next message) arrives. */
  private head: ChunkHead | undefined;

  protected constructor(protected readonly maxFrameBytes: number) {}

  get onFrame(): (frame: Frame) => void {
    return this.frameHandler ?? (() => undefined);
  }

  set onFrame(handler: (frame: Frame) => void) {
    this.frameHandler = handler;
    this.scheduleFlush();
  }

  get onClose(): (error?: Error) => void {
    return this.closeHandler ?? (() => undefined);
  }

  set onClose(handler: (error?: Error) => void) {
    this.closeHandler = handler;
    this.scheduleFlush();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  send(frame: Frame): Promise<void> {
    if (this.closed) return Promise.reject(this.sendError());
    let encoded: Encoded;
    try {
      encoded = encodeForSend(frame);
    } catch (e) {
      return Promise.reject(e);
    }
    // Refused here rather than by the library, which would tear the whole stream down for it.
    const size = encoded.bytes.byteLength + (encoded.tail?.byteLength ?? 0);
    if (size > this.maxFrameBytes) {
      return Promise.reject(new FedError('oversized', `${frame.kind} frame of ${size} bytes exceeds the limit of ${this.maxFrameBytes}`));
    }
    return this.write(encoded.bytes, encoded.tail);
  }

  /**
   * Hands encoded bytes to the socket as one message, and `tail` (a split chunk frame's payload) as
   * the message right after it; resolves when below the transport's high-water mark.
   */
  protected abstract write(bytes: Buffer, tail?: Buffer): Promise<void>;
  /** Graceful end (pending frames still go out); `reason` is told to the peer where possible. */
  protected abstract endGracefully(reason: string): void;
  /** Ends at once after a protocol error, telling the peer why where possible. */
  protected abstract abort(error: FedError): void;

  close(reason = 'closed'): void {
    if (this.closed) return;
    this.endGracefully(reason);
    this.finish(undefined, reason);
  }

  /** Ends the channel at once with `error`, telling the peer why (gRPC status, WebSocket close code). */
  abortWith(error: FedError): void {
    this.fail(error);
  }

  /** A promise settled by the next releaseWaiters() or by the channel ending. */
  protected waitForDrain(): Promise<void> {
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  protected releaseWaiters(): void {
    for (const w of this.waiters.splice(0)) w.resolve();
  }

  protected receive(bytes: Uint8Array): void {
    if (this.closed) return;
    let frame: Frame;
    try {
      const head = this.head;
      this.head = undefined;
      const m = head ? joinHead(head, bytes) : decodeWireMessage(bytes, this.maxFrameBytes);
      if ('missing' in m) {
        this.head = m;
        return;
      }
      frame = m;
    } catch (e) {
      const error = e instanceof FedError ? e : new FedError('malformed', errorMessage(e));
      const bare = error.message.startsWith(`${error.code}: `) ? error.message.slice(error.code.length + 2) : error.message;
      this.fail(new FedError(error.code, `from ${this.peer}: ${bare}`, error.detail));
      return;
    }
    if (this.frameHandler && this.early.length === 0) return this.dispatch(this.frameHandler, frame);
    if (this.early.length >= MAX_EARLY_FRAMES) {
      return this.fail(new FedError('internal', `${MAX_EARLY_FRAMES} frames from ${this.peer} arrived with no handler attached`));
    }
    this.early.push(frame);
    this.scheduleFlush();
  }

  private dispatch(handler: (frame: Frame) => void, frame: Frame): void {
    try {
      handler(frame);
    } catch (e) {
      // A throwing handler leaves the link in an unknown state; ending the channel is the only safe
      // answer, and it must not take the process (or the socket library's event loop) with it.
      this.early.length = 0;
      this.fail(new FedError('internal', `frame handler failed on a ${frame.kind} frame: ${errorMessage(e)}`));
    }
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    if (!(this.frameHandler && this.early.length) && !(this.closeHandler && this.pendingClose)) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      // Frames that arrived before the channel ended are still delivered, then the end.
      while (this.frameHandler && this.early.length > 0) this.dispatch(this.frameHandler, this.early.shift()!);
      if (this.pendingClose && this.closeHandler && (this.early.length === 0 || !this.frameHandler)) {
        const { error } = this.pendingClose;
        this.pendingClose = undefined;
        this.early.length = 0;
        this.emitClose(this.closeHandler, error);
      }
    });
  }

  private emitClose(handler: (error?: Error) => void, error?: Error): void {
    try {
      handler(error);
    } catch {
      // The owner's close handler failing must not turn into an uncaught exception inside a socket callback.
    }
  }

  /** Ends the channel because of a local protocol error. */
  protected fail(error: FedError): void {
    if (this.closed) return;
    this.abort(error);
    this.finish(error);
  }

  /** Called exactly once per channel, whichever side or event ended it. */
  protected finish(error?: Error, localReason?: string): void {
    if (this.closed) return;
    this.closed = true;
    // A peer that ends its stream cleanly between a head and its payload sent a truncated frame.
    if (this.head && error instanceof FedError && error.code === 'closed' && error.detail?.clean === true) {
      error = new FedError('malformed', `${this.peer} ended the stream inside a chunk frame (its head came, its payload did not): ${error.message}`, error.detail);
    }
    this.head = undefined;
    this.closeError = error ?? new FedError('closed', `channel to ${this.peer} closed: ${localReason ?? 'closed'}`);
    const failed = this.sendError();
    for (const w of this.waiters.splice(0)) w.reject(failed);
    this.released();
    if (this.closeHandler && this.early.length === 0) return this.emitClose(this.closeHandler, error);
    this.pendingClose = { error };
    this.scheduleFlush();
  }

  /** Timers and other per-channel resources to drop when the channel ends. */
  protected released(): void {}

  private sendError(): FedError {
    const e = this.closeError;
    if (e instanceof FedError && e.code === 'closed') return e;
    return new FedError('closed', `channel to ${this.peer} closed${e ? `: ${e.message}` : ''}`);
  }
}
