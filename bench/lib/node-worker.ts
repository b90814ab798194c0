// A benchmark worker process that hosts fedstate nodes on a real transport, driven over IPC by a
// benchmark: one combiner, or many clients (one Node, hence one connection, per client) running a
// no-op task. It reports its memory after full GCs and its CPU time on request, so a benchmark can
// say what a connected client costs the process that holds it.
//
//   forkWorker(nodeWorkerPath) then send {type:'combiner', ...} or {type:'clients', ...}
import { fileURLToPath } from 'node:url';
import type { ClientHandle } from '../../src/actors/client.ts';
import { startClient } from '../../src/actors/client.ts';
import { startCombiner, type CombinerHandle } from '../../src/actors/combiner.ts';
import { Node } from '../../src/actors/node.ts';
import { createTransport } from '../../src/transport/registry.ts';
import type { TransportKind } from '../../src/transport/types.ts';
import { settledHeap, type HeapFigures } from './heap.ts';
import { serveParent } from './proc.ts';
import { noopTask } from './tasks.ts';

export const nodeWorkerPath = fileURLToPath(import.meta.url);

export type WorkerRequest =
  | { type: 'combiner'; kind: TransportKind; name: string; reducerEndpoint: string; host?: string }
  | { type: 'clients'; kind: TransportKind; prefix: string; count: number; reducerEndpoint: string; firstSeed?: number }
  | { type: 'measure' }
  | { type: 'cpu' }
  | { type: 'stop' };

export type WorkerReply =
  | { type: 'combiner'; endpoint: string; address: string }
  | { type: 'clients'; connected: number; ms: number }
  | { type: 'memory'; heap: HeapFigures; clients: number; connected: number }
  | { type: 'cpu'; userMs: number; systemMs: number }
  | { type: 'stopped' }
  | { type: 'error'; message: string };

let combiner: CombinerHandle | undefined;
const clients: ClientHandle[] = [];

const connectedCount = (): number => clients.filter((c) => c.actor.getSnapshot().matches('connected')).length;

async function handle(req: WorkerRequest): Promise<WorkerReply> {
  switch (req.type) {
    case 'combiner': {
      const transport = createTransport(req.kind);
      combiner = await startCombiner({
        node: new Node({ name: `combiner-${req.name}`, transport }),
        name: req.name,
        listen: `${req.kind}://${req.host ?? '127.0.0.1'}:0`,
        reducerEndpoint: req.reducerEndpoint,
      });
      return { type: 'combiner', endpoint: combiner.endpoint, address: combiner.address };
    }
    case 'clients': {
      const started = performance.now();
      // One transport object per process is enough: each dial opens its own connection.
      const transport = createTransport(req.kind);
      for (let i = 0; i < req.count; i++) {
        const name = `${req.prefix}${i + 1}`;
        clients.push(
          await startClient({
            node: new Node({ name: `client-${name}`, transport }),
            name,
            code: noopTask(10),
            reducerEndpoint: req.reducerEndpoint,
            seed: (req.firstSeed ?? 1) + i,
          }),
        );
      }
      const deadline = Date.now() + 120_000 + req.count * 50;
      while (connectedCount() < clients.length) {
        if (Date.now() > deadline) throw new Error(`only ${connectedCount()}/${clients.length} clients connected`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return { type: 'clients', connected: clients.length, ms: performance.now() - started };
    }
    case 'measure':
      return { type: 'memory', heap: await settledHeap(), clients: clients.length, connected: connectedCount() };
    case 'cpu': {
      const u = process.cpuUsage();
      return { type: 'cpu', userMs: u.user / 1000, systemMs: u.system / 1000 };
    }
    case 'stop':
      await Promise.all(clients.map((c) => c.stop()));
      await combiner?.stop();
      setTimeout(() => process.exit(0), 50).unref();
      return { type: 'stopped' };
  }
}

if (process.argv[1] === nodeWorkerPath) serveParent<WorkerRequest, WorkerReply>(handle);
