// Aggregation strategies: pure numeric code over flat Float32Array parameters. They know nothing of
// actors or transports. A strategy folds updates one at a time so a streaming strategy (FedAvg) keeps
// O(parameters) memory whatever the number of updates; strategies that need every update say so.

export interface Accumulator {
  /** Folds one update with its weight (e.g. number of examples). The array may be reused by the caller afterwards. */
  add(update: Float32Array, weight: number): void;
  readonly count: number;
  readonly totalWeight: number;
  /** The aggregate of everything added. Throws FedError('bad-weight') when nothing (or no weight) was added. */
  finish(): Float32Array;
  /**
   * Optional, FedAvg: as finish(), but writes the aggregate into `out` (`size` floats) and returns it,
   * so it can land straight in an encoded model (encodeModelFrom) without an array of its own. Use
   * through finishInto() in ./in-place.ts, which falls back to finish() and a copy.
   */
  finishInto?(out: Float32Array): Float32Array;
  /**
   * Optional zero-copy input: a buffer of `size` floats to write the next update into (e.g. decode the
   * model bytes straight into it) and then pass to add(), which skips its defensive copy.
   * FedAvg: slot `slot` (0 <= slot < ctx.stageSlots) inside the wasm kernel's memory, reusable as soon
   * as add() returns. Buffered strategies (median, trimmed mean, Krum): a fresh buffer per call that
   * add() keeps as the stored row, so do not write to it after add().
   */
  stage?(slot?: number): Float32Array;
  /**
   * Optional, FedAvg: stage slot `slot` as bytes reaching `prefix` bytes before its floats, to receive a
   * whole encoded model into (its data section then is the slot). Needs ctx.stageHeadroom >= prefix.
   */
  stageBytes?(slot: number, prefix: number): Uint8Array;
}

export interface AggregationContext {
  /** Number of parameters of every update. */
  size: number;
  /** The global model the round started from (strategies that work on deltas need it). */
  base?: Float32Array;
  /** Upper bound on the number of updates, for strategies that must hold all of them. */
  expected?: number;
  /** Zero-copy stage slots to reserve (Accumulator.stage); strategies without the notion ignore it. */
  stageSlots?: number;
  /** Bytes reserved before each stage slot (Accumulator.stageBytes). */
  stageHeadroom?: number;
}

export interface AggregationStrategy {
  readonly name: string;
  /** true when memory stays O(parameters) regardless of the number of updates. */
  readonly streaming: boolean;
  begin(ctx: AggregationContext): Accumulator;
}

/**
 * Server-side step at the reducer, applied to the reduced combiner models (FedAvg: take the aggregate).
 * `params` may be `aggregate` itself (FedAvg returns it as is); a step never writes to its inputs.
 */
export interface ServerOptimizer<State = unknown> {
  readonly name: string;
  step(global: Float32Array, aggregate: Float32Array, state: State | undefined): { params: Float32Array; state: State };
}
