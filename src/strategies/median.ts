// Coordinate-wise median (Yin et al. 2018, "Byzantine-Robust Distributed Learning"): each parameter is
// the median of that parameter across updates; with an even count, the mean of the two middle values.
//
// Unweighted on purpose: weights (num_examples) are claimed by the clients, and a Byzantine client could
// claim a huge weight to drag a weighted median. The weights are still summed into totalWeight, so the
// reducer can weight this combiner's model by the examples it represents.
// Holds every update (not streaming): memory count x size x 4 bytes, bounded by ctx.expected.
import type { Accumulator, AggregationContext, AggregationStrategy } from './types.ts';
import { BufferedAccumulator } from './buffered.ts';
import { columnwise } from './kernels/select.ts';
import { nothingAdded } from './validate.ts';

export class MedianAccumulator extends BufferedAccumulator implements Accumulator {
  constructor(ctx: AggregationContext) {
    super(ctx, 'median');
  }

  finish(): Float32Array {
    if (this.store.count === 0) throw nothingAdded('median');
    return columnwise(this.store.rows, this.store.size, { kind: 'median' });
  }
}

export function createMedian(): AggregationStrategy {
  return { name: 'median', streaming: false, begin: (ctx) => new MedianAccumulator(ctx) };
}
