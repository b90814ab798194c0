// TF.js side of a client: picks a backend, builds the reference models, maps a LayersModel to and
// from the framework's flat Params, and trains / evaluates on a Dataset.
//
// Backend order: tfjs-node (native, only if it happens to be installed; it cannot be built here),
// then WebAssembly (SIMD; the default), then the pure-JS cpu backend. FEDSTATE_TF_BACKEND=wasm|cpu|
// tensorflow forces one, e.g. to compare backends.
import * as tf from '@tensorflow/tfjs';
import { FedError } from '../errors.ts';
import { Rng, deriveSeed } from '../data/random.ts';
import type { Dataset } from '../data/mnist.ts';
import { layoutSize, sameLayout, tensorSize, type Layout, type Params } from './params.ts';

// ------------------------------------------------------------------------------------ backend

let backendReady: Promise<string> | undefined;

/** Selects and initialises the best available backend once per process; returns its name. */
export function initBackend(): Promise<string> {
  backendReady ??= chooseBackend();
  return backendReady;
}

async function chooseBackend(): Promise<string> {
  const forced = typeof process !== 'undefined' ? process.env.FEDSTATE_TF_BACKEND : undefined;
  if ((forced === undefined || forced === 'tensorflow') && (await tryNative())) return tf.getBackend();
  if ((forced === undefined || forced === 'wasm') && (await tryWasm())) return 'wasm';
  if (!(await tf.setBackend('cpu'))) throw new FedError('internal', 'no TF.js backend could be initialised');
  await tf.ready();
  return 'cpu';
}

async function tryNative(): Promise<boolean> {
  // A variable specifier keeps bundlers and tsc from insisting that the optional package exists.
  const name = '@tensorflow/tfjs-node';
  try {
    await import(name);
    // tfjs-node registers into its own copy of tfjs-core unless npm deduplicated it with ours.
    return (await tf.setBackend('tensorflow')) && tf.getBackend() === 'tensorflow';
  } catch {
    return false;
  }
}

async function tryWasm(): Promise<boolean> {
  try {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    const dir = await nodeWasmDir();
    if (dir !== undefined) wasm.setWasmPaths(dir);
    if (!(await tf.setBackend('wasm'))) return false;
    await tf.ready();
    installWasmKernels();
    return true;
  } catch {
    return false;
  }
}

/** In Node the .wasm binaries are read from the package's dist folder; browsers use their default URL. */
async function nodeWasmDir(): Promise<string | undefined> {
  if (typeof process === 'undefined' || !process.versions?.node) return undefined;
  const { createRequire } = await import('node:module');
  const { dirname, join, sep } = await import('node:path');
  return join(dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + sep;
}

// ------------------------------------------------------------------------------------ wasm kernels
//
// tfjs-backend-wasm 4.x is fast on plain matrix products and forward convolutions (XNNPACK) but
// slow or missing on the shapes backpropagation needs. The replacements below re-express those
// operations through the fast kernels; tf.test.ts checks each against the cpu backend.

type KernelRun = (kernel: string, inputs: Record<string, tf.TensorInfo>, attrs: Record<string, unknown>) => tf.TensorInfo;

/**
 * Runs `body` with a helper that calls wasm kernels directly. Kernel-internal temporaries are not
 * engine tensors, so everything created here except the returned result is freed on the backend.
 */
function withKernels(backend: unknown, body: (run: KernelRun) => tf.TensorInfo): tf.TensorInfo {
  const temporaries: tf.TensorInfo[] = [];
  const run: KernelRun = (kernel, inputs, attrs) => {
    const config = tf.getKernel(kernel, 'wasm');
    if (!config) throw new FedError('internal', `wasm kernel ${kernel} is missing`);
    const out = config.kernelFunc({ inputs, backend: backend as tf.KernelBackend, attrs: attrs as tf.NamedAttrMap }) as tf.TensorInfo;
    temporaries.push(out);
    return out;
  };
  let result: tf.TensorInfo | undefined;
  try {
    result = body(run);
    return result;
  } finally {
    const owner = backend as { disposeData(id: object): void };
    for (const t of temporaries) if (t.dataId !== result?.dataId) owner.disposeData(t.dataId);
  }
}

function installWasmKernels(): void {
  const matMul = tf.getKernel('BatchMatMul', 'wasm');
  if (!matMul || (matMul as { fedstate?: boolean }).fedstate) return;
  const inputGrad = tf.getKernel('Conv2DBackpropInput', 'wasm');
  replaceWasmKernel('BatchMatMul', fastMatMul(matMul));
  replaceWasmKernel('Conv2DBackpropFilter', convFilterGrad);
  if (inputGrad) replaceWasmKernel('Conv2DBackpropInput', convInputGrad(inputGrad));
}

function replaceWasmKernel(kernelName: string, kernelFunc: tf.KernelFunc): void {
  const existing = tf.getKernel(kernelName, 'wasm');
  if (existing) tf.unregisterKernel(kernelName, 'wasm');
  // the original's setupFunc already ran when the backend started; the replacements need none
  tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc, fedstate: true } as tf.KernelConfig);
}

/**
 * BatchMatMul with a transposed operand (dW = x^T dy, dx = dy W^T) misses XNNPACK and runs a naive
 * loop, ~15x slower (32x784 by 32x200: 5 ms vs 0.3 ms). An explicit transpose first is ~4x faster
 * end to end and cuts MLP training time by about two thirds.
 */
function fastMatMul(original: tf.KernelConfig): tf.KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { a, b } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
    if (!transposeA && !transposeB) return original.kernelFunc({ inputs, backend, attrs });
    return withKernels(backend, (run) => {
      const swapLast = (t: tf.TensorInfo): tf.TensorInfo => {
        const r = t.shape.length;
        return run('Transpose', { x: t }, { perm: [...Array.from({ length: r - 2 }, (_, i) => i), r - 1, r - 2] });
      };
      const [a2, b2] = [transposeA ? swapLast(a) : a, transposeB ? swapLast(b) : b];
      return original.kernelFunc({ inputs: { a: a2, b: b2 }, backend, attrs: { ...attrs, transposeA: false, transposeB: false } }) as tf.TensorInfo;
    });
  };
}

interface ConvGradAttrs {
  strides: number | [number, number];
  pad: 'same' | 'valid' | number | number[][];
  dataFormat: string;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

/** The forward convolution's padding, or undefined when it is not a unit-stride NHWC convolution. */
function unitStridePadding(a: ConvGradAttrs, inShape: number[], filterShape: number[]) {
  const info = tf.backend_util.computeConv2DInfo(inShape as [number, number, number, number], filterShape as [number, number, number, number], a.strides, 1, a.pad as 'same', a.dimRoundingMode);
  if (a.dataFormat !== 'NHWC' || info.strideHeight !== 1 || info.strideWidth !== 1) return undefined;
  return { ...info.padInfo, filterHeight: info.filterHeight, filterWidth: info.filterWidth };
}

/**
 * The wasm backend has no Conv2DBackpropFilter at all. With unit stride the filter gradient is
 * itself a convolution: dW[i,j,c,o] = sum over b,y,x of xpad[b,y+i,x+j,c] * dy[b,y,x,o], i.e. x
 * with batch and channels swapped ([C,H,W,B]) convolved with dy as the filter ([OH,OW,B,O]).
 * Strided convolutions are refused loudly (nothing here uses them) rather than trained wrongly.
 */
const convFilterGrad: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
  const a = attrs as unknown as ConvGradAttrs & { filterShape: number[] };
  const pad = unitStridePadding(a, x.shape, a.filterShape);
  if (!pad) throw new FedError('internal', `wasm conv2d filter gradient supports only NHWC with stride 1 (got ${a.dataFormat}, strides ${String(a.strides)})`);
  return withKernels(backend, (run) => {
    const xT = run('Transpose', { x }, { perm: [3, 1, 2, 0] });
    const dyT = run('Transpose', { x: dy }, { perm: [1, 2, 0, 3] });
    const explicit = [[0, 0], [pad.top, pad.bottom], [pad.left, pad.right], [0, 0]];
    const g = run('Conv2D', { x: xT, filter: dyT }, { strides: [1, 1], pad: explicit, dilations: [1, 1], dataFormat: 'NHWC' });
    return run('Transpose', { x: g }, { perm: [1, 2, 0, 3] });
  });
};

/**
 * The wasm Conv2DBackpropInput is a naive loop. With unit stride the input gradient is a forward
 * convolution of dy with the filter rotated 180 degrees and its channel axes swapped, padded by
 * (filter size - 1 - forward padding) on each side. Other strides keep the original kernel.
 */
function convInputGrad(original: tf.KernelConfig): tf.KernelFunc {
  return (args) => {
    const { dy, filter } = args.inputs as { dy: tf.TensorInfo; filter: tf.TensorInfo };
    const a = args.attrs as unknown as ConvGradAttrs & { inputShape: number[] };
    const pad = unitStridePadding(a, a.inputShape, filter.shape);
    if (!pad) return original.kernelFunc(args);
    const { filterHeight: kh, filterWidth: kw } = pad;
    return withKernels(args.backend, (run) => {
      const flipped = run('Reverse', { x: filter }, { dims: [0, 1] });
      const swapped = run('Transpose', { x: flipped }, { perm: [0, 1, 3, 2] });
      const explicit = [[0, 0], [kh - 1 - pad.top, kh - 1 - pad.bottom], [kw - 1 - pad.left, kw - 1 - pad.right], [0, 0]];
      return run('Conv2D', { x: dy, filter: swapped }, { strides: [1, 1], pad: explicit, dilations: [1, 1], dataFormat: 'NHWC' });
    });
  };
}

// ------------------------------------------------------------------------------------ params

/** Layout names are the weights' unsuffixed names (e.g. "hidden1/kernel"); TF.js makes `name` unique per process by appending _1, _2... */
export function modelLayout(model: tf.LayersModel): Layout {
  return model.weights.map((w) => ({ name: w.originalName, shape: w.shape.map((d) => d ?? 0) }));
}

export function getParams(model: tf.LayersModel): Params {
  const layout = modelLayout(model);
  const data = new Float32Array(layoutSize(layout));
  let offset = 0;
  for (const w of model.weights) {
    // dataSync may hand out the backend's own array (cpu backend), so copy it, never keep it
    const values = w.read().dataSync();
    data.set(values, offset);
    offset += values.length;
  }
  return { layout, data };
}

export function setParams(model: tf.LayersModel, params: Params): void {
  const layout = modelLayout(model);
  if (!sameLayout(layout, params.layout)) {
    throw new FedError('wrong-shape', 'params layout does not match the model', { model: layout, params: params.layout });
  }
  const expected = layoutSize(layout);
  if (params.data.length !== expected) {
    throw new FedError('wrong-shape', `model holds ${expected} parameters, params have ${params.data.length}`);
  }
  let offset = 0;
  tf.tidy(() => {
    model.weights.forEach((w, i) => {
      const size = tensorSize(layout[i]!.shape);
      // slice, not subarray: the cpu backend would otherwise keep a view on the caller's array
      w.write(tf.tensor(params.data.slice(offset, offset + size), layout[i]!.shape, w.dtype));
      offset += size;
    });
  });
}

// ------------------------------------------------------------------------------------ models

export interface MlpOptions {
  hidden?: number;
  seed?: number;
  inputSize?: number;
  classes?: number;
}

const seeded = (seed: number, layer: string) => tf.initializers.glorotUniform({ seed: deriveSeed(seed, layer) });

/** McMahan et al.'s "2NN": 784-200-200-10, ReLU, softmax. Same seed, same initial weights. */
export function buildMlp({ hidden = 200, seed = 0, inputSize = 784, classes = 10 }: MlpOptions = {}): tf.Sequential {
  const dense = (name: string, units: number, activation: 'relu' | 'softmax', inputShape?: number[]) =>
    tf.layers.dense({ name, units, activation, kernelInitializer: seeded(seed, name), biasInitializer: 'zeros', ...(inputShape ? { inputShape } : {}) });
  return tf.sequential({
    name: 'mlp',
    layers: [dense('hidden1', hidden, 'relu', [inputSize]), dense('hidden2', hidden, 'relu'), dense('output', classes, 'softmax')],
  });
}

/**
 * McMahan et al.'s MNIST CNN: 5x5 conv 32 -> 2x2 max pool -> 5x5 conv 64 -> 2x2 max pool -> dense 512
 * ReLU -> softmax 10, 1,663,370 parameters as in the paper. Input 28x28x1 ("same" padding).
 */
export function buildCnn({ seed = 0, classes = 10 }: { seed?: number; classes?: number } = {}): tf.Sequential {
  const conv = (name: string, filters: number, inputShape?: number[]) =>
    tf.layers.conv2d({ name, filters, kernelSize: 5, padding: 'same', activation: 'relu', kernelInitializer: seeded(seed, name), ...(inputShape ? { inputShape } : {}) });
  return tf.sequential({
    name: 'cnn',
    layers: [
      conv('conv1', 32, [28, 28, 1]),
      tf.layers.maxPooling2d({ name: 'pool1', poolSize: 2 }),
      conv('conv2', 64),
      tf.layers.maxPooling2d({ name: 'pool2', poolSize: 2 }),
      tf.layers.flatten({ name: 'flatten' }),
      tf.layers.dense({ name: 'hidden', units: 512, activation: 'relu', kernelInitializer: seeded(seed, 'hidden') }),
      tf.layers.dense({ name: 'output', units: classes, activation: 'softmax', kernelInitializer: seeded(seed, 'output') }),
    ],
  });
}

// ------------------------------------------------------------------------------------ training

export interface TrainOptions {
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** Seeds the per-epoch shuffles. */
  seed: number;
  /** FedProx proximal coefficient; 0 or absent is plain FedAvg local training. */
  proximalMu?: number;
  /** FedProx anchor, in getParams order; defaults to the model's weights when training starts. */
  base?: Float32Array;
  signal?: AbortSignal;
}

export interface TrainResult {
  /** Examples per epoch, the weight FedAvg gives this update. */
  numExamples: number;
  /** Mean cross-entropy (without the proximal term) and accuracy over the last epoch, measured on each batch before its step. */
  loss: number;
  accuracy: number;
  ms: number;
}

interface Shapes {
  features: number;
  inputShape: number[];
  classes: number;
}

function shapesOf(model: tf.LayersModel, data: Dataset): Shapes {
  const inputShape = model.inputs[0]?.shape.slice(1);
  const classes = model.outputs[0]?.shape[1];
  if (!inputShape || inputShape.some((d) => d === null) || typeof classes !== 'number') {
    throw new FedError('config', 'model needs one input of fixed shape and one [batch, classes] output');
  }
  const dims = inputShape as number[];
  const features = tensorSize(dims);
  if (data.x.length !== data.n * features || data.y.length !== data.n) {
    throw new FedError('wrong-shape', `dataset of ${data.n} examples does not hold ${features} features and one label each`);
  }
  // one-hot encoding silently turns an out-of-range label into an all-zero target
  const bad = data.y.findIndex((label) => label >= classes);
  if (bad >= 0) throw new FedError('wrong-shape', `label ${data.y[bad]} of example ${bad} is outside the model's ${classes} classes`);
  return { features, inputShape: dims, classes };
}

/** Rows rowAt(0..count-1) of the dataset as a batch tensor pair; caller disposes (or runs in tidy). */
function gatherBatch(data: Dataset, s: Shapes, count: number, rowAt: (i: number) => number): { xs: tf.Tensor; ys: tf.Tensor1D } {
  const x = new Float32Array(count * s.features);
  const y = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const j = rowAt(i);
    x.set(data.x.subarray(j * s.features, (j + 1) * s.features), i * s.features);
    y[i] = data.y[j]!;
  }
  return { xs: tf.tensor(x, [count, ...s.inputShape]), ys: tf.tensor1d(y, 'int32') };
}

/** Cross-entropy summed over the batch, for softmax outputs (clipped like Keras so log(0) cannot occur). */
function crossEntropySum(probs: tf.Tensor, ys: tf.Tensor1D, classes: number): tf.Scalar {
  const logp = tf.log(tf.clipByValue(probs, 1e-7, 1));
  return tf.neg(tf.sum(tf.mul(tf.oneHot(ys, classes), logp)));
}

function correctCount(probs: tf.Tensor, ys: tf.Tensor1D): tf.Scalar {
  return tf.sum(tf.cast(tf.equal(tf.argMax(probs, 1), ys), 'float32'));
}

const yieldToEventLoop = (): Promise<void> =>
  new Promise((resolve) => (typeof setImmediate === 'function' ? setImmediate(resolve) : setTimeout(resolve, 0)));

function checkTrainOptions(o: TrainOptions): void {
  const positiveInt = (v: number) => Number.isInteger(v) && v > 0;
  if (!positiveInt(o.epochs)) throw new FedError('config', `epochs must be a positive integer, got ${o.epochs}`);
  if (!positiveInt(o.batchSize)) throw new FedError('config', `batchSize must be a positive integer, got ${o.batchSize}`);
  if (!(o.learningRate > 0) || !Number.isFinite(o.learningRate)) throw new FedError('config', `learningRate must be positive, got ${o.learningRate}`);
  const mu = o.proximalMu ?? 0;
  if (!(mu >= 0) || !Number.isFinite(mu)) throw new FedError('config', `proximalMu must be >= 0, got ${mu}`);
}

/**
 * Local training with plain minibatch SGD, as in McMahan et al. 2017 (FedAvg) and Li et al. 2020
 * (FedProx): their convergence results and hyperparameters assume it, and stateless SGD means no
 * optimizer state (momentum, Adam moments) silently resets or leaks between rounds.
 *
 * One hand-written loop serves both: FedAvg is FedProx with mu = 0, where the proximal term
 * mu/2 * ||w - base||^2 is simply not added. The loop yields to the event loop after each batch
 * and stops with FedError('cancelled') when `signal` is aborted; the model then holds partially
 * trained weights, which the caller should overwrite with setParams before reuse.
 */
export async function trainLocal(model: tf.LayersModel, data: Dataset, options: TrainOptions): Promise<TrainResult> {
  checkTrainOptions(options);
  const started = performance.now();
  const s = shapesOf(model, data);
  const { epochs, batchSize, learningRate, signal } = options;
  const mu = options.proximalMu ?? 0;
  if (data.n === 0) return { numExamples: 0, loss: 0, accuracy: 0, ms: 0 };

  const trainable = model.trainableWeights;
  const variables = trainable.map((w) => w.read() as tf.Variable);
  const anchors = mu > 0 ? proximalAnchors(model, options.base) : [];
  const optimizer = tf.train.sgd(learningRate);
  const rng = new Rng(options.seed);
  let lossSum = 0;
  let correct = 0;
  try {
    for (let epoch = 0; epoch < epochs; epoch++) {
      const order = rng.permutation(data.n);
      lossSum = 0;
      correct = 0;
      for (let from = 0; from < data.n; from += batchSize) {
        if (signal?.aborted) throw new FedError('cancelled', `training cancelled in epoch ${epoch + 1} of ${epochs}`);
        const count = Math.min(batchSize, data.n - from);
        const stats = tf.tidy(() => {
          const { xs, ys } = gatherBatch(data, s, count, (i) => order[from + i]!);
          let batchStats: tf.Tensor | undefined;
          optimizer.minimize(
            () => {
              const probs = model.apply(xs, { training: true }) as tf.Tensor;
              const ceSum = crossEntropySum(probs, ys, s.classes);
              batchStats = tf.keep(tf.stack([ceSum, correctCount(probs, ys)]));
              const ce = tf.div(ceSum, count);
              if (anchors.length === 0) return ce as tf.Scalar;
              const distance = tf.addN(variables.map((v, i) => tf.sum(tf.squaredDifference(v, anchors[i]!))));
              return tf.add(ce, tf.mul(mu / 2, distance)) as tf.Scalar;
            },
            false,
            variables,
          );
          return batchStats!;
        });
        const [batchLoss, batchCorrect] = stats.dataSync();
        stats.dispose();
        lossSum += batchLoss!;
        correct += batchCorrect!;
        await yieldToEventLoop();
      }
    }
  } finally {
    optimizer.dispose();
    for (const a of anchors) a.dispose();
  }
  return { numExamples: data.n, loss: lossSum / data.n, accuracy: correct / data.n, ms: performance.now() - started };
}

/** One constant tensor per trainable weight, holding its FedProx anchor. Caller disposes. */
function proximalAnchors(model: tf.LayersModel, base: Float32Array | undefined): tf.Tensor[] {
  if (base === undefined) return model.trainableWeights.map((w) => tf.clone(w.read()));
  const layout = modelLayout(model);
  if (base.length !== layoutSize(layout)) {
    throw new FedError('wrong-shape', `proximal base has ${base.length} values, the model ${layoutSize(layout)}`);
  }
  const offsets = new Map<tf.LayerVariable, number>();
  let offset = 0;
  model.weights.forEach((w, i) => {
    offsets.set(w, offset);
    offset += tensorSize(layout[i]!.shape);
  });
  return model.trainableWeights.map((w) => {
    const at = offsets.get(w)!;
    return tf.tensor(base.slice(at, at + tensorSize(w.read().shape)), w.read().shape, w.dtype);
  });
}

export interface EvalResult {
  accuracy: number;
  /** Mean cross-entropy. */
  loss: number;
  numExamples: number;
}

/** Accuracy and loss over the whole dataset (inference mode). An empty dataset gives zeros with numExamples 0. */
export function evaluate(model: tf.LayersModel, data: Dataset, batchSize = 500): EvalResult {
  const s = shapesOf(model, data);
  if (data.n === 0) return { accuracy: 0, loss: 0, numExamples: 0 };
  let lossSum = 0;
  let correct = 0;
  for (let from = 0; from < data.n; from += batchSize) {
    const count = Math.min(batchSize, data.n - from);
    const stats = tf.tidy(() => {
      const { xs, ys } = gatherBatch(data, s, count, (i) => from + i);
      const probs = model.predict(xs) as tf.Tensor;
      return tf.stack([crossEntropySum(probs, ys, s.classes), correctCount(probs, ys)]);
    });
    const [l, c] = stats.dataSync();
    stats.dispose();
    lossSum += l!;
    correct += c!;
  }
  return { accuracy: correct / data.n, loss: lossSum / data.n, numExamples: data.n };
}
