// Content addressing: models and blobs are named by the SHA-256 of their bytes, so a name can be
// checked against what arrives and equal models get equal names wherever they were encoded.
import * as nodeCrypto from 'node:crypto';
import { createHash } from 'node:crypto';
import { FedError } from '../errors.ts';
import { encodeModel } from './codec.ts';
import type { Params } from './params.ts';

// crypto.hash (Node >= 20.12) hashes in one call, with no Hash object to make and collect.
const oneShot = (nodeCrypto as { hash?: (algorithm: string, data: Uint8Array, encoding: 'hex') => string }).hash;

/** SHA-256 of the bytes, as 64 lowercase hex digits. */
export function contentHash(bytes: Uint8Array): string {
  return oneShot ? oneShot('sha256', bytes, 'hex') : createHash('sha256').update(bytes).digest('hex');
}

/** The id a model is stored and referred to by: the content hash of its canonical encoding. */
export function modelId(p: Params): string {
  return contentHash(encodeModel(p));
}

/** Throws FedError('hash-mismatch') unless `bytes` hash to `expected`. */
export function verifyHash(bytes: Uint8Array, expected: string): void {
  const actual = contentHash(bytes);
  if (actual !== expected) throw new FedError('hash-mismatch', `content hash ${actual} does not match expected ${expected}`, { expected, actual });
}
