// TF.js for the commands that need it (reducer evaluation, client training, seeding), loaded only
// when used: a combiner process never pays for TF.js and its WebAssembly backend.
//
// Data and models are pure functions of the seed, exactly as in sandbox/run.ts, so the same seed
// gives the same split per client index and the same initial model in one process or many.
import type { TaskCode } from '../actors/client.ts';
import type { Params } from '../model/params.ts';

export const modelKinds = ['mlp', 'cnn'] as const;
export type ModelKind = (typeof modelKinds)[number];

/** The sandbox's MNIST split: 8,000 training digits, 2,000 held out. */
export const MNIST_TRAIN = 8000;
export const MNIST_TEST = 2000;

async function tf() {
  const m = await import('../model/tf.ts');
  await m.initBackend();
  return m;
}

export async function modelBuilder(kind: ModelKind, seed: number) {
  const m = await tf();
  return () => (kind === 'cnn' ? m.buildCnn({ seed }) : m.buildMlp({ seed }));
}

/** The initial global model for a seed (what `fedstate seed --model` uploads). */
export async function initialParams(kind: ModelKind, seed: number): Promise<Params> {
  const m = await tf();
  const model = (await modelBuilder(kind, seed))();
  const params = m.getParams(model);
  model.dispose();
  return params;
}

/** Server-side evaluation on the held-out digits of the seed's split. */
export async function mnistEvaluator(kind: ModelKind, seed: number, testSize = MNIST_TEST): Promise<(p: Params) => Promise<Record<string, number>>> {
  const build = await modelBuilder(kind, seed);
  const { loadMnist } = await import('../data/mnist.ts');
  const { tfEvaluator } = await import('../model/tf-task.ts');
  // The held-out set is the tail of the seeded permutation, the same whatever the training size.
  const { test } = loadMnist({ train: 0, test: testSize, seed });
  return tfEvaluator(build, test);
}

export interface ShardOptions {
  kind: ModelKind;
  seed: number;
  partition: string;
  clientsTotal: number;
  index: number;
  trainSize?: number;
  testSize?: number;
}

/** Client `index` of `clientsTotal`: its shard of the training digits and the TF.js task on it. */
export async function mnistTask(o: ShardOptions): Promise<TaskCode> {
  const build = await modelBuilder(o.kind, o.seed);
  const { loadMnist, subset } = await import('../data/mnist.ts');
  const { partition } = await import('../data/partition.ts');
  const { tfTask } = await import('../model/tf-task.ts');
  const { train } = loadMnist({ train: o.trainSize ?? MNIST_TRAIN, test: o.testSize ?? MNIST_TEST, seed: o.seed });
  const parts = partition(o.partition, train.y, o.clientsTotal, o.seed);
  const idx = parts[o.index];
  if (!idx) throw new Error(`no shard ${o.index} among ${parts.length}`);
  return tfTask({ build, data: subset(train, idx), seed: o.seed * 1000 + o.index });
}
