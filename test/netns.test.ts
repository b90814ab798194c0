// Multi-host run on one machine: the reducer, two combiners and three clients each in their own network
// namespace (test/helpers/netns.ts: veth links to a bridge, 10.77.S.x), every node started as
// `ip netns exec <ns> node bin/fedstate.js …` over gRPC; clients run the light task module in
// test/helpers/netns.ts (no TF.js, 1.5 s per round) so the six processes start quickly. Mid-round the link of the combiner holding
// the most clients is cut (`ip link set <its veth> down`) and restored a few seconds later; the session
// must complete and the trail verify. What the cut did (links dropped or not, clients moved, round
// times) is printed.
//
// Needs root and `ip` (iproute2): skipped with the reason otherwise. CI runs as root, so it runs there.
// FEDSTATE_TEST_NETNS_CUT_MS sets how long the link stays down (default 5000); FEDSTATE_TEST_NETNS_LOGS=DIR
// keeps the nodes' logs there.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { callApi, connectedClients, type ApiStatus } from '../src/cli/common.ts';
import { followSession } from '../src/cli/follow.ts';
import { encodeModel } from '../src/model/codec.ts';
import { openStore, verifyTrail } from '../src/store/index.ts';
import { Supervisor, type LogLine } from '../sandbox/processes.ts';
import { createTopology, leftovers, netnsUnavailable, toySeed, type Topology } from './helpers/netns.ts';

const run = promisify(execFile);
const unavailable = netnsUnavailable();
const CUT_MS = Number(process.env.FEDSTATE_TEST_NETNS_CUT_MS ?? 5_000);
const ROUNDS = 4;
const CLIENTS = 3;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, get: () => Promise<T | undefined> | T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/**
 * Starts the six hosts, runs a ROUNDS-round session, cuts the link of the combiner holding the most
 * clients for `cutMs` once round 2 trains, and checks that the session completes, the trail verifies
 * and nothing is left behind. Returns the round records for scenario-specific checks.
 */
async function cutScenario(cutMs: number, minClients = 1): Promise<ApiStatus['history']> {
  const t0 = Date.now();
  const since = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
  const dir = mkdtempSync(join(tmpdir(), 'fedstate-netns-'));
  const store = join(dir, 'store');
  let topo: Topology | undefined;
  let sup: Supervisor | undefined;
  const lines: LogLine[] = [];
  const polling = new AbortController();
  let history: ApiStatus['history'] = [];
  try {
    topo = createTopology(['r', 'c1', 'c2', 'k1', 'k2', 'k3']);
    const t = topo;
    const at = (h: string) => t.hosts[h]!.addr;
    console.log(`  namespaces up at ${since()}: ${Object.values(t.hosts).map((h) => `${h.name}=${h.addr}`).join(' ')} (operator ${t.operatorAddr})`);
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FEDSTATE_') || k === 'FEDSTATE_TF_BACKEND'));
    sup = new Supervisor(join(dir, 'logs'), env);
    sup.onLogLine((l) => lines.push(l));
    const s = sup;
    const token = randomBytes(12).toString('hex');
    const admin = randomBytes(12).toString('hex');
    const reducerEp = `grpc://${at('r')}:7000`;
    const reducer = s.start('reducer', ['reducer', '--listen', reducerEp, '--api', `${at('r')}:8092`, '--store', store, '--token', token, '--admin-token', admin, '--evaluate', 'none'], { prefix: t.exec('r'), viaBin: true });
    const api = String((await reducer.ready).api);
    for (const c of ['c1', 'c2']) s.start(`combiner-${c}`, ['combiner', '--name', c, '--listen', `grpc://${at(c)}:7100`, '--reducer', reducerEp, '--token', token], { prefix: t.exec(c), viaBin: true });
    // Clients start once both combiners are registered, so discovery spreads them (least-packed).
    await until('both combiners registered', async () => {
      const st = await callApi<ApiStatus>(api, 'api/status');
      return st.combiners.filter((c) => c.connected).length >= 2 ? st : undefined;
    }, 60_000);
    for (let i = 0; i < CLIENTS; i++) {
      const k = `k${i + 1}`;
      s.start(`client-${k}`, ['client', '--name', k, '--reducer', reducerEp, '--token', token, '--task', 'test/helpers/netns.ts', '--clients-total', String(CLIENTS), '--index', String(i)], { prefix: t.exec(k), viaBin: true });
    }
    await Promise.all(s.children.map((c) => c.ready));
    const ready = await until('every client registered', async () => {
      const st = await callApi<ApiStatus>(api, 'api/status');
      return connectedClients(st) >= CLIENTS ? st : undefined;
    }, 60_000);
    console.log(`  all nodes up at ${since()}`);
    const victim = [...ready.combiners].sort((a, b) => b.clients.length - a.clients.length)[0]!;
    const victimHost = victim.name.replace('combiner/', '');
    console.log(`  placement: ${ready.combiners.map((c) => `${c.name} at ${c.endpoint}: ${c.clients.join(', ')}`).join('; ')}`);

    await callApi(api, 'api/models/seed', { body: encodeModel(toySeed()), token: admin });
    const { sessionId } = await callApi<{ sessionId: string }>(api, 'api/sessions', { json: { sessionId: 'netns', rounds: ROUNDS, roundTimeoutMs: 20_000, quorumTimeoutMs: 60_000, minClients, localEpochs: 1, batchSize: 20, learningRate: 0.2, seed: 1 }, token: admin });
    const started = Date.now();
    const following = followSession(api, { sessionId, unreachableMs: 60_000, signal: polling.signal });
    following.catch(() => undefined);

    // Round 2 under way: the reducer says so and one of the victim's clients is training it.
    await until('round 2 training on the victim', () => lines.find((l) => l.msg === 'task' && Number(l.rec.round) === 2 && victim.clients.includes(`client/${l.child.replace('client-', '')}`)), 60_000);
    const cutAt = Date.now();
    t.cut(victimHost);
    console.log(`  cut ${victim.name}'s link (${t.hosts[victimHost]!.hubIf} down) at ${((cutAt - started) / 1000).toFixed(1)} s, in round 2, for ${cutMs} ms`);
    await sleep(cutMs);
    t.restore(victimHost);
    console.log(`  restored at ${((Date.now() - started) / 1000).toFixed(1)} s`);

    let limit: NodeJS.Timeout | undefined;
    const final = await Promise.race([following, new Promise<never>((_, reject) => (limit = setTimeout(() => reject(new Error('session did not end within 75 s of the cut')), 75_000)))]).finally(() => clearTimeout(limit));
    const doneAt = Date.now();
    console.log(`  session ${final.state}${final.failure ? ` (${final.failure})` : ''} ${((doneAt - started) / 1000).toFixed(1)} s after it started`);
    for (const r of final.history) console.log(`    round ${r.round}: ${r.status}${r.reason ? ` (${r.reason})` : ''}, ${r.updates} updates, combiners ${r.participants.join(' ')}, rejected ${JSON.stringify(r.rejected)}, ${r.endedAt - r.startedAt} ms`);
    const seen = (msg: string, child?: string) => lines.filter((l) => l.msg === msg && l.time >= cutAt && (!child || l.child === child));
    const drops = [...seen('link down'), ...seen('combiner left'), ...seen('disconnected'), ...seen('client left')];
    console.log(drops.length ? `  during/after the cut: ${drops.map((l) => `${l.child} ${l.msg}${l.rec.combiner ? ` ${String(l.rec.combiner)}` : ''}${l.rec.client ? ` ${String(l.rec.client)}` : ''} at +${l.time - cutAt} ms`).join('; ')}` : '  no link was dropped: the connections rode out the cut (TCP retransmits once the link is back)');

    assert.is(final.state, 'done', final.failure);
    assert.is(final.history.filter((r) => r.status === 'ok').length, ROUNDS, 'every round committed');
    for (const r of final.history) assert.ok(r.updates <= CLIENTS, `round ${r.round}: at most one update per client`);
    history = final.history;
  } finally {
    polling.abort();
    await sup?.stopAll();
    topo?.teardown();
    console.log(`  processes stopped and namespaces removed at ${since()}`);
  }
  try {
    assert.equal(leftovers(), [], 'no namespace or link left behind');
    const db = await openStore({ dir: store });
    try {
      assert.equal(await verifyTrail(db), { ok: true, entries: ROUNDS + 1 });
    } finally {
      await db.close();
    }
    const verify = await run(process.execPath, ['bin/fedstate.js', 'trail', 'verify', '--store', store]);
    assert.match(verify.stdout, new RegExp(`^trail ok: ${ROUNDS + 1} entries`));
    console.log(`  trail verified at ${since()}`);
  } finally {
    const keep = process.env.FEDSTATE_TEST_NETNS_LOGS;
    if (keep) {
      rmSync(keep, { recursive: true, force: true });
      cpSync(join(dir, 'logs'), keep, { recursive: true });
      console.log(`  logs kept in ${keep}`);
    }
    rmSync(dir, { recursive: true, force: true });
  }
  return history;
}

const name = "namespaces: a combiner's link cut mid-round and restored; the session completes and the trail verifies";
const orphans =
  'after a cut longer than the combiner\'s client timeout (10 s) but shorter than transport keepalive detection (~20 s), the cut combiner\'s clients say hello again and train in later rounds';

if (unavailable) {
  console.log(`  SKIP netns tests: ${unavailable}`);
  test.skip(name, () => undefined);
  test.skip(orphans, () => undefined);
} else {
  test(name, async () => {
    await cutScenario(CUT_MS);
  });
  // Once a bug (fixed: a heartbeat from a non-member now gets a ClientBye, and the client greets again): during a 14 s cut the combiner drops its clients from
  // membership on its heartbeat timeout (clientTimeoutMs 10 s), but no transport link goes down (grpc
  // keepalive needs ~20 s), so when the link is back the clients still believe they are connected: their
  // heartbeats reach the combiner, which ignores heartbeats from non-members, and nothing tells them to
  // say hello again or rediscover. The combiner has no members, the reducer leaves it out of every later
  // round, and those clients never train again (measured: rounds 3 and 4 had 1 update of 3).
  // Expected: a heartbeat (or any message) from a dropped client gets it re-admitted or told to reconnect.
  // With a quorum of every client (minClients), a round after the cut starts only once the dropped
  // clients have greeted again, so the last round must have all their updates; without it the last
  // round could start before they were back (seen in CI: last rounds with 1 then 2 of 3 updates).
  test(orphans, async () => {
    const history = await cutScenario(14_000, CLIENTS);
    assert.is(history.at(-1)!.updates, CLIENTS, `last round: ${JSON.stringify(history.map((r) => [r.round, r.updates]))}`);
  });
}

test.run();
