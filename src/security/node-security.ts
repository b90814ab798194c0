// Turns a node command's security and limit settings into what its Node and listeners take: the
// transport (TLS, per-IP connection rate, frame size) wrapped in the per-link limits, the token the
// node presents, the authenticator that verifies its peers, and the Link's model-size and chunk sizes.
import { FedError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { DEFAULT_MAX_FRAME_BYTES } from '../transport/chunk-frame.ts';
import type { LinkOptions } from '../transport/link.ts';
import { parseEndpoint } from '../transport/endpoint.ts';
import { createTransport } from '../transport/registry.ts';
import { loadTlsFiles, type TlsOptions } from '../transport/tls.ts';
import { CHUNK_BYTES, type FrameChannel, type Transport } from '../transport/types.ts';
import { linkAuthenticator } from './authenticate.ts';
import { limitTransport } from './limits.ts';
import { mintToken, type Role } from './token.ts';

export interface SecuritySettings {
  secret?: string;
  token?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsRequireClientCert?: boolean;
  maxFrameBytes: number;
  maxModelBytes: number;
  requestRate: number;
  maxWindow: number;
  connectionRate?: number;
  resumeWithinMs?: number;
}

export interface NodeSecurity {
  transport: Transport;
  tls: TlsOptions | undefined;
  /** Presented in this node's hellos. */
  token?: string;
  authenticate?: LinkOptions['authenticate'];
  link: Pick<LinkOptions, 'maxBlobBytes' | 'chunkBytes'>;
  /** Node option: how long a cut transfer waits to resume. */
  resumeWithinMs?: number;
  /** For the readiness line and logs: what is on. */
  summary: Record<string, unknown>;
}

/**
 * Logs refusals at most once a second per code and peer, with how many were folded in: a flood must
 * not become a flood of log lines.
 */
export function refusalLogger(log: Logger): (error: FedError, peer: string) => void {
  const last = new Map<string, { at: number; folded: number }>();
  return (error, peer) => {
    const key = `${error.code} ${peer}`;
    const now = Date.now();
    const seen = last.get(key);
    if (seen && now - seen.at < 1_000) {
      seen.folded++;
      return;
    }
    if (last.size > 10_000) last.clear();
    last.set(key, { at: now, folded: 0 });
    log.warn({ code: error.code, peer, folded: seen?.folded ?? 0, error: { code: error.code, message: error.message } }, 'rejected');
  };
}

export function nodeSecurity(endpoint: string, s: SecuritySettings, self: { role: Exclude<Role, 'admin'>; name: string }, log: Logger): NodeSecurity {
  const kind = parseEndpoint(endpoint).kind;
  const tls = loadTlsFiles({ cert: s.tlsCert, key: s.tlsKey, ca: s.tlsCa, requireClientCert: s.tlsRequireClientCert });
  if (tls && !tls.ca && self.role === 'client') throw new FedError('config', 'a client dialing with TLS needs --tls-ca (the CA that signed the servers\' certificates)');
  const refused = refusalLogger(log);
  const rate = (n: number | undefined) => (n ? { perSecond: n, burst: Math.max(1, Math.ceil(2 * n)) } : { perSecond: 0 });
  const base = createTransport(kind, {
    [kind]: { maxFrameBytes: s.maxFrameBytes, tls, connectionRate: rate(s.connectionRate), onRefused: refused },
  });
  const transport = limitTransport(base, { requestRate: rate(s.requestRate), maxWindow: s.maxWindow }, { onRefused: (e: FedError, ch: FrameChannel) => refused(e, ch.peer) });
  const token = s.token ?? (s.secret ? mintToken(s.secret, { sub: self.role === 'reducer' ? 'main' : self.name, role: self.role }) : undefined);
  // Without a secret, a server-side node's --token is the shared token every peer must present.
  const authenticate = self.role === 'client' ? undefined : linkAuthenticator({ secret: s.secret, sharedToken: s.secret ? undefined : s.token });
  // A chunk frame must fit the frame limit: 1 MiB chunks by default, smaller under a smaller limit.
  const chunkBytes = Math.min(CHUNK_BYTES, s.maxFrameBytes - (DEFAULT_MAX_FRAME_BYTES - CHUNK_BYTES));
  return {
    transport,
    tls,
    token,
    authenticate,
    link: { maxBlobBytes: s.maxModelBytes, chunkBytes },
    resumeWithinMs: s.resumeWithinMs,
    summary: {
      tls: tls ? (tls.requireClientCert ? 'mutual' : tls.cert ? 'server' : 'client') : 'off',
      auth: s.secret ? 'hmac-tokens' : s.token ? 'shared-token' : tls?.requireClientCert ? 'certificates' : 'none',
    },
  };
}
