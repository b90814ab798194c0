// The TF.js task code a client runs: set the global weights, train locally with the round's
// settings, hand back the new weights. Each client owns its own LayersModel so clients sharing a
// process never interleave on one set of weights (training yields to the event loop per batch).
import type * as tf from '@tensorflow/tfjs';
import type { TaskCode } from '../actors/client.ts';
import type { Dataset } from '../data/mnist.ts';
import { deriveSeed } from '../data/random.ts';
import type { Params } from './params.ts';
import { evaluate, getParams, setParams, trainLocal } from './tf.ts';

export interface TfTaskOptions {
  build: () => tf.LayersModel;
  data: Dataset;
  seed: number;
  /** Local held-out data for validation tasks; the client's training data when absent. */
  validation?: Dataset;
}

export function tfTask(opts: TfTaskOptions): TaskCode {
  let model: tf.LayersModel | undefined;
  const instance = (): tf.LayersModel => (model ??= opts.build());
  return {
    numExamples: opts.data.n,
    async train(global: Params, { config, round, signal }) {
      const m = instance();
      setParams(m, global);
      const r = await trainLocal(m, opts.data, {
        epochs: Math.max(1, config.localEpochs),
        batchSize: config.batchSize > 0 ? config.batchSize : opts.data.n,
        learningRate: config.learningRate > 0 ? config.learningRate : 0.1,
        proximalMu: config.proximalMu,
        base: global.data,
        seed: deriveSeed(opts.seed, round),
        signal,
      });
      return { params: getParams(m), numExamples: r.numExamples, metrics: { loss: r.loss, accuracy: r.accuracy } };
    },
    async validate(global: Params) {
      const m = instance();
      setParams(m, global);
      const r = evaluate(m, opts.validation ?? opts.data);
      return { numExamples: r.numExamples, metrics: { accuracy: r.accuracy, loss: r.loss } };
    },
  };
}

/** Server-side evaluation on a held-out set, for the reducer's `evaluate` hook. */
export function tfEvaluator(build: () => tf.LayersModel, test: Dataset): (params: Params) => Promise<Record<string, number>> {
  let model: tf.LayersModel | undefined;
  return async (params) => {
    model ??= build();
    setParams(model, params);
    const r = evaluate(model, test);
    return { accuracy: r.accuracy, loss: r.loss };
  };
}
