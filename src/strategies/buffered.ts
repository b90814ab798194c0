// Storage for strategies that need every update before they can answer (median, trimmed mean, Krum).
// Memory is count x size x 4 bytes, so it is bounded: by ctx.expected when the caller knows how many
// updates a round can bring (a combiner knows its buffer size), else by DEFAULT_MAX_UPDATES.
import { FedError } from '../errors.ts';
import type { AggregationContext } from './types.ts';
import { checkSize, checkUpdate } from './validate.ts';

export const DEFAULT_MAX_UPDATES = 1024;

export class UpdateStore {
  readonly rows: Float32Array[] = [];
  readonly weights: number[] = [];
  readonly capacity: number;
  private total = 0;
  // buffers handed out by stage() and not yet added: add() adopts these instead of copying them
  private readonly staged = new WeakSet<Float32Array>();

  constructor(
    readonly size: number,
    ctx: AggregationContext,
    readonly label: string,
  ) {
    checkSize(size);
    const cap = ctx.expected ?? DEFAULT_MAX_UPDATES;
    if (!Number.isSafeInteger(cap) || cap < 1) throw new FedError('config', `${label}: expected must be a positive integer, got ${cap}`);
    this.capacity = cap;
  }

  get count(): number {
    return this.rows.length;
  }

  get totalWeight(): number {
    return this.total;
  }

  /** Bytes held by the stored updates. */
  get bytes(): number {
    return this.rows.length * this.size * 4;
  }

  /** A fresh buffer for the next update; add() keeps it as the stored row instead of copying. */
  stage(): Float32Array {
    const buf = new Float32Array(this.size);
    this.staged.add(buf);
    return buf;
  }

  add(update: Float32Array, weight: number): void {
    checkUpdate(update, weight, this.size);
    if (this.rows.length >= this.capacity) {
      throw new FedError('oversized', `${this.label} holds at most ${this.capacity} updates (ctx.expected)`, { capacity: this.capacity });
    }
    const total = this.total + weight;
    if (total === Infinity) throw new FedError('bad-weight', `total weight overflows with weight ${weight}`);
    // a copy unless it is a staged buffer: the caller may reuse its own buffer
    const adopt = this.staged.delete(update);
    this.rows.push(adopt ? update : update.slice());
    this.weights.push(weight);
    this.total = total;
  }
}

/**
 * The part every strategy that holds all updates shares (median, trimmed mean, Krum): counting,
 * weights, adding and staging go to one UpdateStore; a subclass only says how to finish.
 */
export abstract class BufferedAccumulator {
  protected readonly store: UpdateStore;

  constructor(ctx: AggregationContext, label: string) {
    this.store = new UpdateStore(ctx.size, ctx, label);
  }

  get count(): number {
    return this.store.count;
  }

  get totalWeight(): number {
    return this.store.totalWeight;
  }

  add(update: Float32Array, weight: number): void {
    this.store.add(update, weight);
  }

  /** A buffer to write the next update into; add() keeps it without copying. One buffer per update. */
  stage(): Float32Array {
    return this.store.stage();
  }
}
