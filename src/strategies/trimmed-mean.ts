// Coordinate-wise trimmed mean (Yin et al. 2018): for each parameter, drop the floor(beta * n) smallest
// and the floor(beta * n) largest values across the n updates and average the rest. beta is the fraction
// trimmed at EACH end, in [0, 0.5); the trim count matches scipy.stats.trim_mean(x, proportiontocut=beta),
// which Flower's FedTrimmedAvg also uses. beta = 0 is the plain (unweighted) mean.
//
// Unweighted, like the median: a weight is a client's claim, and trimming by value is only robust if a
// single client cannot outweigh the rest. Weights are summed into totalWeight for the reducer.
// Holds every update (not streaming): memory count x size x 4 bytes, bounded by ctx.expected.
import { FedError } from '../errors.ts';
import type { Accumulator, AggregationContext, AggregationStrategy } from './types.ts';
import { BufferedAccumulator } from './buffered.ts';
import { columnwise } from './kernels/select.ts';
import { nothingAdded } from './validate.ts';

export interface TrimmedMeanOptions {
  /** Fraction trimmed at each end, 0 <= beta < 0.5. */
  beta: number;
}

export function checkBeta(beta: number): void {
  if (!(beta >= 0 && beta < 0.5)) throw new FedError('config', `trimmedmean: beta must be in [0, 0.5), got ${beta}`);
}

/** Values trimmed at each end for n updates. */
export const trimCount = (n: number, beta: number): number => Math.floor(beta * n);

export class TrimmedMeanAccumulator extends BufferedAccumulator implements Accumulator {
  constructor(
    ctx: AggregationContext,
    readonly beta: number,
  ) {
    super(ctx, 'trimmedmean');
    checkBeta(beta);
  }

  finish(): Float32Array {
    const n = this.store.count;
    if (n === 0) throw nothingAdded('trimmedmean');
    const trim = trimCount(n, this.beta);
    return columnwise(this.store.rows, this.store.size, { kind: 'trimmed', trim });
  }
}

export function createTrimmedMean(options: TrimmedMeanOptions): AggregationStrategy {
  checkBeta(options.beta);
  return { name: 'trimmedmean', streaming: false, begin: (ctx) => new TrimmedMeanAccumulator(ctx, options.beta) };
}
