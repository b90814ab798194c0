// Public entry point of the strategies package. Combiner and reducer code should only need:
//   const plan = createPlan('trimmedmean:beta=0.1+fedadam:lr=0.01');   // from --strategy
//   combiner: const acc = plan.combiner.begin({ size, base, expected, stageSlots: 1 });
//             acc.add(update, numExamples)          // or, zero-copy: decode into acc.stage?.() and add that
//             acc.finish(), acc.totalWeight          // -> the combiner model and its weight for the reducer
//   reducer:  const acc = plan.reducer.begin({ size }); acc.add(combinerModel, combinerTotalWeight);
//             const { params, state } = plan.server.step(previousGlobal, acc.finish(), persistedState);
//   clients:  plan.clientSettings (FedProx's proximalMu)
// base (the round's global model) is required by dpfedavg; expected bounds buffered strategies' memory.
export type { Accumulator, AggregationContext, AggregationStrategy, ServerOptimizer } from './types.ts';
export {
  createPlan,
  createServerOptimizer,
  createStrategy,
  describeStrategies,
  formatStrategySpec,
  parseStrategySpec,
  serverOptimizerCatalog,
  serverOptimizerNames,
  serverOptimizerOptions,
  specNames,
  strategyCatalog,
  strategyNames,
  strategyOptions,
  type AggregationPlan,
  type FedProxStrategy,
  type ServerOptimizerName,
  type ServerOptimizerOptions,
  type SpecName,
  type StrategyName,
  type StrategyOptions,
  type StrategySpec,
} from './registry.ts';
export { FedAvgAccumulator, createFedAvg, fedAvg, recycleAccumulator, weightedMean, type FedAvgOptions } from './fedavg.ts';
export { MedianAccumulator, createMedian } from './median.ts';
export { TrimmedMeanAccumulator, createTrimmedMean, trimCount, type TrimmedMeanOptions } from './trimmed-mean.ts';
export { KrumAccumulator, createKrum, createMultiKrum, krumSelect, type KrumOptions, type KrumResult } from './krum.ts';
export { DpFedAvgAccumulator, clipToNorm, createDpFedAvg, l2Norm, type DpFedAvgOptions, type DpFedAvgStrategy } from './dp.ts';
export {
  createFedAvgM,
  createFedAvgServer,
  createFedOpt,
  fedAvgMDefaults,
  fedOptDefaults,
  type FedAvgMOptions,
  type FedAvgMState,
  type FedAvgServerState,
  type FedOptName,
  type FedOptOptions,
  type FedOptState,
  type ServerOptimizerState,
} from './server-optimizers.ts';
export { DEFAULT_MAX_UPDATES } from './buffered.ts';
export { tryAdd } from './validate.ts';
export { finishInto, receiveSlot, type ReceiveSlot } from './in-place.ts';
export { createWeightedSum, wasmAvailable, type KernelKind, type WeightedSum } from './kernels/weighted-sum.ts';
