// Content hashes for the store: the project's single definition of a model id (src/model/hash.ts),
// plus the format check the store applies to every hash it is handed.
import { contentHash } from '../model/hash.ts';

export { contentHash };

const utf8 = new TextEncoder();

/** sha256 hex of a string's UTF-8 bytes (trail entry hashes). */
export const textHash = (text: string): string => contentHash(utf8.encode(text));

const hashPattern = /^[0-9a-f]{64}$/;

/** True for a well-formed content hash (64 lowercase hex digits). */
export const isContentHash = (value: unknown): value is string => typeof value === 'string' && hashPattern.test(value);
