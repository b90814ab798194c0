// One Store implementation over a minimal ordered key-value interface. Memory and level differ only
// in their Kv, so every rule (chain checks, encodings, refusals) is the same code on both and the
// contract tests exercise it twice. A new backend that offers ordered keys and atomic batches needs
// only a Kv.
//
// Key layout (ASCII only; user-supplied ids are encodeURIComponent-escaped, so a "/" inside an id
// cannot make one namespace's range reach into another):
//   b/<sha256>                    blob bytes
//   t/<index, 12 digits>          trail entry, JSON (all fields incl. entryHash)
//   tm/<modelId>                  index of the latest trail entry for that model, decimal
//   m/trail-head                  {length, entryHash, modelId}: written in the same batch as the entry
//   s/<sessionId>                 session JSON
//   r/<sessionId>/<round, 10 dig> round record JSON
//   a/<actor address>             XState persisted snapshot JSON
//   k/<key>                       state, binary (codec.ts encodeState)
// Zero-padded numbers make key order equal numeric order, so ranges come back sorted.
import { FedError } from '../errors.ts';
import { decodeJson, decodeState, encodeJson, encodeState } from './codec.ts';
import { contentHash, isContentHash } from './hash.ts';
import { checkAppend, checkStoredEntry, computeEntryHash } from './trail.ts';
import type { RoundEntry, SessionRecord, Store, TrailAppend, TrailEntry } from './types.ts';

export type KvOp = { type: 'put'; key: string; value: Uint8Array } | { type: 'del'; key: string };

export interface Kv {
  get(key: string): Promise<Uint8Array | undefined>;
  has(key: string): Promise<boolean>;
  /** All ops apply or none do. With sync, resolves only once the batch is on stable storage. */
  batch(ops: KvOp[], options?: { sync?: boolean }): Promise<void>;
  /** Entries with gte <= key < lt, ascending, at most limit. */
  range(options: { gte: string; lt: string; limit?: number }): Promise<Array<[string, Uint8Array]>>;
  close(): Promise<void>;
}

const pad = (n: number, width: number): string => String(n).padStart(width, '0');
const maxIndex = 1e12 - 1;
const maxRound = 1e10 - 1;

function idPart(value: unknown, what: string): string {
  if (typeof value !== 'string' || value === '') throw new FedError('malformed', `${what} must be a non-empty string`);
  return encodeURIComponent(value);
}

function hashPart(value: unknown, what: string): string {
  if (!isContentHash(value)) throw new FedError('malformed', `${what} is not a sha256 hex (64 lowercase hex digits)`);
  return value;
}

function roundPart(round: unknown): string {
  if (typeof round !== 'number' || !Number.isSafeInteger(round) || round < 0 || round > maxRound) {
    throw new FedError('malformed', `round must be an integer in 0..${maxRound}`);
  }
  return pad(round, 10);
}

export const keys = {
  blob: (hash: string): string => `b/${hashPart(hash, 'blob hash')}`,
  trail: (index: number): string => `t/${pad(index, 12)}`,
  trailPrefix: 't/',
  trailModel: (modelId: string): string => `tm/${hashPart(modelId, 'modelId')}`,
  trailHead: 'm/trail-head',
  sessionPrefix: 's/',
  session: (id: string): string => `s/${idPart(id, 'session id')}`,
  roundPrefix: (sessionId: string): string => `r/${idPart(sessionId, 'session id')}/`,
  round: (sessionId: string, round: number): string => `${keys.roundPrefix(sessionId)}${roundPart(round)}`,
  snapshot: (address: string): string => `a/${idPart(address, 'actor address')}`,
  state: (key: string): string => `k/${idPart(key, 'state key')}`,
};

/** Upper bound for a prefix range: every key character is printable ASCII, all below DEL. */
export const prefixEnd = (prefix: string): string => `${prefix}\x7f`;

interface HeadRecord {
  length: number;
  entryHash: string;
  modelId: string;
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

export class KvStore implements Store {
  private closed = false;
  /** Serializes trail appends and blob deletes: the head check and the write must not interleave. */
  private chain: Promise<unknown> = Promise.resolve();
  private readonly pending = new Set<Promise<unknown>>();

  constructor(
    readonly kind: 'memory' | 'level',
    private readonly kv: Kv,
  ) {}

  private run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new FedError('closed', `${this.kind} store is closed`));
    let p: Promise<T>;
    try {
      p = fn();
    } catch (e) {
      // Argument checks (bad hash, bad id) must reject like every other failure, not throw.
      return Promise.reject(e);
    }
    this.pending.add(p);
    const done = (): void => void this.pending.delete(p);
    p.then(done, done);
    return p;
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  // --- blobs ---------------------------------------------------------------------------------------

  putBlob(bytes: Uint8Array): Promise<string> {
    return this.run(async () => {
      const hash = contentHash(bytes);
      await this.kv.batch([{ type: 'put', key: keys.blob(hash), value: bytes }]);
      return hash;
    });
  }

  putBlobVerified(hash: string, bytes: Uint8Array): Promise<void> {
    return this.run(async () => {
      const key = keys.blob(hash);
      const actual = contentHash(bytes);
      if (actual !== hash) throw new FedError('hash-mismatch', `blob hashes to ${actual}, expected ${hash}`, { expected: hash, actual });
      await this.kv.batch([{ type: 'put', key, value: bytes }]);
    });
  }

  getBlob(hash: string): Promise<Uint8Array | undefined> {
    return this.run(() => this.kv.get(keys.blob(hash)));
  }

  hasBlob(hash: string): Promise<boolean> {
    return this.run(() => this.kv.has(keys.blob(hash)));
  }

  deleteBlob(hash: string): Promise<void> {
    return this.run(async () => {
      const key = keys.blob(hash);
      return this.serialized(async () => {
        if (await this.kv.has(keys.trailModel(hash))) {
          throw new FedError('conflict', `blob ${hash} is a committed model in the trail and cannot be deleted`);
        }
        await this.kv.batch([{ type: 'del', key }]);
      });
    });
  }

  // --- trail ---------------------------------------------------------------------------------------

  private async readHead(): Promise<HeadRecord | undefined> {
    const bytes = await this.kv.get(keys.trailHead);
    if (!bytes) return undefined;
    const h = decodeJson(bytes, 'trail head record') as Partial<HeadRecord> | null;
    if (!h || typeof h.length !== 'number' || !Number.isSafeInteger(h.length) || h.length < 1 || !isContentHash(h.entryHash) || !isContentHash(h.modelId)) {
      throw new FedError('malformed', 'trail head record is corrupt');
    }
    return { length: h.length, entryHash: h.entryHash, modelId: h.modelId };
  }

  private async readEntry(index: number): Promise<TrailEntry | undefined> {
    const bytes = await this.kv.get(keys.trail(index));
    return bytes && checkStoredEntry(decodeEntryJson(bytes, index), index);
  }

  appendTrail(input: TrailAppend): Promise<TrailEntry> {
    return this.run(async () => {
      const fields = checkAppend(input);
      return this.serialized(() => this.commit(fields));
    });
  }

  private async commit(fields: ReturnType<typeof checkAppend>): Promise<TrailEntry> {
    const head = await this.readHead();
    if (!head) {
      if (fields.parentModelId !== null) {
        throw new FedError('conflict', 'the trail is empty: the first (seed) entry must have parentModelId null', { head: null });
      }
    } else if (fields.parentModelId !== head.modelId) {
      throw new FedError('conflict', `parent ${String(fields.parentModelId)} is not the trail head ${head.modelId}`, { head: head.modelId });
    }
    if (!(await this.kv.has(keys.blob(fields.modelId)))) {
      throw new FedError('not-found', `model blob ${fields.modelId} is not stored; put the blob before committing it`);
    }
    const index = head?.length ?? 0;
    if (index > maxIndex) throw new FedError('internal', 'trail index space exhausted');
    const body = { index, ...fields, parentEntryHash: head?.entryHash ?? null };
    const entry: TrailEntry = { ...body, entryHash: computeEntryHash(body) };
    const newHead: HeadRecord = { length: index + 1, entryHash: entry.entryHash, modelId: entry.modelId };
    // One batch, so a crash leaves either the old trail or the new one, never an entry without its
    // head or index. sync: the trail is the commit record a restarted reducer resumes from, so the
    // append resolves only after fsync of the write-ahead log; because LevelDB's log is sequential,
    // that also makes every earlier unsynced write (the model blob put before it) durable.
    await this.kv.batch(
      [
        { type: 'put', key: keys.trail(index), value: encodeJson(entry, 'trail entry') },
        { type: 'put', key: keys.trailModel(entry.modelId), value: utf8.encode(String(index)) },
        { type: 'put', key: keys.trailHead, value: encodeJson(newHead, 'trail head') },
      ],
      { sync: true },
    );
    return entry;
  }

  trail(range: { from?: number; limit?: number } = {}): Promise<TrailEntry[]> {
    const from = range.from ?? 0;
    if (!Number.isSafeInteger(from) || from < 0) return Promise.reject(new FedError('malformed', 'trail range: from must be a non-negative integer'));
    return this.run(() => this.readRange(from, range.limit));
  }

  private async readRange(from: number, limit?: number, before?: number): Promise<TrailEntry[]> {
    if (limit !== undefined && limit <= 0) return [];
    const rows = await this.kv.range({
      gte: keys.trail(Math.min(from, maxIndex)),
      lt: before === undefined ? prefixEnd(keys.trailPrefix) : keys.trail(before),
      ...(limit !== undefined ? { limit } : {}),
    });
    return rows.map(([key, bytes]) => {
      const index = Number(key.slice(keys.trailPrefix.length));
      return checkStoredEntry(decodeEntryJson(bytes, index), index);
    });
  }

  trailLength(): Promise<number> {
    return this.run(async () => (await this.readHead())?.length ?? 0);
  }

  trailHead(): Promise<TrailEntry | undefined> {
    return this.run(async () => {
      const head = await this.readHead();
      if (!head) return undefined;
      const entry = await this.readEntry(head.length - 1);
      if (!entry) throw new FedError('malformed', `trail head points at entry ${head.length - 1}, which is missing`, { index: head.length - 1 });
      if (entry.entryHash !== head.entryHash) {
        throw new FedError('malformed', `trail head record does not match entry ${entry.index}`, { index: entry.index });
      }
      return entry;
    });
  }

  private async entryFor(modelId: string): Promise<TrailEntry | undefined> {
    const bytes = await this.kv.get(keys.trailModel(modelId));
    if (!bytes) return undefined;
    const index = Number(fromUtf8.decode(bytes));
    const entry = Number.isSafeInteger(index) ? await this.readEntry(index) : undefined;
    if (!entry || entry.modelId !== modelId) throw new FedError('malformed', `trail model index for ${modelId} is corrupt`);
    return entry;
  }

  trailEntry(modelId: string): Promise<TrailEntry | undefined> {
    return this.run(() => this.entryFor(modelId));
  }

  ancestors(modelId: string): Promise<TrailEntry[]> {
    return this.run(async () => {
      const entry = await this.entryFor(modelId);
      if (!entry) throw new FedError('not-found', `model ${modelId} is not in the trail`);
      const before = new Map((await this.readRange(0, undefined, entry.index)).map((e) => [e.index, e]));
      // Follow the hash links rather than trusting positions, so a broken chain is an error here
      // instead of a wrong lineage.
      const out: TrailEntry[] = [];
      let want = entry.parentEntryHash;
      for (let i = entry.index - 1; i >= 0; i--) {
        const e = before.get(i);
        if (!e || e.entryHash !== want) throw new FedError('malformed', `trail chain is broken at entry ${i}`, { index: i });
        out.push(e);
        want = e.parentEntryHash;
      }
      return out;
    });
  }

  // --- sessions and rounds -------------------------------------------------------------------------

  putSession<S extends { id: string }>(session: S): Promise<void> {
    return this.run(async () => {
      const key = keys.session(session.id);
      await this.kv.batch([{ type: 'put', key, value: encodeJson(session, `session ${session.id}`) }]);
    });
  }

  getSession<S extends { id: string } = SessionRecord>(id: string): Promise<S | undefined> {
    return this.run(async () => {
      const bytes = await this.kv.get(keys.session(id));
      return bytes && (decodeJson(bytes, `session ${id}`) as S);
    });
  }

  listSessions<S extends { id: string } = SessionRecord>(): Promise<S[]> {
    return this.run(async () => {
      const rows = await this.kv.range({ gte: keys.sessionPrefix, lt: prefixEnd(keys.sessionPrefix) });
      return rows.map(([key, bytes]) => decodeJson(bytes, key) as S);
    });
  }

  putRound<R extends object>(sessionId: string, round: number, record: R): Promise<void> {
    return this.run(async () => {
      const key = keys.round(sessionId, round);
      if (record === null || typeof record !== 'object') throw new FedError('malformed', 'round record must be an object');
      await this.kv.batch([{ type: 'put', key, value: encodeJson(record, `round ${round} of session ${sessionId}`) }]);
    });
  }

  getRound<R extends object = Record<string, unknown>>(sessionId: string, round: number): Promise<R | undefined> {
    return this.run(async () => {
      const bytes = await this.kv.get(keys.round(sessionId, round));
      return bytes && (decodeJson(bytes, `round ${round} of session ${sessionId}`) as R);
    });
  }

  listRounds<R extends object = Record<string, unknown>>(sessionId: string): Promise<Array<RoundEntry<R>>> {
    return this.run(async () => {
      const prefix = keys.roundPrefix(sessionId);
      const rows = await this.kv.range({ gte: prefix, lt: prefixEnd(prefix) });
      return rows.map(([key, bytes]) => ({ round: Number(key.slice(prefix.length)), record: decodeJson(bytes, key) as R }));
    });
  }

  // --- snapshots and state -------------------------------------------------------------------------

  putSnapshot(address: string, snapshot: unknown): Promise<void> {
    return this.run(async () => {
      const key = keys.snapshot(address);
      await this.kv.batch([{ type: 'put', key, value: encodeJson(snapshot, `snapshot of ${address}`) }]);
    });
  }

  getSnapshot<T = unknown>(address: string): Promise<T | undefined> {
    return this.run(async () => {
      const bytes = await this.kv.get(keys.snapshot(address));
      return bytes && (decodeJson(bytes, `snapshot of ${address}`) as T);
    });
  }

  deleteSnapshot(address: string): Promise<void> {
    return this.run(() => this.kv.batch([{ type: 'del', key: keys.snapshot(address) }]));
  }

  putState(key: string, value: unknown): Promise<void> {
    return this.run(async () => {
      const k = keys.state(key);
      await this.kv.batch([{ type: 'put', key: k, value: encodeState(value) }]);
    });
  }

  getState<T = unknown>(key: string): Promise<T | undefined> {
    return this.run(async () => {
      const bytes = await this.kv.get(keys.state(key));
      return bytes && (decodeState(bytes) as T);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.pending]);
    await this.kv.close();
  }
}

function decodeEntryJson(bytes: Uint8Array, index: number): unknown {
  try {
    return decodeJson(bytes, `trail entry ${index}`);
  } catch (e) {
    throw new FedError('malformed', `trail entry ${index} is corrupt: not JSON`, { index, cause: String(e) });
  }
}
