// Store contract: the same behaviour tests run against the memory and the level backend. Tampering
// goes below the Store interface (raw keys), the way a corrupted or edited disk would.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Level } from 'level';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FedError, type ErrorCode } from '../src/errors.ts';
import { createMemoryStore, openLevelStore, openStore, verifyTrail, type Store, type TrailEntry } from '../src/store/index.ts';
import { keys } from '../src/store/kv.ts';
import { MemoryKv } from '../src/store/memory.ts';
import { computeEntryHash } from '../src/store/trail.ts';

const sha = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');

interface Raw {
  get(key: string): Promise<Uint8Array | undefined>;
  put(key: string, value: Uint8Array): Promise<void>;
  del(key: string): Promise<void>;
}

interface Harness {
  store: Store;
  /** Edits storage below the Store API, then reopens the store over it. */
  tamper(fn: (raw: Raw) => Promise<void>): Promise<void>;
  reopen(): Promise<void>;
  dispose(): Promise<void>;
}

async function memoryHarness(): Promise<Harness> {
  const kv = new MemoryKv();
  const h: Harness = {
    store: createMemoryStore(kv),
    async tamper(fn) {
      await fn({
        get: (k) => kv.get(k),
        put: (k, v) => kv.batch([{ type: 'put', key: k, value: v }]),
        del: (k) => kv.batch([{ type: 'del', key: k }]),
      });
    },
    async reopen() {
      await h.store.close();
      h.store = createMemoryStore(kv);
    },
    async dispose() {
      await h.store.close();
    },
  };
  return h;
}

async function levelHarness(): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), 'fedstate-store-'));
  const h: Harness = {
    store: await openLevelStore(dir),
    async tamper(fn) {
      await h.store.close();
      const db = new Level<string, Uint8Array>(dir, { valueEncoding: 'view' });
      await db.open();
      await fn({ get: (k) => db.get(k), put: (k, v) => db.put(k, v), del: (k) => db.del(k) });
      await db.close();
      h.store = await openLevelStore(dir);
    },
    async reopen() {
      await h.store.close();
      h.store = await openLevelStore(dir);
    },
    async dispose() {
      await h.store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return h;
}

async function rejects(p: Promise<unknown>, code: ErrorCode, pattern?: RegExp): Promise<FedError> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, FedError);
    const err = e as FedError;
    assert.is(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    if (pattern) assert.match(err.message, pattern);
    return err;
  }
  throw new Error(`expected FedError(${code}), but it resolved`);
}

/** Puts n distinct model blobs and commits them as a chain; returns the entries. */
async function buildTrail(store: Store, n: number, sessionId = 's1'): Promise<TrailEntry[]> {
  const out: TrailEntry[] = [];
  let parent: string | null = (await store.trailHead())?.modelId ?? null;
  for (let i = 0; i < n; i++) {
    const modelId = await store.putBlob(randomBytes(256 + i));
    const e = await store.appendTrail({
      modelId,
      parentModelId: parent,
      sessionId,
      round: i,
      strategy: 'fedavg',
      metrics: { loss: 1 / (i + 1), accuracy: i / n },
      committedAt: 1_700_000_000_000 + i,
    });
    out.push(e);
    parent = modelId;
  }
  return out;
}

const dec = new TextDecoder();
const enc = new TextEncoder();

async function editEntry(raw: Raw, index: number, edit: (e: Record<string, unknown>) => void): Promise<void> {
  const bytes = await raw.get(keys.trail(index));
  assert.ok(bytes, `entry ${index} exists`);
  const e = JSON.parse(dec.decode(bytes)) as Record<string, unknown>;
  edit(e);
  await raw.put(keys.trail(index), enc.encode(JSON.stringify(e)));
}

function contract(label: string, make: () => Promise<Harness>): void {
  const it = (name: string, fn: (h: Harness) => Promise<void>): void =>
    test(`[${label}] ${name}`, async () => {
      const h = await make();
      try {
        await fn(h);
      } finally {
        await h.dispose();
      }
    });

  it('blobs: put returns the sha256 hex, get returns equal bytes, isolated from caller mutation', async ({ store }) => {
    const bytes = randomBytes(1 << 20);
    const hash = await store.putBlob(bytes);
    assert.is(hash, sha(bytes));
    assert.ok(await store.hasBlob(hash));
    const back = await store.getBlob(hash);
    assert.ok(back);
    assert.is(back.length, bytes.length);
    assert.ok(Buffer.from(back).equals(bytes));
    back[0] = back[0]! ^ 0xff;
    bytes[1] = bytes[1]! ^ 0xff;
    assert.is(sha((await store.getBlob(hash))!), hash, 'stored bytes unaffected by mutation of input or output');

    const empty = await store.putBlob(new Uint8Array(0));
    assert.is(empty, sha(''));
    assert.is((await store.getBlob(empty))?.length, 0);

    const absent = sha('absent');
    assert.is(await store.getBlob(absent), undefined);
    assert.is(await store.hasBlob(absent), false);
    await rejects(store.getBlob('not-a-hash'), 'malformed');
    await rejects(store.getBlob(hash.toUpperCase()), 'malformed');

    await store.deleteBlob(hash);
    assert.is(await store.hasBlob(hash), false);
    await store.deleteBlob(hash); // absent: no-op
  });

  it('blobs: putBlobVerified stores matching bytes and refuses a mismatch without storing', async ({ store }) => {
    const good = randomBytes(1000);
    await store.putBlobVerified(sha(good), good);
    assert.ok(await store.hasBlob(sha(good)));
    const other = randomBytes(1000);
    const err = await rejects(store.putBlobVerified(sha(good).replace(/^./, (c) => (c === '0' ? '1' : '0')), other), 'hash-mismatch');
    assert.is(err.detail?.actual, sha(other));
    assert.is(await store.hasBlob(sha(other)), false);
    const claimed = sha('claimed');
    await rejects(store.putBlobVerified(claimed, other), 'hash-mismatch');
    assert.is(await store.hasBlob(claimed), false);
    await rejects(store.putBlobVerified('xyz', other), 'malformed');
  });

  it('trail: append assigns index and chain fields; head, length, pages and lookups agree', async ({ store }) => {
    assert.is(await store.trailLength(), 0);
    assert.is(await store.trailHead(), undefined);
    const entries = await buildTrail(store, 6);
    entries.forEach((e, i) => {
      assert.is(e.index, i);
      assert.is(e.parentEntryHash, i === 0 ? null : entries[i - 1]!.entryHash);
      assert.is(e.parentModelId, i === 0 ? null : entries[i - 1]!.modelId);
    });
    // Pin the hash format independently of the implementation: sorted keys, no whitespace, domain prefix.
    const e2 = entries[2]!;
    const canonical =
      `{"committedAt":${e2.committedAt},"index":2,"metrics":{"accuracy":${e2.metrics.accuracy},"loss":${e2.metrics.loss}},` +
      `"modelId":"${e2.modelId}","parentEntryHash":"${e2.parentEntryHash}","parentModelId":"${e2.parentModelId}",` +
      `"round":2,"sessionId":"s1","strategy":"fedavg"}`;
    assert.is(e2.entryHash, sha(`fedstate/trail/v1\n${canonical}`));

    assert.equal(await store.trail(), entries);
    assert.equal(await store.trail({ from: 2, limit: 3 }), entries.slice(2, 5));
    assert.equal(await store.trail({ from: 5 }), entries.slice(5));
    assert.equal(await store.trail({ from: 99 }), []);
    assert.is(await store.trailLength(), 6);
    assert.equal(await store.trailHead(), entries[5]);
    assert.equal(await store.trailEntry(entries[3]!.modelId), entries[3]);
    assert.is(await store.trailEntry(sha('nope')), undefined);
  });

  it('trail: refuses a wrong parent, a non-null seed parent, a missing blob and bad fields', async ({ store }) => {
    const seedBlob = await store.putBlob(randomBytes(64));
    const other = await store.putBlob(randomBytes(64));
    await rejects(store.appendTrail({ modelId: seedBlob, parentModelId: other, sessionId: 's', round: 0, strategy: 'x' }), 'conflict', /seed/);
    // A seed belongs to no session, so an empty sessionId is accepted.
    const seed = await store.appendTrail({ modelId: seedBlob, parentModelId: null, sessionId: '', round: 0, strategy: 'seed' });
    assert.is(seed.sessionId, '');
    assert.ok(Math.abs(seed.committedAt - Date.now()) < 60_000, 'committedAt defaults to now');
    await rejects(store.appendTrail({ modelId: other, parentModelId: null, sessionId: 's', round: 1, strategy: 'x' }), 'conflict');
    await rejects(store.appendTrail({ modelId: other, parentModelId: other, sessionId: 's', round: 1, strategy: 'x' }), 'conflict', /head/);
    await rejects(store.appendTrail({ modelId: sha('unstored'), parentModelId: seedBlob, sessionId: 's', round: 1, strategy: 'x' }), 'not-found');
    await rejects(store.appendTrail({ modelId: other, parentModelId: seedBlob, sessionId: 's', round: 1, strategy: 'x', metrics: { loss: NaN } }), 'malformed', /loss/);
    await rejects(store.appendTrail({ modelId: other, parentModelId: seedBlob, sessionId: 's', round: -1, strategy: 'x' }), 'malformed');
    await rejects(store.appendTrail({ modelId: 'abc', parentModelId: seedBlob, sessionId: 's', round: 1, strategy: 'x' }), 'malformed');
    assert.is(await store.trailLength(), 1, 'no refused append changed the trail');
    const next = await store.appendTrail({ modelId: other, parentModelId: seedBlob, sessionId: 's', round: 1, strategy: 'x' });
    assert.is(next.index, 1);
  });

  it('trail: concurrent appends on the same head: exactly one wins, the rest conflict', async ({ store }) => {
    const [seed] = await buildTrail(store, 1);
    const blobs = await Promise.all(Array.from({ length: 10 }, () => store.putBlob(randomBytes(128))));
    const results = await Promise.allSettled(
      blobs.map((modelId, i) => store.appendTrail({ modelId, parentModelId: seed!.modelId, sessionId: 's1', round: 1, strategy: 'fedavg', metrics: { i } })),
    );
    const won = results.filter((r) => r.status === 'fulfilled');
    assert.is(won.length, 1);
    for (const r of results) if (r.status === 'rejected') assert.is((r.reason as FedError).code, 'conflict');
    assert.is(await store.trailLength(), 2);
    assert.equal(await verifyTrail(store), { ok: true, entries: 2 });
  });

  it('trail: ancestors walk the chain back to the seed; committed blobs cannot be deleted', async ({ store }) => {
    const entries = await buildTrail(store, 5);
    assert.equal(
      (await store.ancestors(entries[3]!.modelId)).map((e) => e.index),
      [2, 1, 0],
    );
    assert.equal(await store.ancestors(entries[0]!.modelId), []);
    await rejects(store.ancestors(sha('x')), 'not-found');
    await rejects(store.deleteBlob(entries[1]!.modelId), 'conflict');
    assert.ok(await store.hasBlob(entries[1]!.modelId));
  });

  it('verifyTrail: intact trail verifies; an empty trail verifies with 0 entries', async (h) => {
    assert.equal(await verifyTrail(h.store), { ok: true, entries: 0 });
    await buildTrail(h.store, 300); // more than one verification page
    assert.equal(await verifyTrail(h.store), { ok: true, entries: 300 });
  });

  it('verifyTrail: an altered or missing model blob names its entry', async (h) => {
    const entries = await buildTrail(h.store, 5);
    await h.tamper((raw) => raw.put(keys.blob(entries[2]!.modelId), randomBytes(256)));
    const r = await verifyTrail(h.store);
    assert.equal({ ok: r.ok, bad: !r.ok && r.badIndex, model: !r.ok && r.modelId }, { ok: false, bad: 2, model: entries[2]!.modelId });
    assert.match(!r.ok ? r.reason : '', /blob altered/);

    await h.tamper((raw) => raw.del(keys.blob(entries[1]!.modelId)));
    const r2 = await verifyTrail(h.store);
    assert.is(!r2.ok && r2.badIndex, 1);
    assert.match(!r2.ok ? r2.reason : '', /blob is missing/);
  });

  it('verifyTrail: an altered entry field is caught at that entry; a re-hashed edit breaks the next link', async (h) => {
    const entries = await buildTrail(h.store, 5);
    await h.tamper((raw) => editEntry(raw, 3, (e) => ((e.metrics as Record<string, number>).accuracy = 0.99)));
    const r = await verifyTrail(h.store);
    assert.is(!r.ok && r.badIndex, 3);
    assert.is(!r.ok && r.modelId, entries[3]!.modelId);
    assert.match(!r.ok ? r.reason : '', /entryHash/);

    // A forger who also recomputes entry 1's hash is caught by entry 2's parentEntryHash.
    await h.tamper(async (raw) => {
      await editEntry(raw, 3, (e) => ((e.metrics as Record<string, number>).accuracy = entries[3]!.metrics.accuracy!));
      await editEntry(raw, 1, (e) => {
        e.round = 7;
        e.entryHash = computeEntryHash(e as unknown as TrailEntry);
      });
    });
    const r2 = await verifyTrail(h.store);
    assert.is(!r2.ok && r2.badIndex, 2);
    assert.match(!r2.ok ? r2.reason : '', /chain broken/);
  });

  it('verifyTrail: a removed entry, a removed tail and an unreadable entry are named by index', async (h) => {
    const entries = await buildTrail(h.store, 6);
    await h.tamper((raw) => raw.del(keys.trail(2)));
    const r = await verifyTrail(h.store);
    assert.equal(!r.ok && [r.badIndex, r.entries], [2, 6]);
    assert.match(!r.ok ? r.reason : '', /entry 2 is missing/);
    await rejects(h.store.ancestors(entries[4]!.modelId), 'malformed', /broken at entry 2/);

    await h.tamper(async (raw) => {
      await raw.put(keys.trail(2), enc.encode(JSON.stringify(entries[2])));
      await raw.del(keys.trail(5));
    });
    const r2 = await verifyTrail(h.store);
    assert.is(!r2.ok && r2.badIndex, 5, 'truncated tail is caught by the head record');
    assert.match(!r2.ok ? r2.reason : '', /missing \(head records 6/);

    await h.tamper(async (raw) => {
      await raw.put(keys.trail(5), enc.encode(JSON.stringify(entries[5])));
      const head = JSON.parse(dec.decode((await raw.get(keys.trailHead))!)) as Record<string, unknown>;
      await raw.put(keys.trailHead, enc.encode(JSON.stringify({ ...head, entryHash: entries[4]!.entryHash })));
    });
    const rh = await verifyTrail(h.store);
    assert.is(!rh.ok && rh.badIndex, 5, 'a head record that disagrees with the last entry is caught');
    assert.match(!rh.ok ? rh.reason : '', /head record/);

    await h.tamper((raw) => raw.put(keys.trail(1), enc.encode('{"index":1, garbage')));
    const r3 = await verifyTrail(h.store);
    assert.is(!r3.ok && r3.badIndex, 1);
    assert.match(!r3.ok ? r3.reason : '', /corrupt/);
  });

  it('sessions and rounds round-trip; rounds list in numeric order; ids cannot leak across sessions', async ({ store }) => {
    await store.putSession({ id: 'a', plan: { rounds: 3 }, status: 'running', error: undefined });
    await store.putSession({ id: 'a/b', plan: { rounds: 1 } });
    assert.equal(await store.getSession('a'), { id: 'a', plan: { rounds: 3 }, status: 'running' });
    assert.is(await store.getSession('zzz'), undefined);
    assert.equal((await store.listSessions()).map((s) => s.id), ['a', 'a/b']);
    for (const r of [10, 2, 1]) await store.putRound('a', r, { round: r, metrics: { loss: r / 10 } });
    await store.putRound('a/b', 0, { round: 0 });
    await store.putRound('a', 2, { round: 2, metrics: { loss: 0.15 } }); // overwrite
    const rounds = await store.listRounds<{ round: number; metrics: { loss: number } }>('a');
    assert.equal(rounds.map((r) => r.round), [1, 2, 10]);
    assert.is(rounds[1]!.record.metrics.loss, 0.15);
    assert.equal(await store.getRound('a', 10), { round: 10, metrics: { loss: 1 } });
    assert.equal((await store.listRounds('a/b')).map((r) => r.round), [0]);
    assert.equal(await store.listRounds('nobody'), []);
    await rejects(store.putRound('a', 3, { loss: NaN }), 'malformed', /loss/);
    await rejects(store.putRound('a', 1.5, {}), 'malformed');
    await rejects(store.putSession({ id: '' }), 'malformed');
  });

  it('snapshots round-trip as JSON; values JSON would alter are refused', async ({ store }) => {
    const snap = { status: 'active', value: { running: 'collecting' }, context: { round: 3, updates: ['c1', 'c2'] }, children: {}, historyValue: {} };
    await store.putSnapshot('combiner/c1', snap);
    assert.equal(await store.getSnapshot('combiner/c1'), snap);
    assert.is(await store.getSnapshot('combiner/c2'), undefined);
    await rejects(store.putSnapshot('x/y', { data: new Float32Array(2) }), 'malformed', /putState/);
    await rejects(store.putSnapshot('x/y', { at: new Date() }), 'malformed', /Date/);
    await rejects(store.putSnapshot('x/y', { n: Infinity }), 'malformed');
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    await rejects(store.putSnapshot('x/y', cyclic), 'malformed', /cycle/);
    await store.deleteSnapshot('combiner/c1');
    assert.is(await store.getSnapshot('combiner/c1'), undefined);
  });

  it('state round-trips Float32Array bit-exact (NaN payloads, -0, subnormals, views at an offset)', async ({ store }) => {
    const m = new Float32Array(10_001);
    for (let i = 0; i < m.length; i++) m[i] = Math.fround(Math.sin(i) * 1e-3);
    const bits = new Uint32Array(m.buffer);
    bits[0] = 0x7fc01234; // NaN with a payload
    bits[1] = 0xffa00001; // signalling-pattern negative NaN
    bits[2] = 0x80000000; // -0
    bits[3] = 0x00000001; // smallest subnormal
    bits[4] = 0x7f800000; // +Infinity
    const backing = new Float32Array(20).map((_, i) => i + 0.5);
    const view = backing.subarray(3, 11);
    const value = { m, v: view, t: 42, nested: { w: new Float64Array([Math.PI, -0]), ids: new Int32Array([-1, 7]), raw: new Uint8Array([1, 2, 3]) }, list: [new Float32Array(0)], name: 'fedadam' };
    await store.putState('optimizer/server', value);
    m[5] = 123; // mutation after put must not reach the store
    const back = await store.getState<typeof value>('optimizer/server');
    assert.ok(back);
    assert.instance(back.m, Float32Array);
    assert.is(back.m.length, 10_001);
    const backBits = new Uint32Array(back.m.buffer, back.m.byteOffset, back.m.length);
    bits[5] = new Uint32Array(Float32Array.of(Math.fround(Math.sin(5) * 1e-3)).buffer)[0]!;
    assert.ok(Buffer.from(backBits.buffer, backBits.byteOffset, backBits.byteLength).equals(Buffer.from(bits.buffer)), 'bit-exact');
    assert.equal(Array.from(back.v), Array.from(view));
    assert.instance(back.nested.w, Float64Array);
    assert.ok(Object.is(back.nested.w[1], -0));
    assert.equal(Array.from(back.nested.ids), [-1, 7]);
    assert.instance(back.nested.raw, Uint8Array);
    assert.is(back.list[0]!.length, 0);
    assert.is(back.t, 42);
    assert.is(back.name, 'fedadam');
    await store.putState('plain', 3);
    assert.is(await store.getState('plain'), 3);
    await store.putState('bare', new Float32Array([1, 2]));
    assert.equal(Array.from((await store.getState<Float32Array>('bare'))!), [1, 2]);
    assert.is(await store.getState('missing'), undefined);
    await rejects(store.putState('bad', { d: new DataView(new ArrayBuffer(4)) }), 'malformed');
    await rejects(store.putState('bad', { '\u0000typed': 0 }), 'malformed', /reserved/);
  });

  it('reopening keeps blobs, trail, sessions, rounds, snapshots and state', async (h) => {
    const entries = await buildTrail(h.store, 4);
    await h.store.putSession({ id: 's1', rounds: 4 });
    await h.store.putRound('s1', 3, { metrics: { accuracy: 0.9 } });
    await h.store.putSnapshot('reducer/r', { status: 'active', value: 'running' });
    await h.store.putState('k', { m: Float32Array.of(1.5, NaN) });
    await h.reopen();
    const s = h.store;
    assert.equal(await s.trail(), entries);
    assert.equal(await s.trailHead(), entries[3]);
    assert.equal(await verifyTrail(s), { ok: true, entries: 4 });
    assert.equal(await s.getSession('s1'), { id: 's1', rounds: 4 });
    assert.equal(await s.listRounds('s1'), [{ round: 3, record: { metrics: { accuracy: 0.9 } } }]);
    assert.equal(await s.getSnapshot('reducer/r'), { status: 'active', value: 'running' });
    const st = await s.getState<{ m: Float32Array }>('k');
    assert.is(st?.m[0], 1.5);
    assert.ok(Number.isNaN(st?.m[1]));
    // The reopened store continues the same chain.
    const more = await buildTrail(s, 2);
    assert.is(more[0]!.parentEntryHash, entries[3]!.entryHash);
    assert.equal(await verifyTrail(s), { ok: true, entries: 6 });
  });

  it('a closed store refuses every call', async (h) => {
    await buildTrail(h.store, 1);
    const pending = buildTrail(h.store, 3).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 0));
    await h.store.close();
    await pending;
    await rejects(h.store.trailLength(), 'closed');
    await rejects(h.store.putBlob(new Uint8Array(1)), 'closed');
    await rejects(h.store.getState('x'), 'closed');
    await h.store.close(); // idempotent
    await h.reopen();
    assert.ok((await verifyTrail(h.store)).ok, 'closing mid-append leaves a verifiable trail');
  });
}

contract('memory', memoryHarness);
contract('level', levelHarness);

test('openStore: memory without dir, level with dir', async () => {
  const mem = await openStore();
  assert.is(mem.kind, 'memory');
  await mem.close();
  const dir = await mkdtemp(join(tmpdir(), 'fedstate-store-'));
  try {
    const lv = await openStore({ dir });
    assert.is(lv.kind, 'level');
    await lv.close();
    await rejects(openLevelStore(join(dir, 'absent'), { createIfMissing: false }), 'not-found');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test.run();
