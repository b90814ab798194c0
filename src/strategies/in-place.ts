// Model bytes into and out of an accumulator without copies of their own: an update or combiner model
// received straight into a FedAvg stage slot, and an aggregate written straight into its encoded model.
import { checkShape } from './validate.ts';
import type { Accumulator } from './types.ts';

/** A stage slot as the target of a blob fetch (fetchBlob's `into`), for a model of `expected` encoded bytes. */
export interface ReceiveSlot {
  /** The slot with room for the model header before it, when the blob has the expected size. */
  into: (total: number) => Uint8Array | undefined;
  /** Whether decoded parameters are the slot itself (received in place) rather than a copy elsewhere. */
  holds: (data: Float32Array) => boolean;
}

/**
 * Stage slot `slot` of `acc` as a receive target, or undefined when the strategy has no stage bytes
 * (only FedAvg has). Asking for the slot folds an update still waiting in it first.
 */
export function receiveSlot(acc: Accumulator, slot: number, expected: number): ReceiveSlot | undefined {
  if (!acc.stageBytes || !acc.stage) return undefined;
  const view = acc.stage(slot);
  const headroom = expected - view.byteLength;
  return {
    into: (total) => (total === expected ? acc.stageBytes!(slot, headroom) : undefined),
    holds: (data) => data.buffer === view.buffer && data.byteOffset === view.byteOffset,
  };
}

/**
 * The accumulator's aggregate written into `out`: straight through acc.finishInto where the strategy
 * has one (FedAvg), else finish() and one copy.
 */
export function finishInto(acc: Accumulator, out: Float32Array): Float32Array {
  if (acc.finishInto) return acc.finishInto(out);
  const result = acc.finish();
  checkShape(result, out.length);
  out.set(result);
  return out;
}
