// Bearer tokens for nodes and operators: HMAC-SHA256 signed, JWT-shaped (header.payload.signature,
// base64url), with a subject, a role and an expiry. Server-side nodes (reducer, combiners) share the
// secret and verify the tokens peers present in their link hello; clients only present theirs.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { FedError } from '../errors.ts';

export const roles = ['client', 'combiner', 'reducer', 'admin'] as const;
export type Role = (typeof roles)[number];

export interface TokenClaims {
  /** Node name the token was issued to; a trailing "*" matches every name with that prefix (a process hosting many clients). */
  sub: string;
  role: Role;
  /** Expiry, seconds since the epoch; 0 = never. */
  exp: number;
  iat: number;
}

const b64 = (data: Buffer | string): string => Buffer.from(data).toString('base64url');
const HEADER = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));

function sign(secret: string, body: string): string {
  return createHmac('sha256', secret).update(body).digest('base64url');
}

export function mintToken(secret: string, claims: { sub: string; role: Role; ttlSeconds?: number }, now = Date.now()): string {
  if (secret.length < 16) throw new FedError('config', 'the token secret must be at least 16 characters');
  if (!roles.includes(claims.role)) throw new FedError('config', `unknown role "${claims.role}" (use ${roles.join(', ')})`);
  if (!/^[A-Za-z0-9._:-]+\*?$/.test(claims.sub)) throw new FedError('config', `bad token subject "${claims.sub}"`);
  const iat = Math.floor(now / 1000);
  const payload: TokenClaims = { sub: claims.sub, role: claims.role, iat, exp: claims.ttlSeconds ? iat + claims.ttlSeconds : 0 };
  const body = `${HEADER}.${b64(JSON.stringify(payload))}`;
  return `${body}.${sign(secret, body)}`;
}

export function verifyToken(secret: string, token: string, now = Date.now()): TokenClaims {
  if (!token) throw new FedError('unauthenticated', 'no token presented');
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== HEADER) throw new FedError('unauthenticated', 'malformed token');
  const expected = Buffer.from(sign(secret, `${parts[0]}.${parts[1]}`));
  const given = Buffer.from(parts[2]!);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new FedError('unauthenticated', 'token signature does not verify');
  let claims: TokenClaims;
  try {
    claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as TokenClaims;
  } catch {
    throw new FedError('unauthenticated', 'malformed token payload');
  }
  if (!roles.includes(claims.role) || typeof claims.sub !== 'string') throw new FedError('unauthenticated', 'token without a valid subject and role');
  if (claims.exp && claims.exp * 1000 <= now) throw new FedError('unauthenticated', `token expired at ${new Date(claims.exp * 1000).toISOString()}`);
  return claims;
}

/** Whether an authenticated identity may host (and so speak as) an actor address. */
export function mayHost(claims: Pick<TokenClaims, 'sub' | 'role'>, address: string): boolean {
  const slash = address.indexOf('/');
  const role = address.slice(0, slash);
  const name = address.slice(slash + 1);
  if (claims.role === 'admin') return false; // operators use the REST API, never the federation links
  if (role !== claims.role) return false;
  if (claims.role === 'reducer') return name === 'main';
  return claims.sub.endsWith('*') ? name.startsWith(claims.sub.slice(0, -1)) : name === claims.sub;
}
