// Streaming weighted FedAvg (McMahan et al. 2017): sum of weight * update in Float64, divided by the
// total weight once, in finish(). Memory is O(parameters) whatever the number of updates: 32 bytes per
// parameter with the wasm kernel (a double-buffered Float64 sum and four Float32 slots for updates
// waiting to be folded together, see kernels/weighted-sum.ts), 8 with the JS fallback. The same
// accumulator serves both levels: at a combiner the weights are the clients'
// num_examples; at the reducer the inputs are combiner models weighted by each combiner's totalWeight,
// which makes hierarchical FedAvg equal flat FedAvg over the same clients (to Float32 rounding of the
// combiner models).
import { FedError } from '../errors.ts';
import { createWeightedSum, type DeferredRefusal, type KernelKind, type WeightedSum } from './kernels/weighted-sum.ts';
import type { Accumulator, AggregationContext, AggregationStrategy } from './types.ts';
import { checkShape, checkSize, checkWeight, nothingAdded } from './validate.ts';

// Every partial sum is bounded by totalWeight * max|x| <= 2^800 * 2^128, far inside Float64's 2^1024, so
// the accumulator can never overflow to Infinity (1e308 clients' worth of weight would, coordinate-wise).
export const MAX_TOTAL_WEIGHT = 2 ** 800;

export interface FedAvgOptions {
  /** Force a kernel ('js' or 'wasm'); default: wasm when available. */
  kernel?: KernelKind;
  /**
   * Zero-copy stage slots to reserve (default 0): buffers inside the kernel's memory that an update can
   * be decoded into and then passed to add() without being copied. Each costs 4 bytes per parameter;
   * one per upload that can be in flight at the same time is enough.
   */
  stageSlots?: number;
  /**
   * Told about a staged update refused when its batch was folded (a NaN or an infinity; the sum,
   * count and total weight exclude it exactly). `tag` is the update's position among this
   * accumulator's add() calls since creation or reset(), from 0.
   */
  onRefused?: (refusal: DeferredRefusal) => void;
  /** Bytes before each stage slot that stageBytes() may cover (e.g. an encoded model's header); default 0. */
  stageHeadroom?: number;
}

export class FedAvgAccumulator implements Accumulator {
  private readonly sum: WeightedSum;
  private total = 0;
  private adds = 0;
  /**
   * Weights of the updates in the sum, by add() position: their number is the count, and a deferred
   * refusal recomputes the total from them.
   */
  private readonly weights = new Map<number, number>();
  /** Staged updates refused when their batch was folded (see FedAvgOptions.onRefused). */
  readonly refused: DeferredRefusal[] = [];

  /** Shape under which recycleAccumulator() files this accumulator; undefined: not reusable. */
  readonly recycleKey: string | undefined;

  constructor(
    readonly size: number,
    options: KernelKind | FedAvgOptions = {},
    private readonly label = 'fedavg',
  ) {
    checkSize(size);
    const o = typeof options === 'string' ? { kernel: options } : options;
    this.recycleKey = recycleKeyOf(size, o, label);
    this.sum = createWeightedSum(size, {
      kind: o.kernel,
      stageSlots: o.stageSlots,
      stageHeadroom: o.stageHeadroom,
      onRefused: (r) => {
        this.forget(r.tag);
        this.refused.push(r);
        o.onRefused?.(r);
      },
    });
  }

  /**
   * A buffer to write the next update into (e.g. decode model bytes straight into it); add() folds it
   * where it is instead of copying it, in a batch with the next updates (a NaN in it is then reported
   * through onRefused, not thrown by add). Needs `stageSlots` > slot at creation. Ask for the slot
   * again before rewriting it (a slot still waiting for its batch is folded first).
   */
  stage(slot = 0): Float32Array {
    return this.sum.stage(slot);
  }

  /**
   * Stage slot `slot` as bytes starting `prefix` bytes before its floats (prefix <= stageHeadroom):
   * receive a whole encoded model into it and its data section lands on the slot, so decoding it yields
   * the slot itself and add() folds it without a copy.
   */
  stageBytes(slot: number, prefix: number): Uint8Array {
    return this.sum.stageBytes(slot, prefix);
  }

  get count(): number {
    this.sum.flush();
    return this.weights.size;
  }

  get totalWeight(): number {
    this.sum.flush();
    return this.total;
  }

  /** Memory the kernel holds (bytes). */
  get memoryBytes(): number {
    return this.sum.memoryBytes;
  }

  /** Which kernel runs the sum ('wasm' or 'js'). */
  get kernel(): KernelKind {
    return this.sum.kind;
  }

  add(update: Float32Array, weight: number): void {
    checkWeight(weight);
    checkShape(update, this.size);
    const total = this.total + weight;
    if (!(total <= MAX_TOTAL_WEIGHT)) {
      throw new FedError('bad-weight', `total weight would exceed 2^800 with weight ${weight}`, { weight, total: this.total });
    }
    // counted first: the add may fold a batch whose refusals (onRefused) recount from these
    const tag = this.adds++;
    const before = { total: this.total, refused: this.refused.length };
    this.weights.set(tag, weight);
    this.total = total;
    try {
      // refuses a non-finite update before any of it reaches the sum (a staged one: when its batch is folded)
      this.sum.add(update, weight, tag);
    } catch (e) {
      // the add may have folded a batch and refused an earlier staged update before refusing this one
      if (this.refused.length === before.refused) {
        this.weights.delete(tag);
        this.total = before.total;
      } else this.forget(tag);
      throw e;
    }
  }

  /** Drops a refused update's weight; re-summed in add order, so the total is exactly what it would be had the update never been added. */
  private forget(tag: number): void {
    this.weights.delete(tag);
    this.total = 0;
    for (const w of this.weights.values()) this.total += w;
  }

  /**
   * Empties the accumulator for another round of the same size, keeping its memory: a fresh accumulator
   * pays page faults on first touch (~10 ms per 1M parameters here), a reset one does not.
   */
  reset(): void {
    this.sum.reset();
    this.total = 0;
    this.adds = 0;
    this.weights.clear();
    this.refused.length = 0;
  }

  /** The weighted mean so far. Does not consume the accumulator: more adds and finishes may follow. */
  finish(): Float32Array {
    return this.finishInto();
  }

  /** As finish(), written into `out` (`size` floats, e.g. an encoded model's data section) when given. */
  finishInto(out?: Float32Array): Float32Array {
    this.sum.flush();
    if (this.weights.size === 0) throw nothingAdded(this.label);
    return this.sum.scaled(1 / this.total, out);
  }
}

// Accumulators handed back after a round (recycleAccumulator), to be reset() and reused by the next
// begin() of the same shape: a new one maps its memory in afresh (page faults over 16+ bytes per
// parameter: measured ~40 ms per 10M parameters, per round, at each level), a reused one is mapped
// already. Bounded by bytes, oldest dropped first, so a finished session does not pin much memory.
const RECYCLE_MAX_BYTES = 2 ** 30;
const recycled: Array<{ key: string; acc: FedAvgAccumulator; bytes: number }> = [];

/** Accumulators of one key are interchangeable; none for one with a consumer's callback, or another strategy's label. */
function recycleKeyOf(size: number, o: FedAvgOptions, label = 'fedavg'): string | undefined {
  if (o.onRefused || label !== 'fedavg') return undefined;
  return `${size}|${o.kernel ?? 'auto'}|${o.stageSlots ?? 0}|${o.stageHeadroom ?? 0}`;
}

/**
 * Hands back an accumulator its owner is done with (it must not touch it again), for a later begin() of
 * the same shape to reuse. Anything but a plain FedAvg accumulator is left to the garbage collector.
 */
export function recycleAccumulator(acc: Accumulator): void {
  if (!(acc instanceof FedAvgAccumulator) || acc.recycleKey === undefined) return;
  if (recycled.some((r) => r.acc === acc)) return;
  const bytes = acc.memoryBytes;
  if (bytes > RECYCLE_MAX_BYTES) return;
  recycled.push({ key: acc.recycleKey, acc, bytes });
  let total = recycled.reduce((n, r) => n + r.bytes, 0);
  while (total > RECYCLE_MAX_BYTES) total -= recycled.shift()!.bytes;
}

export function createFedAvg(options: FedAvgOptions = {}): AggregationStrategy {
  return {
    name: 'fedavg',
    streaming: true,
    begin: (ctx: AggregationContext) => {
      const o: FedAvgOptions = {
        ...options,
        stageSlots: ctx.stageSlots ?? options.stageSlots,
        stageHeadroom: ctx.stageHeadroom ?? options.stageHeadroom,
      };
      const key = recycleKeyOf(ctx.size, o);
      const i = key === undefined ? -1 : recycled.findIndex((r) => r.key === key);
      if (i < 0) return new FedAvgAccumulator(ctx.size, o);
      const acc = recycled.splice(i, 1)[0]!.acc;
      acc.reset();
      return acc;
    },
  };
}

export const fedAvg: AggregationStrategy = createFedAvg();

/** Weighted mean of whole arrays in one call (tests, tools). */
export function weightedMean(updates: readonly Float32Array[], weights: readonly number[], kernel?: KernelKind): Float32Array {
  if (updates.length !== weights.length) throw new FedError('config', `${updates.length} updates but ${weights.length} weights`);
  const first = updates[0];
  if (!first) throw nothingAdded('fedavg');
  const acc = new FedAvgAccumulator(first.length, kernel);
  updates.forEach((u, i) => acc.add(u, weights[i]!));
  return acc.finish();
}
