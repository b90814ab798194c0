// Checks shared by every strategy. An update is refused before it touches any accumulator state, so
// a refused add leaves the aggregate exactly as if it had never been offered.
import { FedError } from '../errors.ts';
import { firstNonFinite } from '../model/params.ts';
import type { Accumulator } from './types.ts';

export function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new FedError('config', `size must be a non-negative integer, got ${size}`);
}

export function checkWeight(weight: number): void {
  // NaN fails both comparisons, so it lands here too
  if (!(weight > 0 && weight < Infinity)) {
    throw new FedError('bad-weight', `weight must be finite and > 0, got ${weight}`, { weight });
  }
}

export function checkShape(update: Float32Array, size: number): void {
  if (!(update instanceof Float32Array)) throw new FedError('wrong-shape', 'update must be a Float32Array');
  if (update.length !== size) {
    throw new FedError('wrong-shape', `update has ${update.length} parameters, expected ${size}`, { got: update.length, expected: size });
  }
}

export function checkFinite(update: Float32Array, what = 'update'): void {
  const at = firstNonFinite(update);
  if (at >= 0) throw new FedError('not-finite', `${what} holds ${update[at]} at index ${at}`, { index: at });
}

/** Weight, shape and finiteness: everything an add() must refuse. */
export function checkUpdate(update: Float32Array, weight: number, size: number): void {
  checkWeight(weight);
  checkShape(update, size);
  checkFinite(update);
}

export function nothingAdded(name: string): FedError {
  return new FedError('bad-weight', `${name}: nothing was aggregated (no update with a positive weight)`);
}

/**
 * add() that hands back the refusal instead of throwing it, for callers that must not throw (state-machine
 * actions). A refused update leaves the accumulator as it was; anything that is not a FedError (a bug)
 * still throws.
 */
export function tryAdd(acc: Accumulator, update: Float32Array, weight: number): FedError | undefined {
  try {
    acc.add(update, weight);
    return undefined;
  } catch (e) {
    if (e instanceof FedError) return e;
    throw e;
  }
}
