// Entry point for the runtime: openStore() picks the backend, the rest is the Store interface.
import { openLevelStore } from './level.ts';
import { createMemoryStore } from './memory.ts';
import type { Store } from './types.ts';

export type { RoundEntry, SessionRecord, Store, TrailAppend, TrailEntry, TrailVerifyResult } from './types.ts';
export { verifyTrail, computeEntryHash } from './trail.ts';
export { createMemoryStore } from './memory.ts';
export { openLevelStore } from './level.ts';

/** A level store in `dir`, or a fresh in-memory store when no dir is given. */
export function openStore(options: { dir?: string } = {}): Promise<Store> {
  return options.dir === undefined ? Promise.resolve(createMemoryStore()) : openLevelStore(options.dir);
}
