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
  for (let i = 0; i < data.length; i++) {
    // x - x is NaN exactly when x is NaN or +-Infinity, and is cheaper than Number.isFinite per element
    const x = data[i]!;
    if (x - x !== 0) return i;
  }
  return -1;
}
