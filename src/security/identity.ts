// The fedstate identity a certificate names, kept apart from certs.ts so the transports can read
// identities without loading the certificate generator.
import type { PeerIdentity } from '../transport/types.ts';

export type NodeRole = 'reducer' | 'combiner' | 'client';
export const nodeRoles: readonly NodeRole[] = ['reducer', 'combiner', 'client'];

/** The fedstate identity a certificate names (SAN URI first, else a `role/name` CN), if any. */
export function identityFromNames(names: { uris?: string[]; commonName?: string }): PeerIdentity | undefined {
  for (const uri of names.uris ?? []) {
    const m = /^fedstate:([a-z]+)\/(.+)$/.exec(uri);
    if (m && (nodeRoles as readonly string[]).includes(m[1]!)) return { role: m[1] as NodeRole, subject: m[2]! };
  }
  const cn = /^([a-z]+)\/([A-Za-z0-9._:-]+\*?)$/.exec(names.commonName ?? '');
  if (cn && (nodeRoles as readonly string[]).includes(cn[1]!)) return { role: cn[1] as NodeRole, subject: cn[2]! };
  return undefined;
}

