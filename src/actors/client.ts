// Client role assembly: the client statechart provided with real IO. The client's private data never
// leaves it; it only dials out (to the reducer for discovery, then to its combiner), pulls the global
// model by hash, runs the user's task code, and serves its update for the combiner to pull.
import { fromCallback, fromPromise, type ActorRefFrom } from 'xstate';
import { clientMachine } from '../../machines/client.ts';
import { FedError, errorMessage } from '../errors.ts';
import { decodeModel, encodeModel } from '../model/codec.ts';
import type { Params } from '../model/params.ts';
import type { Envelope, RoundConfig } from '../protocol/generated.ts';
import { hostMachine, type HostOptions } from './host.ts';
import type { Node } from './node.ts';

/** The user's code: what a client does with a model. The framework never looks inside the model. */
export interface TaskCode {
  /** Examples this client holds; its weight in FedAvg. */
  readonly numExamples: number;
  train(model: Params, opts: { config: RoundConfig; round: number; signal: AbortSignal }): Promise<{ params: Params; numExamples: number; metrics: Record<string, number> }>;
  validate(model: Params, opts: { round: number; signal: AbortSignal }): Promise<{ numExamples: number; metrics: Record<string, number> }>;
}

export interface ClientOptions {
  node: Node;
  name: string;
  code: TaskCode;
  reducerEndpoint: string;
  reducer?: string;
  preferredCombiner?: string;
  /** Skip discovery and attach to this combiner directly. */
  combiner?: { address: string; endpoint: string };
  backoff?: { initialMs: number; maxMs: number };
  seed?: number;
  discoveryTimeoutMs?: number;
  inspect?: HostOptions['inspect'];
  /** Close the node when the client stops (false when several clients share one node). */
  ownsNode?: boolean;
}

export interface ClientHandle {
  address: string;
  node: Node;
  actor: ActorRefFrom<typeof clientMachine>;
  stop(): Promise<void>;
}

/** What one client's implementations work with: its node, options and task code, and the state they share. */
interface ClientIO {
  readonly node: Node;
  readonly code: TaskCode;
  readonly opts: ClientOptions;
  readonly reducer: string;
  /** Resolves the discovery in flight with the reducer's AssignResponse. */
  pendingAssign: ((env: Envelope) => void) | undefined;
  /** The update blob this client serves; only the latest one is kept. */
  lastUpdate: string | undefined;
}

type ActorSystem = ActorRefFrom<typeof clientMachine>['system'];

// Every client actor runs in its own actor system (one createActor per client), so the system
// identifies the client in the shared implementations below; the map does not keep a stopped client alive.
const clients = new WeakMap<ActorSystem, ClientIO>();

function ioOf(system: ActorSystem): ClientIO {
  const io = clients.get(system);
  if (!io) throw new Error('client actor has no IO attached');
  return io;
}

// Provided once for all clients: `provide` rebuilds the whole state-node tree, which cost ~24 KB per
// client when it ran in startClient.
const clientLogic = clientMachine.provide({
  actors: {
    discover: fromPromise(async ({ input, signal, system }) => {
      const io = ioOf(system);
      const { node, opts } = io;
      const reused = node.canReach(io.reducer);
      const link = reused ? undefined : await node.dial(opts.reducerEndpoint);
      try {
        const reply = new Promise<Envelope>((resolve, reject) => {
          const timer = setTimeout(() => reject(new FedError('timeout', 'no answer from discovery')), opts.discoveryTimeoutMs ?? 10_000);
          signal.addEventListener('abort', () => reject(new FedError('cancelled', 'discovery cancelled')));
          io.pendingAssign = (env) => {
            clearTimeout(timer);
            resolve(env);
          };
        });
        if (!node.send(input.self, input.reducer, { type: 'AssignRequest', client: input.self, preferredCombiner: input.preferred })) {
          throw new FedError('no-route', 'reducer unreachable');
        }
        const env = await reply;
        if (env.body.type !== 'AssignResponse') throw new FedError('malformed', 'unexpected discovery reply');
        if (env.body.status !== 'assigned') throw new FedError('not-found', `discovery: ${env.body.reason || 'retry later'}`);
        return { combiner: env.body.combiner, endpoint: env.body.endpoint };
      } finally {
        io.pendingAssign = undefined;
        // Discovery is the only reason a client talks to the reducer; after it, only the combiner link stays.
        link?.close('discovery done');
      }
    }),
    connect: fromPromise(async ({ input, system }) => {
      const { node } = ioOf(system);
      if (node.canReach(input.combiner)) return;
      await node.dial(input.endpoint);
      if (!node.canReach(input.combiner)) throw new FedError('not-found', `${input.endpoint} does not host ${input.combiner}`);
    }),
    heartbeat: fromCallback<{ type: 'noop' }, { intervalMs: number }>(({ input, sendBack }) => {
      const timer = setInterval(() => sendBack({ type: 'HEARTBEAT_DUE' }), input.intervalMs);
      return () => clearInterval(timer);
    }),
    train: fromPromise(async ({ input, signal, system }) => {
      const io = ioOf(system);
      const { node } = io;
      const started = performance.now();
      const model = decodeModel(await node.fetchBlob(input.combiner, input.modelId, { signal }));
      if (!input.config) throw new FedError('malformed', 'train task without config');
      const out = await io.code.train(model, { config: input.config, round: input.round, signal });
      if (signal.aborted) throw new FedError('cancelled', 'task cancelled');
      // Only the latest update needs serving: the combiner pulls it for the task just answered.
      if (io.lastUpdate) await node.blobs.delete(io.lastUpdate);
      const updateId = await node.blobs.put(encodeModel(out.params));
      io.lastUpdate = updateId;
      return { updateId, numExamples: out.numExamples, metrics: out.metrics, trainMs: performance.now() - started };
    }),
    validate: fromPromise(async ({ input, signal, system }) => {
      const { node, code } = ioOf(system);
      const model = decodeModel(await node.fetchBlob(input.combiner, input.modelId, { signal }));
      return code.validate(model, { round: input.round, signal });
    }),
  },
  actions: {
    disconnect: ({ system }, p) => {
      if (p.combiner) ioOf(system).node.linkTo(p.combiner)?.close('client disconnecting');
    },
  },
});

export async function startClient(opts: ClientOptions): Promise<ClientHandle> {
  const { node, code } = opts;
  const address = `client/${opts.name}`;
  const reducer = opts.reducer ?? 'reducer/main';
  const io: ClientIO = { node, code, opts, reducer, pendingAssign: undefined, lastUpdate: undefined };

  const hosted = hostMachine(
    node,
    address,
    clientLogic,
    {
      self: address,
      reducer,
      preferredCombiner: opts.preferredCombiner,
      combiner: opts.combiner,
      backoff: opts.backoff,
      seed: opts.seed,
      numExamples: code.numExamples,
    },
    {
      inspect: opts.inspect,
      intercept: (env) => {
        if (env.body.type !== 'AssignResponse') return false;
        io.pendingAssign?.(env);
        return true;
      },
    },
  );
  // Attaching after the actor started is in time: the machine starts in `disconnected`, which only
  // schedules its backoff timer, so no implementation can run before this returns.
  clients.set(hosted.actor.system, io);

  const onLinkDown = (unreachable: string[], error?: Error): void => {
    const combiner = hosted.actor.getSnapshot().context.combiner;
    if (combiner && unreachable.includes(combiner)) {
      hosted.actor.send({ type: 'COMBINER_LOST', reason: error ? errorMessage(error) : 'link closed' });
    }
  };
  node.on('unreachable', onLinkDown);

  return {
    address,
    node,
    actor: hosted.actor,
    stop: async () => {
      node.off('unreachable', onLinkDown);
      hosted.actor.send({ type: 'STOP' });
      hosted.stop();
      if (opts.ownsNode ?? true) await node.close();
    },
  };
}
