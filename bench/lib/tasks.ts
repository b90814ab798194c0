// Task code for benchmarks: "training" that costs nothing, so what is measured is the runtime.
import type { TaskCode } from '../../src/actors/client.ts';
import type { Params } from '../../src/model/params.ts';

export interface NoopOptions {
  /**
   * Nudge the model it was given in place instead of copying it (for large models, so "training"
   * costs no copy at all). The client decodes the global model into memory of its own, so this
   * touches nobody else's bytes.
   */
  inPlace?: boolean;
}

/**
 * A no-op client: its update is the global model with the first parameter nudged, so the update's
 * content hash differs from the global model's and the combiner really pulls it.
 */
export function noopTask(numExamples = 10, opts: NoopOptions = {}): TaskCode {
  return {
    numExamples,
    train: async (model: Params) => {
      const data = opts.inPlace ? model.data : new Float32Array(model.data);
      if (data.length > 0) data[0] = data[0]! + 1;
      return { params: { layout: model.layout, data }, numExamples, metrics: {} };
    },
    validate: async () => ({ numExamples, metrics: {} }),
  };
}

export const flatLayout = (size: number): Params['layout'] => [{ name: 'w', shape: [size] }];
