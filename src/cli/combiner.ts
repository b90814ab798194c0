// `fedstate combiner`: one combiner node that listens for clients and dials the reducer.
import { defineSettings, listenLimitSettings, secretSetting, tlsListenSettings } from '../config.ts';
import { FedError } from '../errors.ts';
import { logCombiner, logNode } from '../log.ts';
import { formatEndpoint, parseEndpoint } from '../transport/endpoint.ts';
import { checkTransportsMatch, endpointCheck, nameCheck, parseCommand } from './common.ts';
import type { Command } from './types.ts';

const wildcard = (host: string): boolean => host === '0.0.0.0' || host === '::' || host === '[::]';

/**
 * The endpoint clients are told to dial. `advertise` may be a host, host:port or a full endpoint;
 * port 0 or none means the port we really listen on.
 */
export function advertisedEndpoint(listening: string, advertise: string | undefined): string {
  const ep = parseEndpoint(listening);
  if (!advertise) {
    if (wildcard(ep.host)) throw new FedError('config', `listening on ${ep.host} (every interface), clients cannot dial that address: give --advertise HOST (the address clients reach this combiner at)`);
    return listening;
  }
  if (advertise.includes('://')) {
    const m = /^([a-z]+):\/\/([^/\s]+?)(?::(\d{1,5}))?\/?$/.exec(advertise);
    const a = parseEndpoint(m && m[3] === undefined ? `${m[1]}://${m[2]}:0` : advertise);
    if (a.kind !== ep.kind) throw new FedError('config', `--advertise ${advertise} is ${a.kind} but the combiner listens on ${ep.kind}`);
    return formatEndpoint({ ...a, port: a.port || ep.port });
  }
  const m = /^(\[[0-9a-fA-F:]+\]|[^:\s/]+)(?::(\d{1,5}))?$/.exec(advertise);
  if (!m) throw new FedError('config', `bad --advertise "${advertise}": expected HOST, HOST:PORT or ${ep.kind}://HOST:PORT`);
  const a = parseEndpoint(`${ep.kind}://${m[1]}:${m[2] ?? '0'}`);
  if (wildcard(a.host)) throw new FedError('config', `--advertise ${advertise} is not an address clients can dial`);
  return formatEndpoint({ ...a, port: a.port || ep.port });
}

export const combinerSettings = defineSettings({
  name: { type: 'string', required: true, help: 'combiner name (its address is combiner/NAME)', check: (v: string) => nameCheck(v.replace(/^combiner\//, '')) },
  reducerEndpoint: { type: 'string', flag: 'reducer', required: true, help: "the reducer's endpoint", check: endpointCheck() },
  listen: { type: 'string', help: "endpoint for clients (default: the reducer's transport on 127.0.0.1, port chosen by the OS)", check: endpointCheck() },
  advertise: { type: 'string', help: 'HOST, HOST:PORT or endpoint clients dial (needed when listening on 0.0.0.0)' },
  maxClients: { type: 'number', default: 0, min: 0, integer: true, help: 'clients this combiner accepts (0: no limit)' },
  token: { type: 'string', help: 'token presented to the reducer; without --secret also the shared token required from clients' },
  ...secretSetting,
  ...tlsListenSettings,
  ...listenLimitSettings,
  clientTimeoutMs: { type: 'number', min: 100, integer: true, help: 'drop a client not heard from for this long' },
  heartbeatMs: { type: 'number', min: 50, integer: true, help: 'heartbeat interval asked of clients' },
  exitWithParent: { type: 'boolean', default: false, env: false, help: 'also stop when stdin closes (for supervisors)' },
});

export const combinerCommand: Command = {
  name: 'combiner',
  help: 'combiner --name c1 --listen grpc://0.0.0.0:7100 --advertise HOST --reducer grpc://host:7000 [--max-clients N] [--secret S] [--tls-cert F --tls-key F --tls-ca F]',
  run: async (argv) => {
    const parsed = parseCommand('combiner', 'combiner --name NAME --reducer ENDPOINT [settings]', combinerSettings, argv);
    if (!parsed) return 0;
    const { settings: s } = parsed;
    const name = s.name.replace(/^combiner\//, '');
    const log = parsed.log.child({ name });
    const listen = s.listen ?? `${parseEndpoint(s.reducerEndpoint).kind}://127.0.0.1:0`;
    checkTransportsMatch(listen, s.reducerEndpoint, '--listen and --reducer');
    advertisedEndpoint(listen, s.advertise); // refuse a wildcard listen without --advertise before binding anything
    const [{ startCombiner }, { Node }, { serveUntilSignal }, { nodeSecurity }] = await Promise.all([
      import('../actors/combiner.ts'),
      import('../actors/node.ts'),
      import('../actors/process-node.ts'),
      import('../security/node-security.ts'),
    ]);
    const security = nodeSecurity(listen, s, { role: 'combiner', name }, log);
    if (security.tls?.cert) {
      // Discovery hands clients the advertised endpoint; with TLS they check its host against our certificate.
      const { certificateCovers } = await import('../transport/tls.ts');
      const host = parseEndpoint(advertisedEndpoint(listen, s.advertise)).host;
      if (!certificateCovers(security.tls.cert, host)) {
        throw new FedError('config', `--tls-cert does not name ${host}, the host discovery hands to clients: they would refuse the connection (advertise a name the certificate lists, or make it with fedstate certs --hosts ${host})`);
      }
    }
    const node = new Node({ name: `combiner-${name}`, transport: security.transport, token: security.token, authenticate: security.authenticate, link: security.link, resumeWithinMs: security.resumeWithinMs });
    const stopNodeLogs = logNode(node, log);
    log.info({ reducer: s.reducerEndpoint }, 'dialling the reducer');
    const combiner = await startCombiner({
      node,
      name,
      listen,
      advertise: (listening) => advertisedEndpoint(listening, s.advertise),
      reducerEndpoint: s.reducerEndpoint,
      maxClients: s.maxClients,
      clientTimeoutMs: s.clientTimeoutMs,
      heartbeatMs: s.heartbeatMs,
    });
    const stopRoundLogs = logCombiner(combiner.actor, log);
    return serveUntilSignal({
      log,
      ready: { ready: 'combiner', address: combiner.address, endpoint: combiner.endpoint, reducer: s.reducerEndpoint, ...security.summary },
      exitWithParent: s.exitWithParent,
      close: async () => {
        stopRoundLogs();
        await combiner.stop();
        stopNodeLogs();
      },
    });
  },
};
