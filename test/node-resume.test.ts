// A blob transfer between Nodes survives its link dropping: if the holder is reachable again soon
// (it redials), the transfer goes on from the bytes already received, and only the rest moves; the
// sha256 still covers the whole blob. A holder that does not come back fails the fetch, typed.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomFillSync } from 'node:crypto';
import { Node } from '../src/actors/node.ts';
import { isFedError } from '../src/errors.ts';
import { contentHash } from '../src/model/hash.ts';
import { hashWorker } from '../src/transport/off-thread-hash.ts';
import { WsTransport } from '../src/transport/ws.ts';

const MiB = 1024 * 1024;

/** Hash-worker jobs still running: a transfer that ended, whichever way, leaves none. */
const openJobs = (): number => hashWorker()?.openJobs ?? 0;

function blobOf(mib: number): Uint8Array {
  const b = new Uint8Array(mib * MiB);
  for (let o = 0; o < b.byteLength; o += 64 * MiB) randomFillSync(b, o, Math.min(64 * MiB, b.byteLength - o));
  return b;
}

/** A combiner-like node listening, and a client-like node holding `blob` that dialled it. */
async function pair(resumeWithinMs: number, blob: Uint8Array): Promise<{ holder: Node; fetcher: Node; endpoint: string; hash: string }> {
  // one chunk of credit at a time keeps the transfer slow enough to cut in the middle
  const fetcher = new Node({ name: 'c1', transport: new WsTransport(), resumeWithinMs, link: { window: 1 } });
  fetcher.host('combiner/c1', () => undefined);
  const { endpoint } = await fetcher.listen('ws://127.0.0.1:0');
  const holder = new Node({ name: 'k1', transport: new WsTransport() });
  holder.host('client/k1', () => undefined);
  const hash = await holder.blobs.put(blob);
  await holder.dial(endpoint);
  return { holder, fetcher, endpoint, hash };
}

/** Closes the holder's link once the fetcher has received `bytes` over it. */
function cutAfter(p: { holder: Node; fetcher: Node }, bytes: number): Promise<number> {
  return new Promise((resolve) => {
    const poll = (): void => {
      const got = p.fetcher.linkTo('client/k1')?.stats.bytesIn ?? 0;
      if (got < bytes) return void setImmediate(poll);
      for (const l of p.holder.openLinks) l.close('network cut');
      resolve(got);
    };
    poll();
  });
}

test('a transfer cut by a dropped link goes on when the holder redials: only the rest moves, the whole verifies', async () => {
  const blob = blobOf(48);
  const p = await pair(5_000, blob);
  try {
    const fetch = p.fetcher.fetchBlob('client/k1', p.hash, { remoteOnly: true });
    const before = await cutAfter(p, 8 * MiB);
    assert.ok(before < blob.byteLength, `cut at ${before} of ${blob.byteLength}`);
    await new Promise((r) => setTimeout(r, 100));
    await p.holder.dial(p.endpoint);
    const got = await fetch;
    assert.is(contentHash(got), p.hash);
    assert.is(openJobs(), 0);
    const rest = p.fetcher.linkTo('client/k1')!.stats.bytesIn;
    assert.ok(rest > 0 && rest <= blob.byteLength - before + MiB, `the new link carried ${rest} bytes after ${before} had arrived`);
  } finally {
    await Promise.all([p.holder.close(), p.fetcher.close()]);
  }
});

test('a holder that does not come back within resumeWithinMs fails the fetch with closed; 0 disables resuming', async () => {
  for (const wait of [300, 0]) {
    const p = await pair(wait, blobOf(48));
    try {
      const fetch = p.fetcher.fetchBlob('client/k1', p.hash, { remoteOnly: true });
      await cutAfter(p, 4 * MiB);
      const t0 = Date.now();
      const e = await fetch.then(
        () => assert.unreachable('fetched without its holder'),
        (err: unknown) => err,
      );
      const waited = Date.now() - t0;
      assert.ok(isFedError(e, 'closed'), String(e));
      if (wait > 0) assert.ok(waited >= wait - 20 && waited < wait + 1_500, `gave up after ${waited} ms (window ${wait} ms, not the 5 s default)`);
      else assert.ok(waited < 250, `failed at once without resuming (${waited} ms)`);
      assert.is(openJobs(), 0, 'the hash job of the abandoned transfer was dropped');
    } finally {
      await Promise.all([p.holder.close(), p.fetcher.close()]);
    }
  }
});

test('a fetch waiting for its holder to come back ends when its own node closes', async () => {
  const p = await pair(60_000, blobOf(48));
  const fetch = p.fetcher.fetchBlob('client/k1', p.hash, { remoteOnly: true });
  await cutAfter(p, 4 * MiB);
  const t0 = Date.now();
  setTimeout(() => void p.fetcher.close(), 50);
  const e = await fetch.then(
    () => assert.unreachable('fetched without its holder'),
    (err: unknown) => err,
  );
  assert.ok(isFedError(e, 'closed'), String(e));
  assert.ok(Date.now() - t0 < 5_000, 'did not wait out the 60 s window');
  await p.holder.close();
});

test('a fetch waiting for its holder to come back ends when its caller aborts (a cancelled task)', async () => {
  const p = await pair(60_000, blobOf(48));
  try {
    const ac = new AbortController();
    const fetch = p.fetcher.fetchBlob('client/k1', p.hash, { remoteOnly: true, signal: ac.signal });
    await cutAfter(p, 4 * MiB);
    const t0 = Date.now();
    setTimeout(() => ac.abort(), 50);
    const e = await fetch.then(
      () => assert.unreachable('fetched without its holder'),
      (err: unknown) => err,
    );
    assert.ok(isFedError(e, 'closed'), String(e));
    assert.ok(Date.now() - t0 < 5_000, 'did not wait out the 60 s window');
  } finally {
    await Promise.all([p.holder.close(), p.fetcher.close()]);
  }
});

test('a transfer is resumed at most 3 times: a fourth cut fails it even though the holder is back', async () => {
  const p = await pair(5_000, blobOf(64));
  try {
    const fetch = p.fetcher.fetchBlob('client/k1', p.hash, { remoteOnly: true });
    let settled = false;
    void fetch.then(
      () => (settled = true),
      () => (settled = true),
    );
    for (let cut = 1; cut <= 4; cut++) {
      await cutAfter(p, 2 * MiB); // bytesIn of the current link
      assert.not.ok(settled, `still going after cut ${cut - 1}`);
      await new Promise((r) => setTimeout(r, 50));
      await p.holder.dial(p.endpoint);
    }
    const e = await fetch.then(
      () => assert.unreachable('a fourth cut was resumed'),
      (err: unknown) => err,
    );
    assert.ok(isFedError(e, 'closed'), String(e));
    assert.is(openJobs(), 0);
  } finally {
    await Promise.all([p.holder.close(), p.fetcher.close()]);
  }
});

test.run();
