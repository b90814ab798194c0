// Token buckets: `perSecond` tokens flow in, at most `burst` are kept; an action takes one token or
// is refused. Used per remote IP for new connections (grpc/ws listeners) and REST requests, and per
// link for the requests a peer sends (src/security/limits.ts).
import { FedError } from '../errors.ts';

export interface RateSpec {
  /** Sustained rate; 0 or Infinity switches the limit off. */
  perSecond: number;
  /** Largest burst (defaults to twice the rate, at least 1). */
  burst?: number;
}

export function checkRate(spec: RateSpec, what: string): void {
  if (!(spec.perSecond >= 0)) throw new FedError('config', `${what}: a rate must be >= 0, got ${spec.perSecond}`);
  if (spec.burst !== undefined && !(spec.burst >= 1)) throw new FedError('config', `${what}: a burst must be >= 1, got ${spec.burst}`);
}

const unlimited = (spec: RateSpec | undefined): boolean => !spec || spec.perSecond === 0 || spec.perSecond === Infinity;

export class TokenBucket {
  private tokens: number;
  private last: number;
  readonly burst: number;

  constructor(
    readonly spec: RateSpec,
    private readonly now: () => number = Date.now,
  ) {
    this.burst = spec.burst ?? Math.max(1, spec.perSecond * 2);
    this.tokens = this.burst;
    this.last = now();
  }

  /** Takes a token; false when none is left (the caller refuses the action). */
  take(): boolean {
    if (unlimited(this.spec)) return true;
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.spec.perSecond);
    this.last = t;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Seconds until the next token (for Retry-After). */
  get waitSeconds(): number {
    return unlimited(this.spec) || this.tokens >= 1 ? 0 : (1 - this.tokens) / this.spec.perSecond;
  }

  /** Whether the bucket is full again (an idle key can be forgotten). */
  get idle(): boolean {
    const t = this.now();
    return this.tokens + ((t - this.last) / 1000) * this.spec.perSecond >= this.burst;
  }
}

/**
 * One bucket per key (remote IP). Buckets that filled up again are dropped now and then, so a scan
 * from many addresses costs memory only while they keep sending; at most `maxKeys` are kept (the
 * oldest go first).
 */
export class KeyedLimiter {
  private readonly buckets = new Map<string, TokenBucket>();
  private sweepAt = 0;
  /** Refusals so far, for metrics and logs. */
  refused = 0;

  constructor(
    readonly spec: RateSpec,
    private readonly maxKeys = 100_000,
    private readonly now: () => number = Date.now,
  ) {}

  get enabled(): boolean {
    return !unlimited(this.spec);
  }

  take(key: string): boolean {
    if (!this.enabled) return true;
    const t = this.now();
    if (t >= this.sweepAt) {
      this.sweepAt = t + 10_000;
      for (const [k, b] of this.buckets) if (b.idle) this.buckets.delete(k);
    }
    let bucket = this.buckets.get(key);
    if (!bucket) {
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
      bucket = new TokenBucket(this.spec, this.now);
      this.buckets.set(key, bucket);
    }
    if (bucket.take()) return true;
    this.refused++;
    return false;
  }

  waitSeconds(key: string): number {
    return this.buckets.get(key)?.waitSeconds ?? 0;
  }
}
