// A model, to the framework, is one flat Float32Array plus a layout naming the tensors inside it.
// Strategies and transports only ever see the flat array; frameworks map it to their own tensors.
import { FedError } from '../errors.ts';

export interface TensorSpec {
  name: string;
  shape: number[];
}

export type Layout = TensorSpec[];

export interface Params {
  layout: Layout;
  data: Float32Array;
}

export const tensorSize = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

export const layoutSize = (layout: Layout): number => layout.reduce((n, t) => n + tensorSize(t.shape), 0);

export function sameLayout(a: Layout, b: Layout): boolean {
  if (a.length !== b.length) return false;
  return a.every((t, i) => {
    const u = b[i];
    return u !== undefined && t.name === u.name && t.shape.length === u.shape.length && t.shape.every((d, j) => d === u.shape[j]);
  });
}

export function makeParams(layout: Layout, data?: Float32Array): Params {
  const size = layoutSize(layout);
  const flat = data ?? new Float32Array(size);
  if (flat.length !== size) {
    throw new FedError('wrong-shape', `layout holds ${size} parameters, data has ${flat.length}`);
  }
  return { layout, data: flat };
}

/** Index of the first NaN or infinite value, or -1 when every value is finite. */
export function firstNonFinite(data: Float32Array): number {
  if (allFinite(data)) return -1;
  for (let i = 0; i < data.length; i++) {
    // x - x is NaN exactly when x is NaN or +-Infinity
    const x = data[i]!;
    if (x - x !== 0) return i;
  }
  return -1;
}

/**
 * Whether every value is finite, by summing them in Float64: a Float32 is below 2^128 in magnitude, so
 * no sum of fewer than 2^800 of them can overflow, and the sum is finite exactly when every term is.
 * Four independent partial sums run ~2.5x faster than a compare per element (10M values: 3 ms vs 8).
 */
function allFinite(data: Float32Array): boolean {
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 0;
  const n = data.length;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    a += data[i]!;
    b += data[i + 1]!;
    c += data[i + 2]!;
    d += data[i + 3]!;
  }
  for (; i < n; i++) a += data[i]!;
  const s = a + b + c + d;
  return s - s === 0;
}
