// A Link is the one protocol every transport speaks, on top of any FrameChannel:
//  - hello exchange (node name, hosted actors, protocol version, token) before anything else;
//  - envelopes, in order, with control frames sent ahead of bulk blob chunks so a 100 MB model
//    transfer never delays a heartbeat by more than one chunk;
//  - blob pulls: the requester names a content hash and a credit window; the holder streams chunks
//    only while it has credit (backpressure end to end), and the requester verifies the sha256
//    before anyone sees the bytes, so nothing half-written or altered is ever used. A pull cut by a
//    dropped link can go on over another link from where it stopped (PartialBlob, BlobRequest.offset),
//    and one its requester no longer needs is cancelled at the holder (BlobCancel).
import { FedError, errorMessage } from '../errors.ts';
import { createHash, type Hash } from 'node:crypto';
import { contentHash } from '../model/hash.ts';
import { validateEnvelope } from '../protocol/codec.ts';
import { copyInto } from '../util/shared-copy.ts';
import type { BlobChunk, BlobRequest, Envelope, Frame, LinkHello } from '../protocol/generated.ts';
import { OFF_THREAD_MIN_BYTES, hashWorker, type HashWorker } from './off-thread-hash.ts';
import { CHUNK_BYTES, type BlobSource, type FrameChannel, type PeerIdentity } from './types.ts';

export const PROTOCOL_VERSION = 2;

/**
 * What a FrameChannel's send() may return when it took the frame at once (an in-process channel):
 * one shared, already resolved promise. The Link then sends its next frame in the same turn instead
 * of waiting a microtask per frame; any other promise is awaited as before (backpressure).
 */
export const SENT: Promise<void> = Promise.resolve();

const settled = (): void => undefined;

/**
 * Envelopes a Link of this process validated before sending. An in-process channel hands the very
 * same object to the receiving Link, which then need not validate it a second time (validation is
 * several µs per envelope); anything decoded from bytes is a new object and is validated on arrival.
 */
const validatedHere = new WeakSet<Envelope>();

/** Largest blob (model) a link accepts unless configured otherwise: 1 GiB, FEDn's large-model scale. */
export const DEFAULT_MAX_BLOB_BYTES = 2 ** 30;

export interface LinkOptions {
  node: string;
  actors: () => string[];
  blobs: BlobSource;
  onEnvelope: (envelope: Envelope, link: Link) => void;
  /** Called after hello and on every RouteUpdate. */
  onRoutes?: (link: Link, added: string[], removed: string[]) => void;
  onClose?: (link: Link, error?: Error) => void;
  /** Frames the peer got wrong (bad sender, protocol violation); the link counts them and goes on. */
  onReject?: (link: Link, error: FedError) => void;
  token?: string;
  /** Decides whether the peer's hello is acceptable; throw a FedError to refuse the link. */
  authenticate?: (hello: LinkHello, channel: FrameChannel) => PeerIdentity | undefined;
  /** With an authenticated peer: which actor addresses it may host, and so speak as. */
  mayHost?: (identity: PeerIdentity, address: string) => boolean;
  chunkBytes?: number;
  /** Chunks a requester lets the holder send ahead. */
  window?: number;
  maxBlobBytes?: number;
  helloTimeoutMs?: number;
  /**
   * The accepting side answers the dialler's hello instead of speaking first, so a peer it refuses
   * learns nothing about it (not even which actors it hosts) and its dial fails.
   */
  answerHello?: boolean;
}

export interface FetchBlobOptions {
  /** The most bytes the peer may announce for the blob. */
  maxBytes?: number;
  /** Given the announced size, a buffer of exactly that many bytes to receive into, or undefined (see fetchBlob). */
  into?: (total: number) => Uint8Array | undefined;
  /**
   * Keep what arrived if the link drops mid-transfer: the rejection then carries a PartialBlob
   * (partialOf(error)) that a later fetchBlob of the same hash, on this link or another, resumes.
   * Whoever asks for this must resume or discard() the partial blob.
   */
  resumable?: boolean;
  /** A transfer to continue: only the bytes after partial.received are asked for. */
  resume?: PartialBlob;
  /** Whoever asked no longer needs the blob: the holder is told to stop, and the fetch rejects 'cancelled'. */
  signal?: AbortSignal;
}

/**
 * What a dropped transfer had received: its buffer and running hash. The bytes are not verified
 * until the whole blob is there, so nothing in here is ever handed out on its own. The running hash
 * covers the bytes as they arrived: nobody may write the buffer in between.
 *
 * One owner at a time: the caller holds it until it passes it to fetchBlob({ resume }), which takes
 * it (this object is then spent: discard() does nothing and it cannot be resumed twice); a link that
 * drops again hands back a new one.
 */
export class PartialBlob {
  private spent = false;

  constructor(
    readonly hash: string,
    readonly buffer: Uint8Array,
    readonly received: number,
    /** @internal */ readonly digest: Hash | undefined,
    /** @internal */ readonly offThread: { worker: HashWorker; job: number } | undefined,
  ) {}

  get total(): number {
    return this.buffer.byteLength;
  }

  /** Whether it was resumed or discarded already. */
  get isSpent(): boolean {
    return this.spent;
  }

  /** @internal fetchBlob takes it over. */
  take(): void {
    this.spent = true;
  }

  /** Gives up on the transfer: frees the hash worker's hold on the buffer. */
  discard(): void {
    if (this.spent) return;
    this.spent = true;
    this.offThread?.worker.drop(this.offThread.job);
  }
}

const partials = new WeakMap<Error, PartialBlob>();

/** The resumable part of a fetchBlob that failed because its link dropped, if any arrived. */
export function partialOf(error: unknown): PartialBlob | undefined {
  return error instanceof Error ? partials.get(error) : undefined;
}

interface Outgoing {
  bytes: Uint8Array;
  offset: number;
  credit: number;
}

interface Incoming {
  hash: string;
  /**
   * sha256 fed chunk by chunk as they arrive, so verifying a large model costs no second pass; made
   * at the first chunk of a blob in several (a blob in one chunk is hashed in one shot).
   */
  digest?: Hash;
  /** Instead of `digest`, for a large blob: the worker job hashing `buffer` (shared memory) as it fills. */
  offThread?: { worker: HashWorker; job: number };
  maxBytes: number;
  into?: (total: number) => Uint8Array | undefined;
  resumable: boolean;
  buffer?: Uint8Array;
  received: number;
  sinceCredit: number;
  resolve: (bytes: Uint8Array) => void;
  reject: (error: Error) => void;
}

const isControl = (frame: Frame): boolean => frame.kind !== 'blobChunk';

export class Link {
  remoteNode = '';
  readonly remoteActors = new Set<string>();
  identity: PeerIdentity | undefined;
  private readonly control: Frame[] = [];
  private readonly bulk: Frame[] = [];
  private pumping = false;
  private closed = false;
  private closeError: Error | undefined;
  private nextStream = 1;
  private readonly outgoing = new Map<number, Outgoing>();
  private readonly incoming = new Map<number, Incoming>();
  private readonly helloReceived: Promise<void>;
  private settleHello!: (error?: Error) => void;
  private readonly chunkBytes: number;
  private readonly window: number;
  private readonly maxBlobBytes: number;
  stats = { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0, rejected: 0 };

  /** Blob transfers in progress on this link: pulls this side waits for, and pulls it serves. */
  get blobStreams(): { incoming: number; outgoing: number } {
    return { incoming: this.incoming.size, outgoing: this.outgoing.size };
  }

  constructor(
    readonly channel: FrameChannel,
    private readonly opts: LinkOptions,
  ) {
    this.chunkBytes = opts.chunkBytes ?? CHUNK_BYTES;
    this.window = opts.window ?? 8;
    this.maxBlobBytes = opts.maxBlobBytes ?? DEFAULT_MAX_BLOB_BYTES;
    this.helloReceived = new Promise((resolve, reject) => {
      this.settleHello = (error) => {
        // settled once: drop the resolvers, a long-lived link need not keep them
        this.settleHello = settled;
        if (error) reject(error);
        else resolve();
      };
    });
    this.helloReceived.catch(() => undefined);
    channel.onFrame = (frame) => this.receive(frame);
    channel.onClose = (error) => this.teardown(error ?? new FedError('closed', `link to ${this.remoteNode || channel.peer} closed`));
  }

  /** Sends our hello and resolves once the peer's hello arrived and was accepted. */
  async start(): Promise<this> {
    if (!this.opts.answerHello) this.sendHello();
    const timeoutMs = this.opts.helloTimeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new FedError('timeout', `no hello from ${this.channel.peer} within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([this.helloReceived, timeout]);
    } catch (e) {
      this.close(errorMessage(e));
      throw e;
    } finally {
      clearTimeout(timer);
    }
    return this;
  }

  private sendHello(): void {
    this.enqueue({
      kind: 'hello',
      hello: { node: this.opts.node, actors: this.opts.actors(), protocolVersion: PROTOCOL_VERSION, token: this.opts.token ?? '' },
    });
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  send(envelope: Envelope): void {
    if (this.closed) throw this.closeError ?? new FedError('closed', 'link closed');
    // An envelope the wire cannot carry is refused here, to its sender, rather than failing the
    // link later for everyone on it.
    validateEnvelope(envelope);
    validatedHere.add(envelope);
    this.enqueue({ kind: 'envelope', envelope });
  }

  announce(added: string[], removed: string[]): void {
    if (!this.closed) this.enqueue({ kind: 'routeUpdate', routeUpdate: { added, removed } });
  }

  /**
   * Pulls a blob the peer holds; resolves only with bytes whose sha256 equals `hash`. `maxBytes`
   * bounds what the peer may announce (a combiner knows an update's exact encoded size), so a peer
   * cannot make this node allocate more than it expects. `into` lets a caller that reuses its memory
   * receive into a buffer of its own: it is asked once, with the announced size, and may return a
   * buffer of exactly that many bytes (or undefined for a new one). Reused memory skips the page
   * faults of a fresh allocation; a SharedArrayBuffer-backed one is also hashed off-thread. If the
   * fetch fails, what that buffer holds is unspecified (with `resumable`, a dropped link hands it back
   * in a PartialBlob that `resume` continues).
   */
  fetchBlob(hash: string, opts: FetchBlobOptions = {}): Promise<Uint8Array> {
    const from = opts.resume;
    if (from?.isSpent) return Promise.reject(new FedError('config', `this partial blob ${from.hash.slice(0, 12)} was resumed or discarded already`));
    // a partial blob this call cannot take stays with the caller, who is told so with the refusal
    const refuse = (e: FedError): Promise<never> => {
      if (from) partials.set(e, from);
      return Promise.reject(e);
    };
    if (this.closed) {
      const e = this.closeError ?? new FedError('closed', 'link closed');
      return from ? refuse(new FedError('closed', e.message)) : Promise.reject(e);
    }
    if (from && (from.hash !== hash || from.received <= 0 || from.received >= from.total)) {
      return refuse(new FedError('config', `cannot resume blob ${hash.slice(0, 12)} from a partial ${from.hash.slice(0, 12)} at ${from.received}/${from.total}`));
    }
    if (opts.signal?.aborted) return refuse(new FedError('cancelled', `blob ${hash.slice(0, 12)}: fetch cancelled`));
    from?.take();
    const streamId = this.nextStream++;
    const signal = opts.signal;
    return new Promise((resolveFetch, rejectFetch) => {
      const cancel = (): void => {
        const s = this.incoming.get(streamId);
        if (s) this.abandonIncoming(streamId, s, new FedError('cancelled', `blob ${hash.slice(0, 12)}: fetch cancelled after ${s.received} bytes`), true);
      };
      signal?.addEventListener('abort', cancel, { once: true });
      const settled = (): void => signal?.removeEventListener('abort', cancel);
      const resolve = (bytes: Uint8Array): void => {
        settled();
        resolveFetch(bytes);
      };
      const reject = (e: Error): void => {
        settled();
        rejectFetch(e);
      };
      this.incoming.set(streamId, {
        hash,
        maxBytes: Math.min(opts.maxBytes ?? Infinity, this.maxBlobBytes),
        into: opts.into,
        resumable: opts.resumable === true,
        buffer: from?.buffer,
        digest: from?.digest,
        offThread: from?.offThread,
        received: from?.received ?? 0,
        sinceCredit: 0,
        resolve,
        reject,
      });
      this.enqueue({ kind: 'blobRequest', blobRequest: { streamId, hash, window: this.window, offset: from?.received ?? 0 } });
    });
  }

  close(reason = 'closed locally'): void {
    if (this.closed) return;
    this.channel.close(reason);
    this.teardown(new FedError('closed', reason));
  }

  private teardown(error: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.closeError = error;
    this.settleHello(error);
    for (const s of this.incoming.values()) {
      const e = new FedError('closed', `blob ${s.hash.slice(0, 12)} not received: ${error.message}`);
      if (s.resumable && s.buffer && s.received > 0 && s.received < s.buffer.byteLength) {
        partials.set(e, new PartialBlob(s.hash, s.buffer, s.received, s.digest, s.offThread));
      } else {
        s.offThread?.worker.drop(s.offThread.job);
      }
      s.reject(e);
    }
    this.incoming.clear();
    this.outgoing.clear();
    this.control.length = 0;
    this.bulk.length = 0;
    this.opts.onClose?.(this, error);
  }

  private enqueue(frame: Frame): void {
    (isControl(frame) ? this.control : this.bulk).push(frame);
    if (!this.pumping) this.pump();
  }

  /**
   * Sends queued frames, control before bulk, one at a time: while the channel takes frames at once
   * (it returns SENT) in this turn, otherwise waiting for each send to resolve.
   */
  private pump(): void {
    this.pumping = true;
    try {
      while (!this.closed) {
        const frame = this.control.shift() ?? this.bulk.shift();
        if (!frame) break;
        this.stats.framesOut++;
        if (frame.kind === 'blobChunk') this.stats.bytesOut += frame.blobChunk.data.byteLength;
        const sent = this.channel.send(frame);
        if (sent !== SENT) {
          void this.resumeAfter(sent, frame);
          return; // still pumping: resumeAfter carries on
        }
        this.sent(frame);
      }
    } catch (e) {
      this.fail(e);
    }
    this.pumping = false;
  }

  private async resumeAfter(sending: Promise<void>, frame: Frame): Promise<void> {
    try {
      await sending;
      this.sent(frame);
    } catch (e) {
      this.pumping = false;
      this.fail(e);
      return;
    }
    this.pump();
  }

  /** A send that failed ends the link on both sides: never half-open, with the peer still sending. */
  private fail(e: unknown): void {
    const error = e instanceof Error ? e : new Error(String(e));
    this.channel.close(error.message);
    this.teardown(error);
  }

  private sent(frame: Frame): void {
    if (frame.kind === 'blobChunk' && !frame.blobChunk.last) this.refill(frame.blobChunk.streamId);
  }

  private reject(error: FedError): void {
    this.stats.rejected++;
    this.opts.onReject?.(this, error);
  }

  private receive(frame: Frame): void {
    try {
      this.dispatch(frame);
    } catch (e) {
      // Whatever a peer sends, it must not take this process down: a frame that still throws is a
      // protocol violation that ends the link.
      this.failProtocol(`frame ${frame.kind} could not be handled: ${errorMessage(e)}`);
    }
  }

  private dispatch(frame: Frame): void {
    if (this.closed) return;
    this.stats.framesIn++;
    if (!this.remoteNode && frame.kind !== 'hello') {
      this.failProtocol(`expected hello first, got ${frame.kind}`);
      return;
    }
    switch (frame.kind) {
      case 'hello':
        return this.onHello(frame.hello);
      case 'envelope':
        return this.onEnvelope(frame.envelope);
      case 'routeUpdate':
        for (const a of frame.routeUpdate.added) {
          if (this.permitted(a)) this.remoteActors.add(a);
          else this.reject(new FedError('impersonation', `${this.identity!.role} ${this.identity!.subject} tried to announce ${a}`));
        }
        for (const a of frame.routeUpdate.removed) this.remoteActors.delete(a);
        this.opts.onRoutes?.(this, frame.routeUpdate.added.filter((a) => this.remoteActors.has(a)), frame.routeUpdate.removed);
        return;
      case 'blobRequest':
        return this.onBlobRequest(frame.blobRequest);
      case 'blobCredit': {
        const out = this.outgoing.get(frame.blobCredit.streamId);
        if (out) {
          out.credit += frame.blobCredit.chunks;
          this.refill(frame.blobCredit.streamId);
        }
        return;
      }
      case 'blobCancel':
        this.outgoing.delete(frame.blobCancel.streamId);
        return;
      case 'blobChunk':
        return this.onBlobChunk(frame.blobChunk);
    }
  }

  private failProtocol(message: string): void {
    const error = new FedError('malformed', `protocol violation from ${this.remoteNode || this.channel.peer}: ${message}`);
    this.reject(error);
    this.channel.close(error.message);
    this.teardown(error);
  }

  private onHello(hello: LinkHello): void {
    if (this.remoteNode) return this.failProtocol('second hello');
    if (hello.protocolVersion !== PROTOCOL_VERSION) {
      return this.failProtocol(`protocol version ${hello.protocolVersion}, expected ${PROTOCOL_VERSION}`);
    }
    try {
      this.identity = this.opts.authenticate?.(hello, this.channel) ?? this.channel.identity;
    } catch (e) {
      const error = e instanceof FedError ? e : new FedError('unauthenticated', errorMessage(e));
      this.reject(error);
      this.channel.close(error.message);
      this.teardown(error);
      return;
    }
    const refused = hello.actors.filter((a) => !this.permitted(a));
    if (refused.length) {
      const error = new FedError('forbidden', `${this.identity!.role} ${this.identity!.subject} may not host ${refused.join(', ')}`);
      this.reject(error);
      this.channel.close(error.message);
      this.teardown(error);
      return;
    }
    this.remoteNode = hello.node || this.channel.peer;
    for (const a of hello.actors) this.remoteActors.add(a);
    if (this.opts.answerHello) this.sendHello();
    this.settleHello();
    this.opts.onRoutes?.(this, hello.actors, []);
  }

  /** Without authentication every address is allowed (development); with it, only the identity's own. */
  private permitted(address: string): boolean {
    return !this.identity || !this.opts.mayHost || this.opts.mayHost(this.identity, address);
  }

  private onEnvelope(envelope: Envelope): void {
    try {
      if (!validatedHere.has(envelope)) validateEnvelope(envelope);
    } catch (e) {
      return this.reject(e instanceof FedError ? e : new FedError('malformed', errorMessage(e)));
    }
    // A node may only speak for the actors it announced: that is what binds an actor's identity to
    // the link it is reached over.
    if (!this.remoteActors.has(envelope.from)) {
      return this.reject(new FedError('impersonation', `${this.remoteNode} sent as ${envelope.from}, which it does not host`));
    }
    this.opts.onEnvelope(envelope, this);
  }

  private onBlobRequest(req: BlobRequest): void {
    const found = this.opts.blobs.get(req.hash);
    if (found instanceof Promise) {
      found.then(
        (bytes) => this.serveBlob(req, bytes),
        (e) => this.serveBlob(req, undefined, errorMessage(e)),
      );
    } else this.serveBlob(req, found);
  }

  private serveBlob(req: BlobRequest, bytes: Uint8Array | undefined, problem?: string): void {
    if (this.closed) return;
    if (!bytes) {
      this.enqueue(this.chunk(req.streamId, 0, 0, new Uint8Array(0), true, problem ? `fetch-failed: ${problem}` : `not-found: no blob ${req.hash}`));
      return;
    }
    const offset = req.offset;
    if (!Number.isSafeInteger(offset) || offset < 0 || (offset > 0 && offset >= bytes.byteLength)) {
      this.enqueue(this.chunk(req.streamId, 0, 0, new Uint8Array(0), true, `fetch-failed: cannot start blob ${req.hash.slice(0, 12)} of ${bytes.byteLength} bytes at ${offset}`));
      return;
    }
    this.outgoing.set(req.streamId, { bytes, offset, credit: Math.max(1, req.window) });
    this.refill(req.streamId);
  }

  private chunk(streamId: number, offset: number, total: number, data: Uint8Array, last: boolean, error = ''): Frame {
    return { kind: 'blobChunk', blobChunk: { streamId, offset, total, data, last, error } };
  }

  /** Queues at most one chunk per call so the bulk queue never holds more than the credit allows. */
  private refill(streamId: number): void {
    const out = this.outgoing.get(streamId);
    if (!out || out.credit <= 0) return;
    if (this.bulk.some((f) => f.kind === 'blobChunk' && f.blobChunk.streamId === streamId)) return;
    const end = Math.min(out.bytes.byteLength, out.offset + this.chunkBytes);
    const last = end === out.bytes.byteLength;
    const frame = this.chunk(streamId, out.offset, out.bytes.byteLength, out.bytes.subarray(out.offset, end), last);
    out.offset = end;
    out.credit--;
    if (last) this.outgoing.delete(streamId);
    this.enqueue(frame);
  }

  private failIncoming(c: BlobChunk, s: Incoming, error: FedError): void {
    this.abandonIncoming(c.streamId, s, error, !c.last);
  }

  /** Ends a pull this side waits for, telling the holder to stop when it may still be sending. */
  private abandonIncoming(streamId: number, s: Incoming, error: FedError, holderSending: boolean): void {
    this.incoming.delete(streamId);
    s.offThread?.worker.drop(s.offThread.job);
    if (holderSending) this.enqueue({ kind: 'blobCancel', blobCancel: { streamId, reason: error.message } });
    s.reject(error);
  }

  /** A large blob is gathered in shared memory so a worker can hash it while the rest arrives. */
  private receiveBuffer(s: Incoming, c: BlobChunk): Uint8Array {
    const given = s.into?.(c.total);
    if (given && given.byteLength !== c.total) {
      throw new FedError('config', `fetchBlob's into() returned ${given.byteLength} bytes for a blob of ${c.total}`);
    }
    const worker = c.total >= OFF_THREAD_MIN_BYTES && !c.last ? hashWorker() : null;
    if (given) {
      if (worker && given.buffer instanceof SharedArrayBuffer) s.offThread = { worker, job: worker.begin(given.buffer) };
      return given;
    }
    if (!worker) return new Uint8Array(c.total);
    const buffer = new SharedArrayBuffer(c.total);
    s.offThread = { worker, job: worker.begin(buffer, { prefault: true }) };
    return new Uint8Array(buffer);
  }

  private verified(s: Incoming, bytes: Uint8Array, actual: string): void {
    if (actual !== s.hash) return s.reject(new FedError('hash-mismatch', `blob ${s.hash.slice(0, 12)} arrived as ${actual.slice(0, 12)}`));
    s.resolve(bytes);
  }

  private onBlobChunk(c: BlobChunk): void {
    const s = this.incoming.get(c.streamId);
    if (!s) return; // cancelled or unknown stream: late chunks are dropped
    if (c.error) return this.failIncoming(c, s, new FedError(c.error.startsWith('not-found') ? 'not-found' : 'fetch-failed', c.error));
    if (!Number.isSafeInteger(c.total) || c.total < 0 || !Number.isSafeInteger(c.offset) || c.offset < 0) {
      return this.failIncoming(c, s, new FedError('malformed', `blob chunk with offset ${c.offset} and total ${c.total}`));
    }
    if (!s.buffer) {
      if (c.total > s.maxBytes) {
        return this.failIncoming(c, s, new FedError('oversized', `blob of ${c.total} bytes exceeds the limit of ${s.maxBytes}`));
      }
      try {
        s.buffer = this.receiveBuffer(s, c);
      } catch (e) {
        return this.failIncoming(c, s, e instanceof FedError ? e : new FedError('internal', errorMessage(e)));
      }
    }
    if (c.offset !== s.received || c.total !== s.buffer.byteLength || c.offset + c.data.byteLength > c.total) {
      return this.failIncoming(c, s, new FedError('malformed', `blob chunk at ${c.offset} (+${c.data.byteLength}) does not continue ${s.received}/${s.buffer.byteLength}`));
    }
    copyInto(s.buffer, c.data, c.offset);
    const whole = c.last && c.offset === 0;
    if (s.offThread) s.offThread.worker.update(s.offThread.job, s.buffer.byteOffset + c.offset, c.data.byteLength);
    else if (!whole) (s.digest ??= createHash('sha256')).update(c.data);
    s.received += c.data.byteLength;
    this.stats.bytesIn += c.data.byteLength;
    if (c.last) {
      if (s.received !== s.buffer.byteLength) {
        return this.failIncoming(c, s, new FedError('malformed', `blob ended at ${s.received} of ${s.buffer.byteLength} bytes`));
      }
      this.incoming.delete(c.streamId);
      if (s.offThread) {
        const bytes = s.buffer;
        // a worker that died mid-blob costs a second pass here, never a wrong answer
        s.offThread.worker.digest(s.offThread.job).then(
          (actual) => this.verified(s, bytes, actual),
          () => this.verified(s, bytes, contentHash(bytes)),
        );
        return;
      }
      return this.verified(s, s.buffer, whole ? contentHash(s.buffer) : s.digest!.digest('hex'));
    }
    if (++s.sinceCredit >= Math.max(1, this.window >> 1)) {
      this.enqueue({ kind: 'blobCredit', blobCredit: { streamId: c.streamId, chunks: s.sinceCredit } });
      s.sinceCredit = 0;
    }
  }
}
