// The `fedstate` node and admin commands as real processes: bad settings fail fast with exit code 2
// and a clear message; a reducer, a combiner and two clients (running a user --task module) train a
// session driven by seed/start/status/stop over the REST API; tokens are enforced; SIGTERM closes a
// node cleanly. Every child is killed at the end, also when a test fails.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { children, cli, node, writeStepTask } from './helpers/cli-nodes.ts';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'fedstate-cli-'));

test('bad settings: exit code 2 and a message that names the problem', async () => {
  const cases: Array<[string[], NodeJS.ProcessEnv, RegExp]> = [
    [['nope'], {}, /unknown command "nope"/],
    [['reducer', '--lisen', 'grpc://127.0.0.1:0'], {}, /unknown flag --lisen; valid flags: --listen/],
    [['combiner', '--reducer', 'grpc://127.0.0.1:1'], {}, /combiner needs --name or FEDSTATE_NAME/],
    [['combiner', '--name', 'c1', '--reducer', 'grpc://127.0.0.1:1', '--listen', 'ws://127.0.0.1:0'], {}, /ws:\/\/127.0.0.1:0 is ws but grpc:\/\/127.0.0.1:1 is grpc/],
    [['combiner', '--name', 'c1', '--reducer', 'grpc://127.0.0.1:1', '--listen', 'grpc://0.0.0.0:0'], {}, /give --advertise HOST/],
    [['combiner', '--name', 'c1', '--reducer', 'grpc://127.0.0.1:1', '--max-clients', 'many'], {}, /--max-clients must be a number/],
    [['client', '--name', 'k1', '--reducer', 'grpc://127.0.0.1:1', '--clients-total', '2', '--index', '2'], {}, /--index 2 must be below --clients-total 2/],
    [['client', '--name', 'k1'], { FEDSTATE_REDUCER_ENDPONT: 'grpc://127.0.0.1:1' }, /unknown environment variable FEDSTATE_REDUCER_ENDPONT \(did you mean FEDSTATE_REDUCER_ENDPOINT\?\)/],
    [['client', '--name', 'k1', '--reducer', 'grpc://127.0.0.1:1', '--task', join(dir, 'missing.mjs')], {}, /cannot load task module/],
    [['start', '--rounds', '0'], {}, /--rounds: rounds must be >= 1/],
    [['start', '--rouns', '2'], {}, /unknown flag --rouns/],
    [['status', '--api', 'http://127.0.0.1:9'], {}, /cannot reach the reducer API at http:\/\/127.0.0.1:9/],
    [['seed', '--model', 'mlp', '--file', 'x.bin'], {}, /give --model or --file, not both/],
  ];
  writeFileSync(join(dir, 'bad.json'), JSON.stringify({ name: 'c1', reducer: 'grpc://127.0.0.1:1' }));
  cases.push([['combiner', '--config', join(dir, 'bad.json')], {}, /unknown key "reducer" in config file .*did you mean "reducerEndpoint"/]);
  const results = await Promise.all(cases.map(([args, env]) => cli(args, env)));
  results.forEach((r, i) => {
    const [args, , pattern] = cases[i]!;
    assert.is(r.code, 2, `${args.join(' ')} exits 2 (stderr: ${r.stderr})`);
    assert.match(r.stderr, pattern, `${args.join(' ')}: ${r.stderr}`);
  });
});

test('--help lists every setting with its variable and file key', async () => {
  const r = await cli(['client', '--help']);
  assert.is(r.code, 0);
  assert.match(r.stdout, /--reducer <string>.*FEDSTATE_REDUCER_ENDPOINT; file key "reducerEndpoint"/);
  assert.match(r.stdout, /--task <string>/);
});

test('a federation of processes: tokens enforced, session driven over the API, clean SIGTERM', async () => {
  // A tiny user task: every client moves each weight by (index + 1) and reports (index + 1) * 10 examples.
  const { task, modelFile } = writeStepTask(dir);
  // Listen and API from a config file, the admin token from the environment: all three sources at once.
  const cfg = join(dir, 'reducer.json');
  writeFileSync(cfg, JSON.stringify({ listen: 'grpc://127.0.0.1:0', apiListen: '127.0.0.1:0', token: 'file-token' }));
  const reducer = node(['reducer', '--config', cfg, '--token', 'link-token'], { FEDSTATE_ADMIN_TOKEN: 'admin' });
  const r = await reducer.ready;
  assert.match(r.endpoint!, /^grpc:\/\/127\.0\.0\.1:\d+$/);
  assert.not.match(r.endpoint!, /:0$/, 'the real port is reported');
  const api = r.api!;

  // A combiner with the wrong token is refused, and the reducer logs why.
  const intruder = node(['combiner', '--name', 'bad', '--reducer', r.endpoint!, '--token', 'file-token']);
  const refusal = await reducer.waitLog((l) => l.msg === 'rejected');
  assert.is(refusal.code, 'unauthenticated');
  intruder.proc.kill('SIGKILL');

  // Listening on every interface, the combiner announces the address clients can dial, with its real port.
  const combiner = node(['combiner', '--name', 'c1', '--reducer', r.endpoint!, '--token', 'link-token', '--listen', 'grpc://0.0.0.0:0', '--advertise', '127.0.0.1']);
  const c = await combiner.ready;
  assert.match(c.endpoint!, /^grpc:\/\/127\.0\.0\.1:\d+$/);
  assert.not.match(c.endpoint!, /:0$/);
  const clients = [0, 1].map((i) => node(['client', '--name', `k${i + 1}`, '--reducer', r.endpoint!, '--combiner', 'c1', '--task', task, '--clients-total', '2', '--index', String(i)], { FEDSTATE_TOKEN: 'link-token' }));
  await Promise.all(clients.map((k) => k.ready));
  await Promise.all(clients.map((k) => k.waitLog((l) => l.msg === 'connected' && l.combiner === 'combiner/c1')));

  const status = async (): Promise<{ state: string; combiners: Array<{ name: string; connected: boolean; clients: string[]; endpoint: string }> }> => JSON.parse((await cli(['status', '--api', api, '--json'])).stdout);
  for (let i = 0; (await status()).combiners.find((x) => x.name === 'combiner/c1')?.clients.length !== 2; i++) {
    assert.ok(i < 100, 'both clients registered');
    await new Promise((res) => setTimeout(res, 100));
  }
  assert.is((await status()).combiners.find((x) => x.name === 'combiner/c1')?.endpoint, c.endpoint, 'discovery hands out the advertised endpoint');

  // Writes need the admin token; starting before seeding is a conflict.
  const noToken = await cli(['seed', '--api', api, '--file', modelFile]);
  assert.is(noToken.code, 2);
  assert.match(noToken.stderr, /unauthenticated: 401/);
  const early = await cli(['start', '--api', api, '--token', 'admin', '--rounds', '2']);
  assert.match(early.stderr, /conflict: 409 .*no seed model/);
  const stopNothing = await cli(['stop', '--api', api, '--token', 'admin']);
  assert.match(stopNothing.stderr, /not-found: the reducer has no session to stop/);

  const seeded = await cli(['seed', '--api', api, '--file', modelFile, '--json'], { FEDSTATE_ADMIN_TOKEN: 'admin' });
  assert.is(seeded.code, 0, seeded.stderr);
  assert.match(JSON.parse(seeded.stdout).modelId, /^[0-9a-f]{64}$/);

  const started = await cli(['start', '--api', api, '--token', 'admin', '--rounds', '2', '--session-id', 'cli-1', '--validate', '--wait']);
  assert.is(started.code, 0, started.stderr);
  assert.match(started.stdout, /started session cli-1/);
  assert.match(started.stdout, /\n\s+1  ok\s+/);
  assert.match(started.stdout, /\n\s+2  ok\s+/);
  assert.match(started.stdout, /session cli-1 done/);

  const text = (await cli(['status', '--api', api])).stdout;
  assert.match(text, /state\s+done/);
  assert.match(text, /session\s+cli-1: 2\/2 rounds committed/);
  assert.match(text, /combiner\/c1\s+.*2 client\(s\): client\/k\d, client\/k\d/);
  assert.match(text, /round\s+status\s+accuracy/);
  const json = JSON.parse((await cli(['status', '--api', api, '--json'])).stdout) as { history: Array<{ updates: number; totalWeight: number; trainMetrics: Record<string, number> }> };
  assert.equal(json.history.map((h) => h.updates), [2, 2]);
  assert.equal(json.history.map((h) => h.totalWeight), [30, 30]);

  // The nodes logged their rounds.
  const round = await reducer.waitLog((l) => l.msg === 'round' && l.round === 2);
  assert.is(round.status, 'ok');
  await combiner.waitLog((l) => l.msg === 'round' && l.round === 2 && l.accepted === 2);
  await clients[0]!.waitLog((l) => l.msg === 'task done');

  // SIGTERM: each node closes cleanly and exits 0.
  for (const n of [...clients, combiner, reducer]) n.proc.kill('SIGTERM');
  const codes = await Promise.all([...clients, combiner, reducer].map((n) => n.exited));
  assert.equal(codes, [0, 0, 0, 0]);
  for (const n of [...clients, combiner, reducer]) assert.ok(n.logs.some((l) => l.msg === 'closed'), 'logged a clean close');
});

test.after(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

test.run();
