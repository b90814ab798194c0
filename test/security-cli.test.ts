// Security across processes: `fedstate certs` makes a development PKI, `fedstate token` mints tokens,
// and a reducer, a combiner (both --secret, mutual TLS) and two clients (--token, client
// certificates) train a session over the REST API, while clients with a wrong-role token, an expired
// token or no client certificate are refused with their codes in the reducer's log. Every child is
// killed at the end, also when a test fails.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { children, cli, node, type CliNode, writeStepTask } from './helpers/cli-nodes.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mintToken } from '../src/security/token.ts';

const dir = mkdtempSync(join(tmpdir(), 'fedstate-sec-cli-'));
const pki = join(dir, 'pki');
const SECRET = 'cli-secret-0123456789abcdef';

const tls = (stem: string): string[] => ['--tls-ca', join(pki, 'ca.crt'), '--tls-cert', join(pki, `${stem}.crt`), '--tls-key', join(pki, `${stem}.key`)];

test('certs and token commands; bad security settings are config errors', async () => {
  const made = await cli(['certs', '--out', pki, '--nodes', 'reducer,c1,k1,k2,k3,k4', '--json']);
  assert.is(made.code, 0, made.stderr);
  const out = JSON.parse(made.stdout) as { ca: string; nodes: Array<{ address: string; cert: string }> };
  assert.equal(out.nodes.map((n) => n.address), ['reducer/main', 'combiner/c1', 'client/k1', 'client/k2', 'client/k3', 'client/k4']);
  const again = await cli(['certs', '--out', pki, '--nodes', 'k1']);
  assert.is(again.code, 2);
  assert.match(again.stderr, /already holds .*client-k1\.crt.*--force/);

  const minted = await cli(['token', '--role', 'client', '--sub', 'k1', '--ttl', '3600', '--json'], { FEDSTATE_SECRET: SECRET });
  assert.is(minted.code, 0, minted.stderr);
  const t = JSON.parse(minted.stdout) as { token: string; exp: number };
  assert.match(t.token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
  assert.ok(t.exp > Date.now() / 1000);

  const cases: Array<[string[], RegExp]> = [
    [['token', '--secret', 'short', '--role', 'client', '--sub', 'k1'], /at least 16 characters/],
    [['token', '--secret', SECRET, '--role', 'wizard', '--sub', 'k1'], /--role must be one of client, combiner, reducer, admin/],
    [['reducer', '--listen', 'grpc://127.0.0.1:0', '--api', '127.0.0.1:0', '--tls-require-client-cert'], /needs a CA/],
    [['reducer', '--listen', 'grpc://127.0.0.1:0', '--api', '127.0.0.1:0', '--tls-cert', join(pki, 'reducer.crt')], /needs its key/],
    [['reducer', '--listen', 'grpc://127.0.0.1:0', '--api', '127.0.0.1:0', '--tls-ca', join(dir, 'missing.crt')], /cannot read the TLS CA certificate/],
    [['combiner', '--name', 'c1', '--reducer', 'grpc://127.0.0.1:1', '--max-frame-bytes', '1000'], /--max-frame-bytes must be >= 131072/],
    [['certs', '--out', join(dir, 'x'), '--nodes', 'bogus'], /cannot tell the role of node "bogus"/],
  ];
  const results = await Promise.all(cases.map(([args]) => cli(args)));
  results.forEach((r, i) => {
    assert.is(r.code, 2, `${cases[i]![0].join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, cases[i]![1]);
  });
});

test('a federation of processes on mutual TLS with --secret tokens trains; wrong-role, expired and certificate-less clients are refused', async () => {
  const { task, modelFile } = writeStepTask(dir);
  const secretEnv = { FEDSTATE_SECRET: SECRET };
  const reducer = node(['reducer', '--listen', 'grpc://127.0.0.1:0', '--api', '127.0.0.1:0', '--admin-token', 'admin', ...tls('reducer'), '--tls-require-client-cert'], secretEnv);
  const r = await reducer.ready;
  assert.is(r.tls, 'mutual');
  assert.is(r.auth, 'hmac-tokens');
  const combiner = node(['combiner', '--name', 'c1', '--reducer', r.endpoint!, ...tls('combiner-c1'), '--tls-require-client-cert'], secretEnv);
  const c = await combiner.ready;
  const client = (i: number, token: string, creds = tls(`client-k${i + 1}`)): CliNode =>
    node(['client', '--name', `k${i + 1}`, '--reducer', r.endpoint!, '--combiner', 'c1', '--task', task, '--clients-total', '2', '--index', String(i % 2), '--token', token, ...creds]);
  const token = async (sub: string, role = 'client'): Promise<string> => (await cli(['token', '--role', role, '--sub', sub], secretEnv)).stdout.trim();
  const clients = [client(0, await token('k1')), client(1, await token('k2'))];
  // Intruders: a combiner token on a client (with k3's genuine certificate), an expired client token,
  // and a valid token without a client certificate.
  const wrongRole = client(2, await token('k3', 'combiner'));
  const expired = client(3, mintToken(SECRET, { sub: 'k4', role: 'client', ttlSeconds: 1 }, Date.now() - 60_000));
  const noCert = client(0, await token('k1'), ['--tls-ca', join(pki, 'ca.crt')]);
  try {
    await Promise.all(clients.map((k) => k.waitLog((l) => l.msg === 'connected' && l.combiner === 'combiner/c1')));
    const impersonation = await reducer.waitLog((l) => l.msg === 'rejected' && l.code === 'impersonation');
    assert.match(JSON.stringify(impersonation), /token for combiner\/k3 over a TLS certificate for client\/k3/);
    const late = await reducer.waitLog((l) => l.msg === 'rejected' && l.code === 'unauthenticated' && /expired/.test(JSON.stringify(l)));
    assert.ok(late);
    await reducer.waitLog((l) => l.msg === 'rejected' && l.code === 'unauthenticated' && /no client certificate/.test(JSON.stringify(l)));
    for (const k of [wrongRole, expired, noCert]) assert.not.ok(k.logs.some((l) => l.msg === 'connected'), 'an intruder never got a combiner');

    const seeded = await cli(['seed', '--api', r.api!, '--file', modelFile, '--token', 'admin']);
    assert.is(seeded.code, 0, seeded.stderr);
    const started = await cli(['start', '--api', r.api!, '--token', 'admin', '--rounds', '2', '--session-id', 'secure-cli', '--wait']);
    assert.is(started.code, 0, started.stderr);
    assert.match(started.stdout, /session secure-cli done/);
    const status = JSON.parse((await cli(['status', '--api', r.api!, '--json'])).stdout) as { history: Array<{ updates: number; totalWeight: number }>; combiners: Array<{ endpoint: string }> };
    assert.equal(status.history.map((h) => h.updates), [2, 2]);
    assert.equal(status.history.map((h) => h.totalWeight), [30, 30]);
    assert.is(status.combiners[0]!.endpoint, c.endpoint, 'discovery handed out the TLS endpoint the clients dialled');
  } finally {
    for (const n of [wrongRole, expired, noCert, ...clients, combiner, reducer]) n.proc.kill('SIGTERM');
    await Promise.all([wrongRole, expired, noCert, ...clients, combiner, reducer].map((n) => n.exited));
  }
});

test.after(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

test.run();
