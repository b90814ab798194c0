// Resolves the strategy names a session names to implementations from src/strategies.
import { FedError } from '../errors.ts';
import { fedAvg } from '../strategies/fedavg.ts';
import type { AggregationStrategy } from '../strategies/types.ts';

export function resolveCombinerStrategy(spec: string): AggregationStrategy {
  if (spec === '' || spec === 'fedavg') return fedAvg;
  throw new FedError('config', `unknown combiner strategy "${spec}"`);
}

export function resolveReducerStrategy(spec: string): AggregationStrategy {
  if (spec === '' || spec === 'fedavg') return fedAvg;
  throw new FedError('config', `unknown reducer strategy "${spec}"`);
}
