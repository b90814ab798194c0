// The storage contract. The runtime talks only to `Store`; memory and level implement it, and another
// backend can too. Every method is async even where memory could answer at once, so swapping the
// backend never changes the caller's control flow.
//
// Records (sessions, rounds, snapshots) are JSON whose shape the runtime owns. They are checked on
// write: NaN/Infinity, typed arrays, class instances and cycles are refused with FedError('malformed')
// instead of being silently changed by JSON. Binary or typed-array state goes through putState.

/** One committed global model in the append-only, hash-chained trail. */
export interface TrailEntry {
  /** Position in the trail, 0 for the seed. */
  index: number;
  /** Content hash (sha256 hex) of the model blob. */
  modelId: string;
  /** modelId of the previous entry; null only for the seed (index 0). */
  parentModelId: string | null;
  /** entryHash of the previous entry; null only for the seed. */
  parentEntryHash: string | null;
  sessionId: string;
  round: number;
  strategy: string;
  metrics: Record<string, number>;
  /** Milliseconds since the epoch. */
  committedAt: number;
  /** sha256 hex over the canonical JSON of every other field (see trail.ts). */
  entryHash: string;
}

/** What the caller supplies to appendTrail; the store assigns index and the chain fields. */
export interface TrailAppend {
  modelId: string;
  parentModelId: string | null;
  sessionId: string;
  round: number;
  strategy: string;
  metrics?: Record<string, number>;
  /** Defaults to Date.now(). */
  committedAt?: number;
}

export type TrailVerifyResult =
  | { ok: true; entries: number }
  | {
      ok: false;
      /** Entries the trail's head record says were committed (entries read, if it is unreadable). */
      entries: number;
      /** Index of the first entry that fails; for a missing tail, the first missing index. */
      badIndex: number;
      /** modelId of the bad entry when it could be read. */
      modelId?: string;
      reason: string;
    };

export interface RoundEntry<R> {
  round: number;
  record: R;
}

export interface SessionRecord {
  id: string;
  [field: string]: unknown;
}

export interface Store {
  readonly kind: 'memory' | 'level';

  // --- blobs: content-addressed model bytes -------------------------------------------------------
  /** Stores bytes under their sha256 hex and returns it. Idempotent. */
  putBlob(bytes: Uint8Array): Promise<string>;
  /** Stores bytes only if they hash to `hash`; otherwise FedError('hash-mismatch'). */
  putBlobVerified(hash: string, bytes: Uint8Array): Promise<void>;
  /** A fresh copy of the bytes; mutating it does not touch the store. */
  getBlob(hash: string): Promise<Uint8Array | undefined>;
  hasBlob(hash: string): Promise<boolean>;
  /** Refuses (FedError('conflict')) to delete a blob the trail references. No-op when absent. */
  deleteBlob(hash: string): Promise<void>;

  // --- trail: append-only, hash-chained ----------------------------------------------------------
  /**
   * Appends one entry atomically and durably (fsync) and returns it with index and chain fields.
   * FedError('conflict') when parentModelId is not the head's modelId (or not null for the seed);
   * FedError('not-found') when the model blob is not stored yet (put the blob first).
   */
  appendTrail(entry: TrailAppend): Promise<TrailEntry>;
  /** Entries in index order, optionally a page of them. */
  trail(range?: { from?: number; limit?: number }): Promise<TrailEntry[]>;
  /** Number of committed entries. */
  trailLength(): Promise<number>;
  trailHead(): Promise<TrailEntry | undefined>;
  /** The (latest) entry that committed this model, if any. */
  trailEntry(modelId: string): Promise<TrailEntry | undefined>;
  /** Entries before modelId's entry, nearest first, ending at the seed. FedError('not-found') if not in the trail. */
  ancestors(modelId: string): Promise<TrailEntry[]>;

  // --- sessions and rounds (per-round metrics live in the round record) ----------------------------
  putSession<S extends { id: string }>(session: S): Promise<void>;
  getSession<S extends { id: string } = SessionRecord>(id: string): Promise<S | undefined>;
  /** Ordered by id. */
  listSessions<S extends { id: string } = SessionRecord>(): Promise<S[]>;
  putRound<R extends object>(sessionId: string, round: number, record: R): Promise<void>;
  getRound<R extends object = Record<string, unknown>>(sessionId: string, round: number): Promise<R | undefined>;
  /** Ascending by round. */
  listRounds<R extends object = Record<string, unknown>>(sessionId: string): Promise<Array<RoundEntry<R>>>;

  // --- actor snapshots (XState persisted snapshots, JSON) ------------------------------------------
  putSnapshot(address: string, snapshot: unknown): Promise<void>;
  getSnapshot<T = unknown>(address: string): Promise<T | undefined>;
  deleteSnapshot(address: string): Promise<void>;

  // --- small state: JSON plus Float32Array/Float64Array/Int32Array/Uint8Array, bit-exact ----------
  putState(key: string, value: unknown): Promise<void>;
  getState<T = unknown>(key: string): Promise<T | undefined>;

  /** Waits for in-flight trail appends, then closes. Later calls fail with FedError('closed'). */
  close(): Promise<void>;
}
