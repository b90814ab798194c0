// Endpoints name where a node listens: inproc://name, grpc://host:port, ws://host:port.
import { FedError } from '../errors.ts';
import type { TransportKind } from './types.ts';

export interface Endpoint {
  kind: TransportKind;
  /** Host name or address; for inproc, the listener's name. */
  host: string;
  /** 0 for inproc, or when the OS should choose. */
  port: number;
}

const kinds: readonly TransportKind[] = ['inproc', 'grpc', 'ws'];

export function parseEndpoint(endpoint: string, expected?: TransportKind): Endpoint {
  const m = /^([a-z]+):\/\/([^/:\s]+|\[[0-9a-fA-F:]+\])(?::(\d{1,5}))?\/?$/.exec(endpoint);
  if (!m) throw new FedError('config', `bad endpoint "${endpoint}": expected inproc://name, grpc://host:port or ws://host:port`);
  const kind = m[1] as TransportKind;
  if (!kinds.includes(kind)) throw new FedError('config', `unknown transport "${m[1]}" in "${endpoint}" (use ${kinds.join(', ')})`);
  if (expected && kind !== expected) throw new FedError('config', `endpoint "${endpoint}" is not a ${expected} endpoint`);
  const port = m[3] === undefined ? 0 : Number(m[3]);
  if (port > 65535) throw new FedError('config', `port ${port} out of range in "${endpoint}"`);
  if (kind !== 'inproc' && m[3] === undefined) throw new FedError('config', `endpoint "${endpoint}" needs a port (0 lets the OS choose)`);
  if (kind === 'inproc' && m[3] !== undefined) throw new FedError('config', `inproc endpoint "${endpoint}" takes a name, not a port`);
  return { kind, host: m[2]!, port };
}

export const formatEndpoint = (e: Endpoint): string => (e.kind === 'inproc' ? `inproc://${e.host}` : `${e.kind}://${e.host}:${e.port}`);

/** Host as Node's net/ws want it: IPv6 literals without their URL brackets. */
export const bareHost = (host: string): string => (host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host);
