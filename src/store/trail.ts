// The model trail's hashing and verification, independent of any backend.
//
// entryHash = sha256hex("fedstate/trail/v1\n" + canonicalJson(fields)), where fields are every entry
// field except entryHash itself (index, modelId, parentModelId, parentEntryHash, sessionId, round,
// strategy, metrics, committedAt) and canonicalJson sorts keys at every level with no whitespace.
// The domain prefix keeps a trail hash from ever equalling some other sha256 the project computes.
import { errorMessage, FedError, isFedError } from '../errors.ts';
import { canonicalJson } from './codec.ts';
import { contentHash, isContentHash, textHash } from './hash.ts';
import type { Store, TrailAppend, TrailEntry, TrailVerifyResult } from './types.ts';

const domain = 'fedstate/trail/v1\n';

export function computeEntryHash(e: Omit<TrailEntry, 'entryHash'>): string {
  const fields = {
    index: e.index,
    modelId: e.modelId,
    parentModelId: e.parentModelId,
    parentEntryHash: e.parentEntryHash,
    sessionId: e.sessionId,
    round: e.round,
    strategy: e.strategy,
    metrics: e.metrics,
    committedAt: e.committedAt,
  };
  return textHash(domain + canonicalJson(fields, 'trail entry'));
}

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;

function checkMetrics(metrics: unknown, what: string): Record<string, number> {
  if (metrics === null || typeof metrics !== 'object' || Array.isArray(metrics)) {
    throw new FedError('malformed', `${what}: metrics must be an object of numbers`);
  }
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(metrics)) {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new FedError('malformed', `${what}: metric ${k} is ${String(v)}, not a finite number`);
    out[k] = v;
  }
  return out;
}

/** Validates caller input and returns only the fields the trail keeps. */
export function checkAppend(e: TrailAppend): Omit<TrailEntry, 'index' | 'parentEntryHash' | 'entryHash'> {
  const what = 'trail append';
  if (!isContentHash(e.modelId)) throw new FedError('malformed', `${what}: modelId is not a sha256 hex`);
  if (e.parentModelId !== null && !isContentHash(e.parentModelId)) throw new FedError('malformed', `${what}: parentModelId is neither null nor a sha256 hex`);
  // Empty is allowed: a seed model belongs to no session.
  if (typeof e.sessionId !== 'string') throw new FedError('malformed', `${what}: sessionId must be a string`);
  if (!isCount(e.round)) throw new FedError('malformed', `${what}: round must be a non-negative integer`);
  if (typeof e.strategy !== 'string') throw new FedError('malformed', `${what}: strategy must be a string`);
  const committedAt = e.committedAt ?? Date.now();
  if (!isCount(committedAt)) throw new FedError('malformed', `${what}: committedAt must be integer milliseconds`);
  return {
    modelId: e.modelId,
    parentModelId: e.parentModelId,
    sessionId: e.sessionId,
    round: e.round,
    strategy: e.strategy,
    metrics: checkMetrics(e.metrics ?? {}, what),
    committedAt,
  };
}

/** Shape-checks an entry read back from storage (it may have been altered on disk). */
export function checkStoredEntry(value: unknown, keyIndex: number): TrailEntry {
  const bad = (why: string): FedError => new FedError('malformed', `trail entry ${keyIndex} is corrupt: ${why}`, { index: keyIndex });
  if (value === null || typeof value !== 'object') throw bad('not an object');
  const e = value as Record<string, unknown>;
  if (e.index !== keyIndex) throw bad(`stored under index ${keyIndex} but says ${String(e.index)}`);
  if (!isContentHash(e.modelId)) throw bad('modelId');
  if (e.parentModelId !== null && !isContentHash(e.parentModelId)) throw bad('parentModelId');
  if (e.parentEntryHash !== null && !isContentHash(e.parentEntryHash)) throw bad('parentEntryHash');
  if (typeof e.sessionId !== 'string') throw bad('sessionId');
  if (!isCount(e.round)) throw bad('round');
  if (typeof e.strategy !== 'string') throw bad('strategy');
  if (!isCount(e.committedAt)) throw bad('committedAt');
  if (!isContentHash(e.entryHash)) throw bad('entryHash');
  let metrics: Record<string, number>;
  try {
    metrics = checkMetrics(e.metrics, 'stored entry');
  } catch {
    throw bad('metrics');
  }
  return {
    index: keyIndex,
    modelId: e.modelId,
    parentModelId: e.parentModelId,
    parentEntryHash: e.parentEntryHash,
    sessionId: e.sessionId,
    round: e.round,
    strategy: e.strategy,
    metrics,
    committedAt: e.committedAt,
    entryHash: e.entryHash,
  };
}

const pageSize = 256;

/**
 * Re-derives the whole trail: each entryHash from its fields, each link to the previous entry, each
 * model blob's hash against its modelId, and the head record against the last entry (which catches a
 * truncated tail). Stops at the first bad entry. Reads page by page so memory stays bounded.
 */
export async function verifyTrail(store: Store): Promise<TrailVerifyResult> {
  let found = 0;
  let prev: TrailEntry | undefined;
  const committed = await store.trailLength().catch(() => undefined);
  const fail = (badIndex: number, reason: string, modelId?: string): TrailVerifyResult => {
    const entries = committed ?? found;
    return modelId === undefined ? { ok: false, entries, badIndex, reason } : { ok: false, entries, badIndex, modelId, reason };
  };

  const check = async (e: TrailEntry, i: number): Promise<string | undefined> => {
    if (e.index !== i) return `entry ${i} is missing (next stored entry is ${e.index})`;
    if (computeEntryHash(e) !== e.entryHash) return 'entryHash does not match the entry fields (entry altered)';
    if (i === 0) {
      if (e.parentModelId !== null || e.parentEntryHash !== null) return 'seed entry names a parent';
    } else if (prev) {
      if (e.parentEntryHash !== prev.entryHash) return `parentEntryHash does not match entry ${i - 1} (chain broken)`;
      if (e.parentModelId !== prev.modelId) return `parentModelId does not match entry ${i - 1}'s modelId`;
    }
    const bytes = await store.getBlob(e.modelId);
    if (!bytes) return 'model blob is missing';
    const actual = contentHash(bytes);
    if (actual !== e.modelId) return `model blob hashes to ${actual} (blob altered)`;
    return undefined;
  };

  for (;;) {
    const from = found;
    let page: TrailEntry[];
    let unreadable: FedError | undefined;
    try {
      page = await store.trail({ from, limit: pageSize });
    } catch (err) {
      const at = isFedError(err, 'malformed') ? err.detail?.index : undefined;
      if (!isFedError(err) || typeof at !== 'number') throw err;
      // Verify what precedes the unreadable entry before reporting it, so the first bad index wins.
      page = at > from ? await store.trail({ from, limit: at - from }) : [];
      unreadable = err;
    }
    for (const e of page) {
      const reason = await check(e, found);
      if (reason) return fail(found, reason, e.index === found ? e.modelId : undefined);
      prev = e;
      found++;
    }
    if (unreadable) return fail(found, unreadable.message.replace(/^malformed: /, ''));
    if (page.length < pageSize) break;
  }

  if (committed === undefined) return fail(found, 'trail head record is unreadable');
  if (committed > found) return fail(found, `entry ${found} is missing (head records ${committed} entries)`);
  if (committed < found) return fail(committed, `entry ${committed} is beyond the recorded head (${committed} entries)`);
  try {
    const head = committed > 0 ? await store.trailHead() : undefined;
    if (head && prev && head.entryHash !== prev.entryHash) return fail(found - 1, 'head record does not match the last entry', prev.modelId);
  } catch (err) {
    return fail(Math.max(0, found - 1), errorMessage(err).replace(/^malformed: /, ''), prev?.modelId);
  }
  return { ok: true, entries: found };
}
