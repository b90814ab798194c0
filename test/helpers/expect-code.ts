// Asserts that `fn` throws a FedError with the given code (and nothing else counts).
import * as assert from 'uvu/assert';
import { isFedError, type ErrorCode } from '../../src/errors.ts';

export function expectCode(code: ErrorCode, fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    assert.ok(isFedError(e, code), `expected FedError(${code}), got ${String(e)}`);
    return;
  }
  assert.unreachable(`expected FedError(${code})`);
}
