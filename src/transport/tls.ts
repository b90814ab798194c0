// TLS for the socket transports (gRPC and WebSocket), and the front door both listeners share.
//
// TLS is a transport option (`tls` on GrpcTransportOptions / WsTransportOptions), not an endpoint
// scheme: endpoints stay grpc://host:port and ws://host:port, and a node configured with TLS
// listens and dials with TLS on every link. Discovery hands clients the combiner's advertised
// endpoint as before; it must name a host the combiner's certificate covers (fedstate certs puts
// localhost, 127.0.0.1, ::1 and the --hosts given into every node certificate).
//
// The listener's front door is one net.Server per listener:
//  1. per remote IP, new connections take a token from a bucket (connectionRate); without one the
//     socket is destroyed before any TLS work is done, counted and reported as 'rate-limited';
//  2. with TLS, a tls.Server (never listening itself) runs the handshake; a failed handshake (a
//     plaintext peer, an unknown protocol) is reported as 'unauthenticated';
//  3. the socket (plain, or TLS with its verdict) goes to the transport: grpc-js through a connection
//     injector, ws through a node:http server's upgrade.
//
// Mutual TLS: a listener with a CA asks every peer for a certificate and checks it against the CA
// itself (rejectUnauthorized is off in OpenSSL so that the refusal can be a typed FedError the peer
// is told about: gRPC status UNAUTHENTICATED, WebSocket HTTP 401). A certificate that does not verify
// is always refused; no certificate is refused when requireClientCert is set. A verified certificate
// naming a fedstate identity (SAN URI fedstate:client/k1, or CN client/k1) becomes the channel's
// identity, so the Link's mayHost binds the peer to its own addresses, as a token does. Dialers read
// the server's certificate the same way, so a client can tell that the node at a combiner endpoint
// really is that combiner.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { FedError, errorMessage } from '../errors.ts';
import { identityFromNames } from '../security/identity.ts';
import { KeyedLimiter, type RateSpec } from '../security/rate-limit.ts';
import type { PeerIdentity } from './types.ts';

export interface TlsOptions {
  /** PEM certificate chain of this node: required to listen, presented when dialing (mutual TLS). */
  cert?: string | Buffer;
  /** PEM private key of `cert`. */
  key?: string | Buffer;
  /** PEM CA certificate(s) peers must chain to; without it dialers trust the system's CAs. */
  ca?: string | Buffer;
  /** Listener: refuse peers without a client certificate (with a CA, presented ones are always checked). */
  requireClientCert?: boolean;
  /** Listener: how long a TLS handshake may take (default 10 s). */
  handshakeTimeoutMs?: number;
}

export interface TlsFiles {
  cert?: string;
  key?: string;
  ca?: string;
  requireClientCert?: boolean;
}

/** Reads PEM files into TlsOptions; undefined when no file is named (TLS off). */
export function loadTlsFiles(files: TlsFiles): TlsOptions | undefined {
  if (!files.cert && !files.key && !files.ca) {
    if (files.requireClientCert) throw new FedError('config', 'requiring client certificates needs a CA (--tls-ca) to check them against');
    return undefined;
  }
  if (!!files.cert !== !!files.key) throw new FedError('config', 'a TLS certificate needs its key and a key its certificate (--tls-cert and --tls-key)');
  if (files.requireClientCert && !files.ca) throw new FedError('config', 'requiring client certificates needs a CA (--tls-ca) to check them against');
  const read = (what: string, path: string | undefined): Buffer | undefined => {
    if (!path) return undefined;
    try {
      return readFileSync(path);
    } catch (e) {
      throw new FedError('config', `cannot read the TLS ${what} ${path}: ${errorMessage(e)}`);
    }
  };
  const opts: TlsOptions = { cert: read('certificate', files.cert), key: read('key', files.key), ca: read('CA certificate', files.ca), requireClientCert: files.requireClientCert };
  try {
    tls.createSecureContext({ cert: opts.cert, key: opts.key, ca: opts.ca });
  } catch (e) {
    throw new FedError('config', `bad TLS files (${[files.cert, files.key, files.ca].filter(Boolean).join(', ')}): ${errorMessage(e)}`);
  }
  return opts;
}

/**
 * Whether a dialer reaching `host` would accept this certificate's names (DNS or IP SANs): what a
 * combiner checks about the endpoint discovery hands its clients.
 */
export function certificateCovers(cert: string | Buffer, host: string): boolean {
  const x = new X509Certificate(cert);
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  return net.isIP(bare) ? x.checkIP(bare) !== undefined : x.checkHost(bare) !== undefined;
}

/** The fedstate identity a (verified) peer certificate names. */
export function identityOfCertificate(cert: tls.PeerCertificate | undefined): PeerIdentity | undefined {
  if (!cert || !cert.raw) return undefined;
  const uris = (cert.subjectaltname ?? '')
    .split(/,\s*/)
    .filter((n) => n.startsWith('URI:'))
    .map((n) => n.slice(4));
  const cn = cert.subject?.CN as string | string[] | undefined;
  return identityFromNames({ uris, commonName: Array.isArray(cn) ? cn[0] : cn });
}

export interface PeerVerdict {
  identity?: PeerIdentity;
  /** Set when the peer must be refused (its certificate failed, or none was given where required). */
  error?: FedError;
}

/** What a listener makes of a TLS peer after the handshake. */
export function verdictOf(socket: tls.TLSSocket, opts: TlsOptions, peer: string): PeerVerdict {
  if (!opts.ca) return {};
  const cert = socket.getPeerCertificate();
  const presented = !!cert && !!cert.raw;
  if (presented && !socket.authorized) {
    return { error: new FedError('unauthenticated', `client certificate of ${peer} rejected: ${String(socket.authorizationError)}`) };
  }
  if (!presented) {
    return opts.requireClientCert ? { error: new FedError('unauthenticated', `${peer} presented no client certificate; this listener requires one`) } : {};
  }
  const identity = identityOfCertificate(cert);
  if (!identity && opts.requireClientCert) {
    return { error: new FedError('unauthenticated', `client certificate of ${peer} names no fedstate identity (SAN URI fedstate:role/name or CN role/name)`) };
  }
  return { identity };
}

const certProblem = /CERT|SELF_SIGNED|UNABLE_TO|ALTNAME|HOSTNAME|PURPOSE/;
const notTls = /WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|UNKNOWN_PROTOCOL|HTTP_REQUEST|RECORD_LAYER/;

/** A dialer's TLS failure as a typed error (undefined when it is not a TLS problem). */
export function classifyTlsError(err: Error & { code?: string }, endpoint: string): FedError | undefined {
  const code = err.code ?? '';
  if (certProblem.test(code)) return new FedError('unauthenticated', `server certificate of ${endpoint} rejected: ${err.message} (${code})`, { tls: code });
  if (notTls.test(code) || notTls.test(err.message.toUpperCase().replace(/ /g, '_'))) {
    return new FedError('unauthenticated', `${endpoint} does not speak TLS (${err.message}); dial it without TLS or fix its listener`, { tls: code });
  }
  if (/ALERT/.test(code)) return new FedError('unauthenticated', `${endpoint} refused the TLS handshake: ${err.message}`, { tls: code });
  return undefined;
}

const refusalCodes = ['unauthenticated', 'forbidden', 'impersonation', 'rate-limited', 'oversized'] as const;

/**
 * A peer that closes a channel gracefully because it refused us says so in its reason
 * ("forbidden: client k1 may not host client/k2"); the channel then ends with that code rather than
 * a plain 'closed', so a dialer learns why its link was refused.
 */
export function refusalInReason(reason: string): FedError['code'] | undefined {
  const m = /^([a-z-]+): /.exec(reason);
  return m && (refusalCodes as readonly string[]).includes(m[1]!) ? (m[1] as FedError['code']) : undefined;
}

export interface DialTarget {
  host: string;
  port: number;
  endpoint: string;
  alpn?: string[];
}

/** Client options for tls.connect and the libraries built on it. */
export function clientTlsOptions(opts: TlsOptions, host: string): tls.ConnectionOptions {
  return { ca: opts.ca, cert: opts.cert, key: opts.key, servername: net.isIP(host) ? undefined : host, rejectUnauthorized: true, minVersion: 'TLSv1.2' };
}

/**
 * Why a dial failed, when TLS is the reason: a second, bare TLS handshake with the same settings
 * names the problem (an untrusted, expired or misnamed server certificate; a plaintext listener; or,
 * for a dialer without TLS, a listener that wants TLS). Runs only after a failure.
 */
export function explainDialFailure(target: DialTarget, opts: TlsOptions | undefined, timeoutMs = 3_000): Promise<FedError | undefined> {
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: target.host,
      port: target.port,
      ALPNProtocols: target.alpn,
      ...(opts ? clientTlsOptions(opts, target.host) : { rejectUnauthorized: false, servername: net.isIP(target.host) ? undefined : target.host }),
    });
    const done = (e: FedError | undefined): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(e);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    socket.once('secureConnect', () =>
      done(opts ? undefined : new FedError('unauthenticated', `${target.endpoint} requires TLS; this node dials without it (configure a CA: --tls-ca)`)),
    );
    socket.once('error', (err: Error & { code?: string }) => done(opts ? classifyTlsError(err, target.endpoint) : undefined));
  });
}

export interface FrontDoorOptions {
  host: string;
  port: number;
  /** For messages and refusals: grpc://host:port or ws://host:port. */
  endpoint: string;
  tls?: TlsOptions;
  /** ALPN protocols offered by the TLS listener (h2 for gRPC, http/1.1 for WebSocket). */
  alpn: string[];
  /** New connections per remote IP. */
  connectionRate?: RateSpec;
  /** Told about every connection refused before it reached the transport. */
  onRefused?: (error: FedError, peer: string) => void;
  /** Takes an accepted connection (TLS already done when configured). */
  deliver: (socket: net.Socket) => void;
}

export interface FrontDoor {
  readonly port: number;
  /** The verdict for a TLS connection by remote address:port (as grpc-js getPeer() writes it). */
  verdictByPeer(peer: string): PeerVerdict | undefined;
  verdictOf(socket: net.Socket): PeerVerdict | undefined;
  readonly stats: { accepted: number; rateLimited: number; handshakeFailed: number };
  /** Stops accepting connections (those accepted are the transport's to end). */
  stopAccepting(): void;
  /** Destroys every connection still open. */
  destroyAll(): void;
}

export const peerKey = (socket: net.Socket): string => `${socket.remoteAddress}:${socket.remotePort}`;

export async function openFrontDoor(opts: FrontDoorOptions): Promise<FrontDoor> {
  const limiter = new KeyedLimiter(opts.connectionRate ?? { perSecond: 0 });
  const sockets = new Set<net.Socket>();
  const verdicts = new Map<string, PeerVerdict>();
  const bySocket = new WeakMap<net.Socket, PeerVerdict>();
  const stats = { accepted: 0, rateLimited: 0, handshakeFailed: 0 };
  const refuse = (error: FedError, peer: string): void => {
    try {
      opts.onRefused?.(error, peer);
    } catch {
      // a failing observer must not take the listener down
    }
  };
  const track = (socket: net.Socket): void => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };

  let secure: tls.Server | undefined;
  if (opts.tls) {
    const t = opts.tls;
    if (!t.cert || !t.key) throw new FedError('config', `listening with TLS on ${opts.endpoint} needs a certificate and its key`);
    secure = tls.createServer({
      cert: t.cert,
      key: t.key,
      ca: t.ca,
      requestCert: !!t.ca,
      // Checked by verdictOf() instead, so a refused peer is told why in its own protocol.
      rejectUnauthorized: false,
      ALPNProtocols: opts.alpn,
      minVersion: 'TLSv1.2',
      handshakeTimeout: t.handshakeTimeoutMs ?? 10_000,
    });
    secure.on('secureConnection', (socket: tls.TLSSocket) => {
      const key = peerKey(socket);
      const verdict = verdictOf(socket, t, `${opts.endpoint.split('://')[0]}://${key}`);
      verdicts.set(key, verdict);
      bySocket.set(socket, verdict);
      socket.once('close', () => verdicts.delete(key));
      if (verdict.error) refuse(verdict.error, key);
      track(socket);
      opts.deliver(socket);
    });
    secure.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
      stats.handshakeFailed++;
      const peer = peerKey(socket);
      refuse(new FedError('unauthenticated', `TLS handshake from ${peer} on ${opts.endpoint} failed: ${err.message}`), peer);
    });
  }

  const server = net.createServer({ noDelay: true });
  server.on('connection', (socket: net.Socket) => {
    socket.on('error', () => undefined);
    const ip = socket.remoteAddress ?? '?';
    if (!limiter.take(ip)) {
      stats.rateLimited++;
      socket.destroy();
      refuse(new FedError('rate-limited', `too many new connections from ${ip} to ${opts.endpoint} (limit ${opts.connectionRate!.perSecond}/s)`), ip);
      return;
    }
    stats.accepted++;
    track(socket);
    if (secure) secure.emit('connection', socket);
    else opts.deliver(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: Error & { code?: string }) =>
      reject(new FedError(err.code === 'EADDRINUSE' ? 'conflict' : 'config', `cannot listen on ${opts.endpoint}: ${err.message}`)),
    );
    server.listen(opts.port, opts.host, () => resolve());
  });
  server.on('error', () => undefined);
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : opts.port,
    verdictByPeer: (peer) => verdicts.get(peer),
    verdictOf: (socket) => bySocket.get(socket),
    stats,
    stopAccepting: () => {
      server.close();
    },
    destroyAll: () => {
      for (const s of sockets) s.destroy();
    },
  };
}
