// Coordinate-wise median (Yin et al. 2018, "Byzantine-Robust Distributed Learning"): each parameter is
// the median of that parameter across updates; with an even count, the mean of the two middle values.
//
// Unweighted on purpose: weights (num_examples) are claimed by the clients, and a Byzantine client could
// claim a huge weight to drag a weighted median. The weights are still summed into totalWeight, so the
// reducer can weight this combiner's model by the examples it represents.
// Holds every update (not streaming): memory count x size x 4 bytes, bounded by ctx.expected.
import type { Accumulator, AggregationContext, AggregationStrategy } from './types.ts';
import { UpdateStore } from './buffered.ts';
import { columnwise } from './kernels/select.ts';
import { nothingAdded } from './validate.ts';

export class MedianAccumulator implements Accumulator {
  private readonly store: UpdateStore;

  constructor(ctx: AggregationContext) {
    this.store = new UpdateStore(ctx.size, ctx, 'median');
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

  finish(): Float32Array {
    if (this.store.count === 0) throw nothingAdded('median');
    return columnwise(this.store.rows, this.store.size, { kind: 'median' });
  }
}

export function createMedian(): AggregationStrategy {
  return { name: 'median', streaming: false, begin: (ctx) => new MedianAccumulator(ctx) };
}
