// A task whose federated result is known exactly: every client "trains" by moving the model all the
// way to its private target vector, so after one round FedAvg's global model is the examples-weighted
// mean of the targets. Lets federation tests check numbers without TF.js.
import type { TaskCode } from '../../src/actors/client.ts';
import type { Params } from '../../src/model/params.ts';

export interface ToyOptions {
  target: Float32Array;
  numExamples: number;
  /** Delay per training call, to make rounds overlap with timeouts/cancellation. */
  delayMs?: number;
  /** Corrupt the produced update (for rejection tests). */
  corrupt?: (p: Params) => Params;
  /** Keep "training" through a cancellation (a straggler that answers late anyway). */
  ignoreAbort?: boolean;
}

export function toyTask(opts: ToyOptions): TaskCode & { trained: number; aborted: number } {
  const code = {
    numExamples: opts.numExamples,
    trained: 0,
    aborted: 0,
    async train(model: Params, { signal }: { signal: AbortSignal }) {
      if (opts.delayMs) {
        await new Promise<void>((resolve, reject) => {
          const t = setTimeout(resolve, opts.delayMs);
          signal.addEventListener('abort', () => {
            code.aborted++;
            if (opts.ignoreAbort) return;
            clearTimeout(t);
            reject(new Error('aborted'));
          });
        });
      }
      code.trained++;
      const params: Params = { layout: model.layout, data: Float32Array.from(opts.target) };
      return { params: opts.corrupt ? opts.corrupt(params) : params, numExamples: opts.numExamples, metrics: { loss: opts.numExamples } };
    },
    async validate(model: Params) {
      let err = 0;
      for (let i = 0; i < model.data.length; i++) err += (model.data[i]! - opts.target[i]!) ** 2;
      return { numExamples: opts.numExamples, metrics: { mse: err / model.data.length } };
    },
  };
  return code;
}

export const toyLayout = (size: number) => [{ name: 'w', shape: [size] }];

export function weightedMean(targets: Float32Array[], weights: number[]): Float32Array {
  const total = weights.reduce((a, b) => a + b, 0);
  const out = new Float32Array(targets[0]!.length);
  for (let j = 0; j < out.length; j++) {
    let s = 0;
    for (let i = 0; i < targets.length; i++) s += targets[i]![j]! * weights[i]!;
    out[j] = s / total;
  }
  return out;
}
