// Settings for an in-process development federation whose every link is secured as in production:
// a development PKI written to a temporary directory (a CA and one certificate per node), mutual TLS
// on loopback grpc or ws, and HMAC tokens on every link. What `sandbox/run.ts --tls` runs.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTransport } from '../transport/registry.ts';
import { loadTlsFiles } from '../transport/tls.ts';
import type { Transport } from '../transport/types.ts';
import { parseNodeSpec, writeDevPki, type DevPki } from './certs.ts';

export interface SecureFederationSettings {
  /** Transport factory for startFederation: each node its own certificate. */
  transport: (address: string) => Transport;
  endpoint: () => string;
  /** Tokens on every link, verified by the reducer and the combiners. */
  auth: { secret: string };
  /** Where the certificates are (removed when the process exits). */
  dir: string;
}

/**
 * A development CA and one certificate per node of a sandbox federation (reducer/main, combiner/c1..,
 * client/k1..), written to `dir`.
 */
export function writeFederationPki(dir: string, size: { combiners: number; clients: number }): Promise<DevPki> {
  const addresses = ['reducer/main', ...Array.from({ length: size.combiners }, (_, i) => `combiner/c${i + 1}`), ...Array.from({ length: size.clients }, (_, i) => `client/k${i + 1}`)];
  return writeDevPki(dir, addresses.map(parseNodeSpec));
}

export async function secureFederation(kind: 'grpc' | 'ws', size: { combiners: number; clients: number }): Promise<SecureFederationSettings> {
  const dir = mkdtempSync(join(tmpdir(), 'fedstate-tls-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const pki = await writeFederationPki(dir, size);
  const files = new Map(pki.nodes.map((n) => [`${n.role}/${n.name}`, n]));
  return {
    transport: (address) => {
      const n = files.get(address);
      const tls = loadTlsFiles({ ca: pki.ca, cert: n?.cert, key: n?.key, requireClientCert: true });
      return createTransport(kind, { [kind]: { tls } });
    },
    endpoint: () => `${kind}://127.0.0.1:0`,
    auth: { secret: randomBytes(24).toString('base64url') },
    dir,
  };
}
