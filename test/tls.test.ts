// TLS and mutual TLS on the gRPC and WebSocket transports: a federation whose every link is mutual
// TLS trains to the exact FedAvg result while, against the same combiner, every kind of bad peer is
// refused with a typed error: a plaintext dialer, a server certificate the dialer does not trust
// (another CA, self-signed, expired), a dialer without a client certificate, with an expired one or
// one from another CA, and a client whose certificate names k1 announcing client/k2.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startFederation } from '../src/actors/federation.ts';
import { Node } from '../src/actors/node.ts';
import { FedError, isFedError } from '../src/errors.ts';
import { createCa, devTls, issueNodeCert, selfSignedNodeCert } from '../src/security/certs.ts';
import { GrpcTransport } from '../src/transport/grpc.ts';
import type { TlsOptions } from '../src/transport/tls.ts';
import type { Transport } from '../src/transport/types.ts';
import { WsTransport } from '../src/transport/ws.ts';
import { toyLayout, toyTask, weightedMean } from './helpers/toy-task.ts';

// Node's warnings in this process: dialling by IP address must not put the IP into the TLS server name
// (RFC 6066 forbids it, and Node warns with DEP0123).
const warnings: Array<{ name: string; code?: string; message: string }> = [];
process.on('warning', (w: Error & { code?: string }) => warnings.push({ name: w.name, code: w.code, message: w.message }));

const SIZE = 8;
const target = (k: number): Float32Array => new Float32Array(SIZE).fill(k);
const kinds = ['grpc', 'ws'] as const;
type Kind = (typeof kinds)[number];

const transportOf = (kind: Kind, tls?: TlsOptions, onRefused?: (e: FedError) => void): Transport =>
  kind === 'grpc' ? new GrpcTransport({ tls, onRefused, dialTimeoutMs: 5_000 }) : new WsTransport({ tls, onRefused, dialTimeoutMs: 5_000 });

const pki = await devTls(['reducer/main', 'combiner/c1', 'client/k1', 'client/k2', 'client/k3', 'combiner/c9'], { requireClientCert: true });
const ca = pki.ca.cert;
// Certificates the federation must not accept.
const otherCa = await createCa({ commonName: 'someone else' });
const foreign = await issueNodeCert(otherCa, { role: 'client', name: 'k7' });
const hourAgo = new Date(Date.now() - 3_600_000);
const expiredClient = await issueNodeCert(pki.ca, { role: 'client', name: 'k8' }, { notBefore: new Date(Date.now() - 3 * 86_400_000), notAfter: hourAgo });
const expiredServer = await issueNodeCert(pki.ca, { role: 'combiner', name: 'c8' }, { notBefore: new Date(Date.now() - 3 * 86_400_000), notAfter: hourAgo });
const k1 = pki.forAddress('client/k1');

async function refused(what: string, attempt: Promise<unknown>, code: string, pattern?: RegExp): Promise<FedError> {
  try {
    await attempt;
  } catch (e) {
    assert.ok(isFedError(e, code as FedError['code']), `${what}: expected ${code}, got ${String(e)}`);
    if (pattern) assert.match((e as Error).message, pattern, what);
    return e as FedError;
  }
  assert.unreachable(`${what}: accepted`);
  throw new Error('unreachable');
}

for (const kind of kinds) {
  test(`${kind}: a federation on mutual TLS trains exactly while bad certificates and plaintext peers are refused with typed errors`, async () => {
    const refusedAtListeners: FedError[] = [];
    const fed = await startFederation({
      combiners: 1,
      clients: [1, 2, 3].map((k) => toyTask({ target: target(k), numExamples: 10 * k, delayMs: 30 })),
      transport: (address) => transportOf(kind, pki.forAddress(address), (e) => refusedAtListeners.push(e)),
      endpoint: () => `${kind}://127.0.0.1:0`,
    });
    const nodes: Node[] = [];
    const intruder = (name: string, address: string, tls?: TlsOptions): Node => {
      const n = new Node({ name, transport: transportOf(kind, tls) });
      n.host(address, () => undefined);
      nodes.push(n);
      return n;
    };
    try {
      await fed.ready();
      const combiner = fed.combiners[0]!;
      // Every link the combiner holds is bound to a certificate identity.
      const identities = combiner.node.openLinks.map((l) => `${l.identity?.role}/${l.identity?.subject}`).sort();
      assert.equal(identities, ['client/k1', 'client/k2', 'client/k3', 'reducer/main']);
      // The client knows its combiner by the combiner's certificate.
      assert.equal(fed.clients[0]!.node.linkTo(combiner.address)?.identity, { role: 'combiner', subject: 'c1' });

      await fed.reducer.seed({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) });
      fed.reducer.start({ sessionId: `tls-${kind}`, rounds: 3, roundTimeoutMs: 10_000 });

      const at = combiner.endpoint;
      // 1. plaintext dialer
      await refused('plaintext dialer', intruder('plain', 'client/p1').dial(at), 'unauthenticated', /requires TLS/);
      // 2. no client certificate
      await refused('no client certificate', intruder('nocert', 'client/k1', { ca }).dial(at), 'unauthenticated', /no client certificate/);
      // 3. a client certificate from another CA
      await refused('foreign client certificate', intruder('foreign', 'client/k7', { ...foreign, ca }).dial(at), 'unauthenticated', /client certificate .* rejected/);
      // 4. an expired client certificate
      await refused('expired client certificate', intruder('expired', 'client/k8', { ...expiredClient, ca }).dial(at), 'unauthenticated', /expired/i);
      // 5. k1's genuine certificate announcing client/k2: the link is refused, k2's own link stays
      await refused('k1 hosting client/k2', intruder('liar', 'client/k2', k1).dial(at), 'forbidden', /client k1 may not host client\/k2/);
      // 6. the dialer does not trust the server: another CA, a self-signed certificate, an expired one
      await refused('server from another CA', intruder('trusting-other', 'client/k1', { ...k1, ca: otherCa.cert }).dial(at), 'unauthenticated', /server certificate .* rejected/);
      for (const [what, cert] of [
        ['self-signed server', await selfSignedNodeCert({ role: 'combiner', name: 'c9' })],
        ['expired server', expiredServer],
      ] as const) {
        const bad = new Node({ name: what, transport: transportOf(kind, { ...cert, ca }) });
        nodes.push(bad);
        bad.host('combiner/c9', () => undefined);
        const listener = await bad.listen(`${kind}://127.0.0.1:0`);
        await refused(what, intruder(`to-${what}`, 'client/k1', k1).dial(listener.endpoint), 'unauthenticated', what.startsWith('expired') ? /expired/i : /self.signed/i);
      }

      const summary = await fed.reducer.finished();
      assert.is(summary.status, 'done', summary.failure);
      assert.equal(summary.rounds.map((r) => r.updates), [3, 3, 3], 'the three genuine clients in every round');
      const global = await fed.reducer.globalModel();
      const expected = weightedMean([target(1), target(2), target(3)], [10, 20, 30]);
      assert.ok(global.data.every((x, j) => Math.abs(x - expected[j]!) < 1e-5), 'exact FedAvg of the genuine updates');
      // The listener side saw the refusals it made itself, with their codes.
      const codes = new Set(refusedAtListeners.map((e) => e.code));
      assert.ok(codes.has('unauthenticated'), [...codes].join(','));
    } finally {
      await Promise.all(nodes.map((n) => n.close()));
      await fed.close();
    }
  });
}

for (const kind of kinds) {
  test(`${kind}: dialled by IP address, the server's certificate is checked against that address, and no IP goes into the TLS server name`, async () => {
    // The development certificates name localhost, 127.0.0.1 and ::1: a listener on 127.0.0.2 with one is not who the dialer asked for.
    const server = new Node({ name: 'c1', transport: transportOf(kind, pki.forAddress('combiner/c1')) });
    server.host('combiner/c1', () => undefined);
    const dialer = new Node({ name: 'k1', transport: transportOf(kind, k1) });
    dialer.host('client/k1', () => undefined);
    try {
      const good = await server.listen(`${kind}://127.0.0.1:0`);
      await dialer.dial(good.endpoint);
      assert.equal(dialer.linkTo('combiner/c1')?.identity, { role: 'combiner', subject: 'c1' });
      const elsewhere = await server.listen(`${kind}://127.0.0.2:0`);
      await refused('certificate without the dialled IP', dialer.dial(elsewhere.endpoint), 'unauthenticated', /127\.0\.0\.2|IP/);
      const sni = warnings.filter((w) => w.code === 'DEP0123');
      assert.is(sni.length, 0, sni.map((w) => w.message).join('; '));
    } finally {
      await Promise.all([server.close(), dialer.close()]);
    }
  });
}

test('TLS settings: half a key pair, or requiring client certificates without a CA, is a config error', async () => {
  const { loadTlsFiles } = await import('../src/transport/tls.ts');
  for (const files of [{ cert: '/nonexistent.crt' }, { requireClientCert: true }, { key: '/x.key', ca: '/ca.crt' }]) {
    try {
      loadTlsFiles(files);
      assert.unreachable(JSON.stringify(files));
    } catch (e) {
      assert.ok(isFedError(e, 'config'), String(e));
    }
  }
  try {
    await new GrpcTransport({ tls: { ca } }).listen('grpc://127.0.0.1:0', () => undefined);
    assert.unreachable('a TLS listener without a certificate');
  } catch (e) {
    assert.ok(isFedError(e, 'config'), String(e));
  }
});

test.run();
