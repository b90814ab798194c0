// A development PKI for TLS between nodes: one CA and a certificate per node, made in pure JS with
// @peculiar/x509 (X.509 encoding in TypeScript on top of WebCrypto, so keys come from Node's own
// crypto: ECDSA P-256, generated in a millisecond, no openssl binary needed).
//
// A node certificate names its fedstate identity twice: as the subject CN `role/name` and as a SAN
// URI `fedstate:role/name`. The transports read it from a verified peer certificate and make it the
// channel's identity, so `mayHost` binds a peer to its own addresses exactly as a token does. Server
// names (DNS and IP SANs) cover localhost, 127.0.0.1 and ::1 plus the hosts asked for.
import { webcrypto } from 'node:crypto';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
// @peculiar/x509 resolves its algorithm providers through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { FedError } from '../errors.ts';
import type { TlsOptions } from '../transport/tls.ts';
import { identityFromNames, nodeRoles, type NodeRole } from './identity.ts';

const crypto = webcrypto as unknown as Crypto;
x509.cryptoProvider.set(crypto);

const KEY_ALG: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGN_ALG: EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
const DAY_MS = 86_400_000;

export { identityFromNames, type NodeRole };

export interface NodeSpec {
  role: NodeRole;
  /** Actor name: `main` for the reducer, the combiner's or client's name otherwise ("*" suffix: a prefix). */
  name: string;
}

/** The URI SAN naming a fedstate identity. */
export const identityUri = (spec: NodeSpec): string => `fedstate:${spec.role}/${spec.name}`;

/**
 * `reducer`, `combiner/c1`, `client/k1` (or `role:name`); shorthands: `c<digits>` is a combiner and
 * `k<digits>` a client, as the sandbox and the docs name them.
 */
export function parseNodeSpec(text: string): NodeSpec {
  const t = text.trim();
  if (t === 'reducer' || t === 'reducer/main' || t === 'reducer:main') return { role: 'reducer', name: 'main' };
  const m = /^([a-z]+)[/:]([A-Za-z0-9._-]+\*?)$/.exec(t);
  if (m) {
    const role = m[1] as NodeRole;
    if (!nodeRoles.includes(role)) throw new FedError('config', `unknown role "${m[1]}" in "${text}" (use ${nodeRoles.join(', ')})`);
    if (role === 'reducer' && m[2] !== 'main') throw new FedError('config', `the reducer's actor is reducer/main, not "${text}"`);
    return { role, name: m[2]! };
  }
  if (/^c\d+$/.test(t)) return { role: 'combiner', name: t };
  if (/^k\d+$/.test(t)) return { role: 'client', name: t };
  throw new FedError('config', `cannot tell the role of node "${text}": write reducer, combiner/NAME or client/NAME (c1, k1 are short for combiner/c1, client/k1)`);
}

/** File stem of a node's certificate and key: reducer, combiner-c1, client-k1. */
export const fileStem = (spec: NodeSpec): string => (spec.role === 'reducer' ? 'reducer' : `${spec.role}-${spec.name.replace(/\*/g, 'ALL')}`);

export interface Issued {
  /** PEM certificate. */
  cert: string;
  /** PEM PKCS#8 private key. */
  key: string;
}

export interface CertificateAuthority extends Issued {
  keys: CryptoKeyPair;
  certificate: x509.X509Certificate;
}

export interface Validity {
  /** Defaults to one hour ago (clock skew between hosts). */
  notBefore?: Date;
  /** Defaults to notBefore + days. */
  notAfter?: Date;
  days?: number;
}

function validity(v: Validity, defaultDays: number): { notBefore: Date; notAfter: Date } {
  const notBefore = v.notBefore ?? new Date(Date.now() - 3_600_000);
  const notAfter = v.notAfter ?? new Date(notBefore.getTime() + (v.days ?? defaultDays) * DAY_MS);
  if (notAfter <= notBefore) throw new FedError('config', 'a certificate must end after it begins');
  return { notBefore, notAfter };
}

const serial = (): string => {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0]! &= 0x7f; // a positive INTEGER
  return Buffer.from(bytes).toString('hex');
};

async function pemKey(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await crypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n?$/, '\n')}-----END PRIVATE KEY-----\n`;
}

const escapeDn = (v: string): string => v.replace(/([,+"\\<>;=])/g, '\\$1');

/** A self-signed CA certificate (valid 10 years by default) and its key. */
export async function createCa(opts: Validity & { commonName?: string } = {}): Promise<CertificateAuthority> {
  const keys = (await crypto.subtle.generateKey(KEY_ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const name = `CN=${escapeDn(opts.commonName ?? 'fedstate development CA')}`;
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name,
    keys,
    signingAlgorithm: SIGN_ALG,
    ...validity(opts, 3650),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: certificate.toString('pem') + '\n', key: await pemKey(keys.privateKey), keys, certificate };
}

/** Loads a CA from PEM (as written by writeDevPki) to issue more certificates with it. */
export async function loadCa(certPem: string, keyPem: string): Promise<CertificateAuthority> {
  const certificate = new x509.X509Certificate(certPem);
  const der = Buffer.from(keyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  const privateKey = await crypto.subtle.importKey('pkcs8', der, KEY_ALG, true, ['sign']);
  const publicKey = await certificate.publicKey.export(KEY_ALG, ['verify'], crypto);
  return { cert: certPem, key: keyPem, keys: { privateKey, publicKey }, certificate };
}

export interface NodeCertOptions extends Validity {
  /** Extra server names (DNS names or IP addresses) besides localhost, 127.0.0.1 and ::1. */
  hosts?: string[];
}

/**
 * A certificate for one node, signed by `ca`: usable as a server (combiners and the reducer listen)
 * and as a TLS client (every node dials). Valid 1 year by default.
 */
export function issueNodeCert(ca: CertificateAuthority, spec: NodeSpec, opts: NodeCertOptions = {}): Promise<Issued> {
  return nodeCert(ca, spec, opts);
}

/** A node certificate signed by its own key (no CA vouches for it): what a dialer must refuse. */
export function selfSignedNodeCert(spec: NodeSpec, opts: NodeCertOptions = {}): Promise<Issued> {
  return nodeCert(undefined, spec, opts);
}

async function nodeCert(ca: CertificateAuthority | undefined, spec: NodeSpec, opts: NodeCertOptions): Promise<Issued> {
  const keys = (await crypto.subtle.generateKey(KEY_ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const hosts = [...new Set(['localhost', '127.0.0.1', '::1', ...(opts.hosts ?? [])])];
  for (const h of hosts) {
    if (!isIP(h) && !/^(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(h)) throw new FedError('config', `"${h}" is neither a host name nor an IP address`);
  }
  const names: x509.JsonGeneralName[] = [
    { type: 'url', value: identityUri(spec) },
    ...hosts.map((h): x509.JsonGeneralName => (isIP(h) ? { type: 'ip', value: h } : { type: 'dns', value: h })),
  ];
  const subject = `CN=${escapeDn(`${spec.role}/${spec.name}`)}, O=fedstate`;
  const issuerKey = ca?.keys ?? keys;
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject,
    issuer: ca?.certificate.subject ?? subject,
    publicKey: keys.publicKey,
    signingKey: issuerKey.privateKey,
    signingAlgorithm: SIGN_ALG,
    ...validity(opts, 365),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension(names),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(issuerKey.publicKey),
    ],
  });
  return { cert: certificate.toString('pem') + '\n', key: await pemKey(keys.privateKey) };
}

export interface DevPki {
  dir: string;
  /** Path of the CA certificate (what every node's --tls-ca names). */
  ca: string;
  nodes: Array<NodeSpec & { cert: string; key: string }>;
}

/**
 * Writes a development CA (ca.crt, ca.key) and one certificate and key per node (reducer.crt,
 * combiner-c1.crt, client-k1.key, ...) into `dir`. Keys are written readable by the owner only.
 */
export async function writeDevPki(dir: string, nodes: NodeSpec[], opts: NodeCertOptions & { ca?: CertificateAuthority; writeCa?: boolean } = {}): Promise<DevPki> {
  mkdirSync(dir, { recursive: true });
  const ca = opts.ca ?? (await createCa());
  const write = (name: string, text: string, secret = false): string => {
    const path = join(dir, name);
    writeFileSync(path, text, { mode: secret ? 0o600 : 0o644 });
    if (secret) chmodSync(path, 0o600);
    return path;
  };
  const caPath = write('ca.crt', ca.cert);
  if (opts.writeCa ?? !opts.ca) write('ca.key', ca.key, true);
  const out: DevPki['nodes'] = [];
  for (const spec of nodes) {
    const issued = await issueNodeCert(ca, spec, opts);
    const stem = fileStem(spec);
    out.push({ ...spec, cert: write(`${stem}.crt`, issued.cert), key: write(`${stem}.key`, issued.key, true) });
  }
  return { dir, ca: caPath, nodes: out };
}

/** `reducer/main`, `combiner/c1`, `client/k1` -> NodeSpec (the addresses the federation factory passes). */
export function specOfAddress(address: string): NodeSpec {
  return parseNodeSpec(address);
}

/**
 * In-memory TLS settings for a development federation: one CA, and for each address a certificate
 * (server and client use) with the CA to verify peers. For tests and `sandbox/run.ts --tls`.
 */
export async function devTls(
  addresses: string[],
  opts: NodeCertOptions & { requireClientCert?: boolean } = {},
): Promise<{ ca: CertificateAuthority; forAddress: (address: string) => TlsOptions }> {
  const ca = await createCa();
  const issued = new Map<string, Issued>();
  for (const a of addresses) issued.set(a, await issueNodeCert(ca, specOfAddress(a), opts));
  return {
    ca,
    forAddress: (address) => {
      const mine = issued.get(address);
      if (!mine) throw new FedError('config', `no development certificate for ${address} (made for ${[...issued.keys()].join(', ')})`);
      return { cert: mine.cert, key: mine.key, ca: ca.cert, requireClientCert: opts.requireClientCert };
    },
  };
}
