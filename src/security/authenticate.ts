// How a node decides who a peer is, from what the peer's hello and its channel carry:
//  - with a secret, the HMAC token in the hello (src/security/token.ts) names the peer's role and
//    name; a TLS client certificate on the same channel must name the same identity, or the link is
//    refused as 'impersonation' (a stolen token cannot ride on someone else's certificate);
//  - with a plain shared token, the hello must carry it; the identity is the certificate's, if any;
//  - with neither, the identity is the certificate's (mutual TLS alone), if any.
// The Link then lets the peer host (and speak as) only the addresses its identity names.
import { timingSafeEqual } from 'node:crypto';
import { FedError } from '../errors.ts';
import type { LinkOptions } from '../transport/link.ts';
import type { PeerIdentity } from '../transport/types.ts';
import { verifyToken } from './token.ts';

export interface AuthOptions {
  /** Verifies HMAC tokens (roles, names, expiry). */
  secret?: string;
  /** Without a secret: the one token every peer must present. */
  sharedToken?: string;
}

const same = (a: PeerIdentity, b: PeerIdentity): boolean => a.role === b.role && a.subject === b.subject;

export function linkAuthenticator(opts: AuthOptions): LinkOptions['authenticate'] | undefined {
  if (opts.secret) {
    const secret = opts.secret;
    return (hello, channel) => {
      const claims = verifyToken(secret, hello.token);
      const byToken: PeerIdentity = { subject: claims.sub, role: claims.role };
      const byCert = channel.identity;
      if (byCert && !same(byCert, byToken)) {
        throw new FedError('impersonation', `node ${hello.node || channel.peer} presents a token for ${byToken.role}/${byToken.subject} over a TLS certificate for ${byCert.role}/${byCert.subject}`);
      }
      return byToken;
    };
  }
  if (opts.sharedToken) {
    const want = Buffer.from(opts.sharedToken);
    return (hello, channel) => {
      const given = Buffer.from(hello.token);
      if (given.length !== want.length || !timingSafeEqual(given, want)) {
        throw new FedError('unauthenticated', `node ${hello.node || '?'} presented ${hello.token ? 'a wrong' : 'no'} token`);
      }
      return channel.identity;
    };
  }
  return undefined;
}
