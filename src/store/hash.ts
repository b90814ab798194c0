// Content hashes for the store. Semantics match the project's `contentHash`: sha256 of the bytes,
// lowercase hex. NOTE: src/model/hash.ts (contentHash) did not exist when the store was written;
// once it lands this file should re-export it so there is one definition of a model id.
import { createHash } from 'node:crypto';

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

const hashPattern = /^[0-9a-f]{64}$/;

/** True for a well-formed content hash (64 lowercase hex digits). */
export const isContentHash = (value: unknown): value is string => typeof value === 'string' && hashPattern.test(value);
