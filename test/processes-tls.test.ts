// `sandbox/run.ts --processes --tls`: every node its own process and its own certificate from a
// development PKI, mutual TLS on every link (listeners require client certificates) plus tokens. The
// session must run to the end, and every node must say it runs with TLS.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sandbox } from './processes-helper.ts';

const dir = mkdtempSync(join(tmpdir(), 'fedstate-processes-tls-'));

/** The `tls` field of a node's "ready" log line. */
function tlsMode(log: string): string | undefined {
  for (const line of readFileSync(log, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    const rec = JSON.parse(line) as { msg?: string; tls?: string };
    if (rec.msg === 'ready') return rec.tls;
  }
  return undefined;
}

test('--processes --tls over ws: a session completes with mutual TLS on every link', async () => {
  const out = join(dir, 'out');
  const s = await sandbox(['--processes', '--tls', '--transport', 'ws', '--rounds', '2', '--clients', '3', '--combiners', '2', '--local-epochs', '1', '--out', out], 90_000);
  assert.is(s.status, 'done');
  assert.is(s.trailVerified, true);
  assert.equal(s.stragglers, []);
  assert.ok((s as unknown as { tls: boolean }).tls);
  for (const r of s.rounds) assert.is(r.updates, 3);
  assert.ok(existsSync(join(out, 'pki', 'ca.crt')) && existsSync(join(out, 'pki', 'client-k3.key')), 'the PKI is in OUT/pki');
  assert.is(tlsMode(join(out, 'logs', 'reducer.log')), 'mutual');
  for (const c of ['c1', 'c2']) assert.is(tlsMode(join(out, 'logs', `combiner-${c}.log`)), 'mutual', c);
  for (const k of ['k1', 'k2', 'k3']) assert.ok(tlsMode(join(out, 'logs', `client-${k}.log`)), `${k} dials with TLS`);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
