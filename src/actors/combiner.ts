// Combiner role assembly: the combiner statechart provided with real IO. It listens for its
// clients, dials the reducer (and re-dials with backoff when that link drops), stages each round's
// global model so its clients can pull it, pulls and decodes client updates, and folds accepted ones
// into a streaming accumulator whose memory does not grow with the number of clients.
import { fromCallback, fromPromise, type ActorRefFrom } from 'xstate';
import { backoffMs } from '../../machines/common.ts';
import { combinerMachine, type AggregationBegin, type FetchRequest, type FetchedUpdate } from '../../machines/combiner.ts';
import { FedError } from '../errors.ts';
import { decodeModel, encodeModelFrom } from '../model/codec.ts';
import type { Layout } from '../model/params.ts';
import type { Accumulator } from '../strategies/types.ts';
import { planFor } from './strategy.ts';
import { recycleAccumulator } from '../strategies/fedavg.ts';
import { finishInto, receiveSlot, type ReceiveSlot } from '../strategies/in-place.ts';
import { BATCH } from '../strategies/kernels/weighted-sum.ts';
import { hostMachine, type Hosted, type HostOptions } from './host.ts';
import type { Node } from './node.ts';

export interface CombinerOptions {
  node: Node;
  name: string;
  /** Where this combiner listens for clients (the endpoint the reducer hands out in discovery). */
  listen: string;
  /**
   * The endpoint announced to the reducer for its clients, when it differs from the listening one
   * (listening on 0.0.0.0, behind NAT). Defaults to the listener's endpoint (with the real port).
   */
  advertise?: string | ((listening: string) => string);
  /** The reducer node's endpoint, dialled by this combiner. */
  reducerEndpoint: string;
  reducer?: string;
  maxClients?: number;
  clientTimeoutMs?: number;
  heartbeatMs?: number;
  tickMs?: number;
  inspect?: HostOptions['inspect'];
}

export interface CombinerHandle {
  node: Node;
  address: string;
  endpoint: string;
  actor: ActorRefFrom<typeof combinerMachine>;
  /** Updates decoded where they were received, in a stage slot (no copy), and the others. */
  stats: { updatesInPlace: number; updatesCopied: number };
  stop(): Promise<void>;
}

export const layoutKey = (layout: Layout): string => JSON.stringify(layout);

/** An accumulator, which of its stage slots are receiving an update right now, and where to look next. */
interface Aggregation {
  acc: Accumulator;
  busy: boolean[];
  next: number;
}

/**
 * Stage slots per round: as many as the FedAvg kernel folds per pass (taken in turn, so updates
 * received one after another are folded a full batch at a time), within 256 MiB. Uploads beyond that
 * arrive into buffers of their own and are copied in.
 */
const stageSlotsFor = (slotBytes: number): number => Math.max(1, Math.min(BATCH, Math.floor(256 * 2 ** 20 / slotBytes)));

/**
 * A free stage slot to receive an update of `expected` encoded bytes into, or undefined (no slots, all
 * receiving, or a strategy without them). `into` answers the link with the slot's bytes when the
 * announced size is the expected one.
 */
function takeSlot(agg: Aggregation | undefined, expected: number): (ReceiveSlot & { release: () => void }) | undefined {
  if (!agg) return undefined;
  const n = agg.busy.length;
  let i = -1;
  for (let k = 0; k < n && i < 0; k++) if (!agg.busy[(agg.next + k) % n]) i = (agg.next + k) % n;
  const slot = i < 0 ? undefined : receiveSlot(agg.acc, i, expected);
  if (!slot) return undefined;
  agg.busy[i] = true;
  agg.next = (i + 1) % n;
  return {
    ...slot,
    release: () => {
      agg.busy[i] = false;
    },
  };
}

export async function startCombiner(opts: CombinerOptions): Promise<CombinerHandle> {
  const { node } = opts;
  const address = `combiner/${opts.name}`;
  const reducer = opts.reducer ?? 'reducer/main';
  const accumulators = new Map<string, Aggregation>();
  // The round's global model: its layout shapes the combiner model, its values are the base that
  // delta-based strategies (DP-FedAvg) measure updates against.
  let staged: { modelId: string; layout: Layout; data: Float32Array; bytes: number } | undefined;
  const keyOf = (p: { sessionId: string; round: number }): string => `${p.sessionId}#${p.round}`;
  let lastOutput: string | undefined;
  const stats = { updatesInPlace: 0, updatesCopied: 0 };

  const logic = combinerMachine.provide({
    actors: {
      stageModel: fromPromise(async ({ input }) => {
        const bytes = await node.fetchBlob(input.from, input.modelId);
        // a view on the bytes (no copy): neither they nor the params are ever written, only read and served
        const params = decodeModel(bytes);
        if (staged && staged.modelId !== input.modelId) await node.blobs.delete(staged.modelId);
        // verified on arrival: stored without hashing it again
        if (node.blobs.adopt) node.blobs.adopt(input.modelId, bytes);
        else await node.blobs.put(bytes);
        staged = { modelId: input.modelId, layout: params.layout, data: params.data, bytes: bytes.byteLength };
        return { size: params.data.length, layoutKey: layoutKey(params.layout) };
      }),
      aggregate: fromPromise(async ({ input }) => {
        const started = performance.now();
        const entry = accumulators.get(keyOf(input));
        if (!entry) throw new FedError('internal', `no accumulator for round ${input.round}`);
        if (!staged) throw new FedError('internal', 'no staged model layout');
        const bytes = encodeModelFrom(staged.layout, (data) => finishInto(entry.acc, data));
        if (lastOutput) node.blobs.delete(lastOutput);
        const modelId = await node.blobs.put(bytes);
        lastOutput = modelId;
        return { modelId, ms: performance.now() - started };
      }),
      fetcher: fromCallback<FetchRequest>(({ receive, sendBack }) => {
        let alive = true;
        receive((req) => {
          const reply = (r: { ok: true; data: Float32Array; layoutKey: string } | { ok: false; reason: 'hash-mismatch' | 'fetch-failed' | 'wrong-shape' }): void => {
            if (alive) sendBack({ type: 'update.fetched', sessionId: req.sessionId, round: req.round, client: req.client, ...r } as FetchedUpdate);
          };
          // An update of the round's layout encodes to exactly the global model's size; a client that
          // announces more is refused before anything is allocated.
          const expected = staged?.bytes;
          const slot = expected === undefined ? undefined : takeSlot(accumulators.get(keyOf(req)), expected);
          node.fetchBlob(req.client, req.updateId, { maxBytes: expected, remoteOnly: true, into: slot?.into }).then(
            (bytes) => {
              try {
                const p = decodeModel(bytes);
                if (slot?.holds(p.data)) stats.updatesInPlace++;
                else stats.updatesCopied++;
                reply({ ok: true, data: p.data, layoutKey: layoutKey(p.layout) });
              } catch {
                reply({ ok: false, reason: 'wrong-shape' });
              } finally {
                // The machine handled the reply before sendBack returned (an actor processes an event sent
                // from outside a transition at once): the update is folded, waiting in its batch (the
                // slot's next stageBytes() folds it first), or refused. Either way the slot is free.
                slot?.release();
              }
            },
            (e) => {
              slot?.release();
              reply({ ok: false, reason: e instanceof FedError && e.code === 'hash-mismatch' ? 'hash-mismatch' : e instanceof FedError && e.code === 'oversized' ? 'wrong-shape' : 'fetch-failed' });
            },
          );
        });
        return () => {
          alive = false;
        };
      }),
    },
    actions: {
      beginAggregation: (_, p: AggregationBegin) => {
        // Stage slots with room for the model header: an update is received straight into the kernel's
        // memory, lands on a slot and is folded there (FedAvg), with no copy and no fresh buffer per update.
        const headroom = staged ? staged.bytes - p.size * 4 : 0;
        const slots = stageSlotsFor(headroom + p.size * 4);
        const acc = planFor(p.strategy).combiner.begin({ size: p.size, base: staged?.data, expected: p.expected, stageSlots: slots, stageHeadroom: headroom });
        accumulators.set(keyOf(p), { acc, busy: new Array<boolean>(acc.stageBytes ? slots : 0).fill(false), next: 0 });
      },
      foldUpdate: (_, p) => {
        // The machine admitted the update after its own checks; a strategy that still refuses it must
        // not take the combiner down with it (XState rethrows action errors), so the refusal is reported.
        try {
          accumulators.get(keyOf(p))?.acc.add(p.data, p.weight);
        } catch (e) {
          node.emit('rejected', e instanceof FedError ? e : new FedError('internal', String(e)));
        }
      },
      discardAggregation: (_, p) => {
        const entry = accumulators.get(keyOf(p));
        accumulators.delete(keyOf(p));
        // reused by a later round unless a late upload is still being received into one of its slots
        if (entry && !entry.busy.some(Boolean)) recycleAccumulator(entry.acc);
      },
    },
  });

  const actor: Hosted<ActorRefFrom<typeof combinerMachine>> = hostMachine(
    node,
    address,
    logic,
    { self: address, reducer, maxClients: opts.maxClients, clientTimeoutMs: opts.clientTimeoutMs, heartbeatMs: opts.heartbeatMs },
    { inspect: opts.inspect },
  );

  // Hosted before listening, so a client's first hello exchange already names this combiner.
  const listener = await node.listen(opts.listen);
  const advertised = typeof opts.advertise === 'function' ? opts.advertise(listener.endpoint) : (opts.advertise ?? listener.endpoint);

  const onLinkDown = (unreachable: string[]): void => {
    for (const a of unreachable) {
      if (a.startsWith('client/')) actor.actor.send({ type: 'CLIENT_GONE', client: a, reason: 'link closed' });
    }
    if (unreachable.includes(reducer)) void connectReducer();
  };
  node.on('unreachable', onLinkDown);

  let stopping = false;
  let reconnecting: Promise<void> | undefined;
  // One dialler at a time: losing the route and losing the link both ask for a reconnect.
  const connectReducer = (): Promise<void> =>
    (reconnecting ??= (async () => {
      for (let attempt = 0; !stopping && !node.canReach(reducer); attempt++) {
        try {
          if (attempt > 0) await new Promise((r) => setTimeout(r, backoffMs(attempt, 200, 5_000, attempt)));
          await node.dial(opts.reducerEndpoint);
          actor.actor.send({ type: 'REDUCER_CONNECTED', endpoint: advertised });
        } catch {
          // the reducer is down or restarting: try again after the backoff
        }
      }
    })().finally(() => {
      reconnecting = undefined;
    }));
  await connectReducer();

  const tick = setInterval(() => actor.actor.send({ type: 'TICK', now: Date.now() }), opts.tickMs ?? 1_000);
  tick.unref();

  return {
    node,
    address,
    endpoint: advertised,
    actor: actor.actor,
    stats,
    stop: async () => {
      stopping = true;
      clearInterval(tick);
      node.off('unreachable', onLinkDown);
      actor.stop();
      await node.close();
    },
  };
}
