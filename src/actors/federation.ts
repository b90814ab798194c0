// A whole federation in one process (pseudo-distributed): one reducer node, combiner nodes and one
// node per client, connected by a transport exactly as they would be across hosts. With the inproc
// transport in strict mode every frame goes through the wire codec.
import { InprocNetwork, InprocTransport } from '../transport/inproc.ts';
import type { Transport } from '../transport/types.ts';
import type { Store } from '../store/types.ts';
import type { Params } from '../model/params.ts';
import { startClient, type ClientHandle, type TaskCode } from './client.ts';
import { startCombiner, type CombinerHandle } from './combiner.ts';
import { Node } from './node.ts';
import { mintToken, type Role } from '../security/token.ts';
import { startReducer, type ReducerHandle, type ReducerOptions } from './reducer.ts';
import type { HostOptions } from './host.ts';

export interface InprocFederationOptions {
  combiners: number;
  clients: TaskCode[];
  strict?: boolean;
  store?: Store;
  evaluate?: ReducerOptions['evaluate'];
  /**
   * Transport factory, called with the address of the actor each node hosts (reducer/main,
   * combiner/c1, client/k1: per-node TLS certificates); defaults to one shared in-process network.
   */
  transport?: (address: string) => Transport;
  /** Endpoint for node `name` on the chosen transport. */
  endpoint?: (name: string) => string;
  clientTimeoutMs?: number;
  /** Token authentication on every link: each node gets a token for its own name and role. */
  auth?: { secret: string };
  heartbeatMs?: number;
  inspect?: (address: string) => HostOptions['inspect'];
}

export interface Federation {
  reducer: ReducerHandle;
  combiners: CombinerHandle[];
  clients: ClientHandle[];
  /** Resolves once every client is connected to a combiner and the reducer knows it. */
  ready(timeoutMs?: number): Promise<void>;
  /**
   * Replaces the reducer by a new one at the same endpoint on a reopened store (as after a crash and restart:
   * the old one is closed without a goodbye). Combiners re-dial on their own.
   */
  restartReducer(openStore: () => Promise<Store>): Promise<ReducerHandle>;
  close(): Promise<void>;
}

export async function startFederation(opts: InprocFederationOptions): Promise<Federation> {
  const network = new InprocNetwork();
  const transport = opts.transport ?? (() => new InprocTransport(network, { strict: opts.strict ?? true }));
  const endpoint = opts.endpoint ?? ((name: string) => `inproc://${name}`);

  const credentials = (role: Role, sub: string): { token?: string; secret?: string } =>
    opts.auth ? { token: mintToken(opts.auth.secret, { sub, role }), secret: opts.auth.secret } : {};
  const reducerOptions = (store?: Store): ReducerOptions => ({ ...credentials('reducer', 'main'), transport: transport('reducer/main'), listen: endpoint('reducer'), store, evaluate: opts.evaluate, inspect: opts.inspect?.('reducer/main') });
  let reducer = await startReducer(reducerOptions(opts.store));
  const combiners: CombinerHandle[] = [];
  for (let i = 0; i < opts.combiners; i++) {
    const name = `c${i + 1}`;
    combiners.push(
      await startCombiner({
        node: new Node({ name: `combiner-${name}`, transport: transport(`combiner/${name}`), ...credentials('combiner', name) }),
        name,
        listen: endpoint(`combiner-${name}`),
        reducerEndpoint: reducer.endpoint,
        clientTimeoutMs: opts.clientTimeoutMs,
        heartbeatMs: opts.heartbeatMs,
        inspect: opts.inspect?.(`combiner/${name}`),
      }),
    );
  }
  const clients: ClientHandle[] = [];
  for (const [i, code] of opts.clients.entries()) {
    const name = `k${i + 1}`;
    clients.push(
      await startClient({
        node: new Node({ name: `client-${name}`, transport: transport(`client/${name}`), token: credentials('client', name).token }),
        name,
        code,
        reducerEndpoint: reducer.endpoint,
        seed: i + 1,
        inspect: opts.inspect?.(`client/${name}`),
      }),
    );
  }

  const ready = async (timeoutMs = 30_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const connected = Object.values(reducer.actor.getSnapshot().context.combiners).reduce((n, c) => n + (c.connected ? c.clients.length : 0), 0);
      const allReady = clients.every((c) => c.actor.getSnapshot().matches('connected'));
      if (allReady && connected >= clients.length) return;
      if (Date.now() > deadline) throw new Error(`federation not ready after ${timeoutMs} ms: ${connected}/${clients.length} clients registered`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  return {
    get reducer() {
      return reducer;
    },
    combiners,
    clients,
    ready,
    restartReducer: async (openStore) => {
      await reducer.close();
      reducer = await startReducer(reducerOptions(await openStore()));
      return reducer;
    },
    close: async () => {
      await Promise.all(clients.map((c) => c.stop()));
      await Promise.all(combiners.map((c) => c.stop()));
      await reducer.close();
    },
  };
}

export type { Params };
