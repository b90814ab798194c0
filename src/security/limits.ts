// Per-link limits, enforced between a transport and the Link it carries, on any transport:
//
//  - request rate: the frames that make a node work (envelopes, blob requests, route updates) take a
//    token from a per-link bucket; without one the frame is dropped and refused as 'rate-limited'
//    (a refused blob request is answered with an error chunk, so the requester's fetch fails at once);
//    a link with more than `abuseThreshold` refusals within 10 s is closed as abusive;
//  - chunks in flight: a BlobRequest's credit window is clamped to `maxWindow`, later credit never
//    lifts a stream above it, and a peer may have at most `maxBlobStreams` pulls open at once, so what
//    a requester can make this node queue and send ahead is bounded whatever it asks for.
//    (A requester asking for more than twice maxWindow waits for chunks that never come: it gives
//    credit back only after half its own window. Honest nodes use the default window of 8.)
//
// Frame size is the transports' maxFrameBytes and model size the Link's maxBlobBytes; connection rate
// per remote IP is the listeners' connectionRate (src/transport/tls.ts).
import { FedError } from '../errors.ts';
import type { BlobChunk, Frame } from '../protocol/generated.ts';
import type { FrameChannel, Listener, Transport } from '../transport/types.ts';
import { TokenBucket, checkRate, type RateSpec } from './rate-limit.ts';

export interface LinkLimits {
  /** Requests per second one link may carry (envelopes, blob requests, route updates). */
  requestRate?: RateSpec;
  /** Refused frames within 10 s after which the link is closed as abusive (default 200). */
  abuseThreshold?: number;
  /** Largest credit window (chunks sent ahead) a requester gets (default 64); larger ones are clamped. */
  maxWindow?: number;
  /** Blob pulls a peer may have open at once on one link (default 16). */
  maxBlobStreams?: number;
}

export const defaultLinkLimits = {
  requestRate: { perSecond: 500, burst: 1000 },
  abuseThreshold: 200,
  maxWindow: 64,
  maxBlobStreams: 16,
} as const satisfies Required<LinkLimits>;

export interface GuardHooks {
  /** Told about each refused frame and each link closed as abusive. */
  onRefused?: (error: FedError, channel: FrameChannel) => void;
}

export interface GuardStats {
  refused: number;
  clamped: number;
  closedAbusive: boolean;
}

const ABUSE_WINDOW_MS = 10_000;
const ignore = (): void => undefined;

interface Abortable {
  abortWith(error: FedError): void;
}
const canAbort = (c: FrameChannel): c is FrameChannel & Abortable => typeof (c as Partial<Abortable>).abortWith === 'function';

/** A FrameChannel that enforces LinkLimits on what its peer sends. */
export class GuardedChannel implements FrameChannel {
  private frameHandler: (frame: Frame) => void = ignore;
  private closeHandler: (error?: Error) => void = ignore;
  private ended = false;
  private readonly bucket: TokenBucket;
  /** Streams this node serves: outstanding credit (chunks it may still send ahead) per stream id. */
  private readonly serving = new Map<number, number>();
  private recent: number[] = [];
  private readonly limits: Required<LinkLimits>;
  readonly stats: GuardStats = { refused: 0, clamped: 0, closedAbusive: false };

  constructor(
    readonly inner: FrameChannel,
    limits: LinkLimits = {},
    private readonly hooks: GuardHooks = {},
  ) {
    this.limits = { ...defaultLinkLimits, ...limits };
    this.bucket = new TokenBucket(this.limits.requestRate);
  }

  get peer(): string {
    return this.inner.peer;
  }

  get identity(): FrameChannel['identity'] {
    return this.inner.identity;
  }

  get onFrame(): (frame: Frame) => void {
    return this.frameHandler;
  }

  // The inner channel's handlers are set only when the Link sets ours: until then the inner channel
  // keeps early frames (a peer's hello) and its end, as it does for a Link attached late.
  set onFrame(handler: (frame: Frame) => void) {
    this.frameHandler = handler;
    this.inner.onFrame = (frame) => this.inbound(frame);
  }

  get onClose(): (error?: Error) => void {
    return this.closeHandler;
  }

  set onClose(handler: (error?: Error) => void) {
    this.closeHandler = handler;
    this.inner.onClose = (error) => {
      if (this.ended) return;
      this.ended = true;
      this.closeHandler(error);
    };
  }

  send(frame: Frame): Promise<void> {
    if (frame.kind === 'blobChunk') this.sentChunk(frame.blobChunk);
    return this.inner.send(frame);
  }

  close(reason?: string): void {
    this.inner.close(reason);
  }

  private sentChunk(c: BlobChunk): void {
    const credit = this.serving.get(c.streamId);
    if (credit === undefined) return;
    if (c.last) this.serving.delete(c.streamId);
    else this.serving.set(c.streamId, credit - 1);
  }

  private inbound(frame: Frame): void {
    if (this.ended) return;
    switch (frame.kind) {
      case 'envelope':
      case 'routeUpdate':
        if (!this.bucket.take()) return this.refuse(this.rateError(frame.kind));
        break;
      case 'blobRequest': {
        const req = frame.blobRequest;
        if (!this.bucket.take()) return this.refuseBlob(req.streamId, this.rateError('blobRequest'));
        if (!this.serving.has(req.streamId) && this.serving.size >= this.limits.maxBlobStreams) {
          return this.refuseBlob(req.streamId, new FedError('rate-limited', `${this.peer} has ${this.serving.size} blob pulls open; at most ${this.limits.maxBlobStreams} per link`));
        }
        const window = Math.min(Math.max(1, req.window), this.limits.maxWindow);
        if (window !== req.window) this.stats.clamped++;
        this.serving.set(req.streamId, window);
        if (window !== req.window) frame = { kind: 'blobRequest', blobRequest: { ...req, window } };
        break;
      }
      case 'blobCredit': {
        const credit = this.serving.get(frame.blobCredit.streamId);
        if (credit === undefined) break; // not a stream we serve: the Link ignores it
        const chunks = Math.max(0, Math.min(frame.blobCredit.chunks, this.limits.maxWindow - credit));
        if (chunks !== frame.blobCredit.chunks) this.stats.clamped++;
        if (chunks === 0) return;
        this.serving.set(frame.blobCredit.streamId, credit + chunks);
        if (chunks !== frame.blobCredit.chunks) frame = { kind: 'blobCredit', blobCredit: { ...frame.blobCredit, chunks } };
        break;
      }
      case 'blobCancel':
        this.serving.delete(frame.blobCancel.streamId);
        break;
      default:
        break;
    }
    this.frameHandler(frame);
  }

  private rateError(kind: string): FedError {
    const r = this.limits.requestRate;
    return new FedError('rate-limited', `${this.peer} exceeds ${r.perSecond} requests/s (burst ${this.bucket.burst}); ${kind} dropped`);
  }

  /** Answers a refused pull with an error chunk, so the requester's fetch fails instead of waiting. */
  private refuseBlob(streamId: number, error: FedError): void {
    this.inner
      .send({ kind: 'blobChunk', blobChunk: { streamId, offset: 0, total: 0, data: new Uint8Array(0), last: true, error: error.message } })
      .catch(ignore);
    this.refuse(error);
  }

  private refuse(error: FedError): void {
    this.stats.refused++;
    this.hooks.onRefused?.(error, this);
    const now = Date.now();
    this.recent.push(now);
    if (this.recent.length > this.limits.abuseThreshold) {
      this.recent = this.recent.filter((t) => now - t < ABUSE_WINDOW_MS);
      if (this.recent.length > this.limits.abuseThreshold) this.closeAbusive();
    }
  }

  private closeAbusive(): void {
    if (this.ended) return;
    this.ended = true;
    this.stats.closedAbusive = true;
    const error = new FedError('rate-limited', `link with ${this.peer} closed: more than ${this.limits.abuseThreshold} refused frames within ${ABUSE_WINDOW_MS / 1000} s`);
    this.hooks.onRefused?.(error, this);
    if (canAbort(this.inner)) this.inner.abortWith(error);
    else this.inner.close(error.message);
    this.closeHandler(error);
  }
}

export function checkLinkLimits(limits: LinkLimits): void {
  if (limits.requestRate) checkRate(limits.requestRate, 'request rate');
  for (const [k, v] of [['abuseThreshold', limits.abuseThreshold], ['maxWindow', limits.maxWindow], ['maxBlobStreams', limits.maxBlobStreams]] as const) {
    if (v !== undefined && !(Number.isInteger(v) && v >= 1)) throw new FedError('config', `${k} must be an integer >= 1, got ${v}`);
  }
}

/** `transport` with every channel (listened and dialled) guarded by `limits`. */
export function limitTransport<T extends Transport>(transport: T, limits: LinkLimits = {}, hooks: GuardHooks = {}): Transport {
  checkLinkLimits(limits);
  return {
    kind: transport.kind,
    listen: (endpoint: string, accept: (channel: FrameChannel) => void): Promise<Listener> =>
      transport.listen(endpoint, (channel) => accept(new GuardedChannel(channel, limits, hooks))),
    dial: async (endpoint: string): Promise<FrameChannel> => new GuardedChannel(await transport.dial(endpoint), limits, hooks),
  };
}
