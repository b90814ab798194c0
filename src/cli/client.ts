// `fedstate client`: one client node. It only dials out: the reducer for discovery, then its combiner.
// It trains the TF.js MNIST task on its shard, or the user's own task code (--task module.ts).
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ClientHandle, TaskCode } from '../actors/client.ts';
import { checkPlan, dropoutModes, withDropout, type DropoutMode } from '../actors/dropout.ts';
import { defineSettings, limitSettings, tlsSettings } from '../config.ts';
import { parsePartition } from '../data/partition.ts';
import { FedError, errorMessage } from '../errors.ts';
import { logClient, logNode } from '../log.ts';
import { endpointCheck, nameCheck, parseCommand } from './common.ts';
import { MNIST_TRAIN, mnistTask, modelKinds, type ModelKind } from './tf-setup.ts';
import type { Command } from './types.ts';

export const clientSettings = defineSettings({
  name: { type: 'string', required: true, help: 'client name (its address is client/NAME)', check: (v: string) => nameCheck(v.replace(/^client\//, '')) },
  reducerEndpoint: { type: 'string', flag: 'reducer', required: true, help: "the reducer's endpoint (for discovery)", check: endpointCheck() },
  combiner: { type: 'string', help: 'preferred combiner name; discovery falls back to the least-loaded one' },
  task: { type: 'string', help: 'module exporting createTask(context): TaskCode, used instead of --data' },
  data: { type: 'string', default: 'mnist', choices: ['mnist'], help: 'built-in task: TF.js on this dataset' },
  model: { type: 'string', default: 'mlp', choices: modelKinds, help: 'model architecture of the built-in task' },
  partition: { type: 'string', default: 'iid', help: 'iid | dirichlet:ALPHA | shards:K | quantity:ALPHA', check: (v: string) => void parsePartition(v) },
  clientsTotal: { type: 'number', default: 1, min: 1, integer: true, help: 'clients the data is split among' },
  index: { type: 'number', default: 0, min: 0, integer: true, help: "this client's shard (0-based, < --clients-total)" },
  seed: { type: 'number', default: 1, min: 0, integer: true, help: 'seed of the data split and local shuffling' },
  trainSize: { type: 'number', default: MNIST_TRAIN, min: 1, max: 10_000, integer: true, help: 'training digits split among all clients' },
  token: { type: 'string', help: 'token presented to the reducer and the combiner (`fedstate token --role client --sub NAME`)' },
  ...tlsSettings,
  ...limitSettings,
  dropout: { type: 'number', default: 0, min: 0, max: 1, help: 'fault injection: fraction of the --clients-total clients that drop out each round (chosen by a hash of --seed, round and --index)' },
  stragglers: { type: 'number', default: 0, min: 0, max: 1, help: 'fault injection: fraction of the clients that stall past the round timeout each round' },
  dropoutMode: { type: 'string', default: 'fail', choices: dropoutModes, help: 'how a dropout vanishes: its training task fails, or it disconnects from its combiner' },
  exitWithParent: { type: 'boolean', default: false, env: false, help: 'also stop when stdin closes (for supervisors)' },
});

export interface TaskContext {
  name: string;
  index: number;
  clientsTotal: number;
  seed: number;
  partition: string;
}

/** Loads a user task module: it must export createTask(context) returning (a promise of) TaskCode. */
export async function loadTaskModule(path: string, context: TaskContext): Promise<TaskCode> {
  let mod: { createTask?: unknown };
  try {
    mod = (await import(pathToFileURL(resolve(path)).href)) as { createTask?: unknown };
  } catch (e) {
    throw new FedError('config', `cannot load task module ${path}: ${errorMessage(e)}`);
  }
  if (typeof mod.createTask !== 'function') throw new FedError('config', `task module ${path} does not export a createTask() function`);
  const task = (await (mod.createTask as (c: TaskContext) => unknown)(context)) as Partial<TaskCode> | undefined;
  const problems = [
    typeof task?.numExamples === 'number' && Number.isFinite(task.numExamples) && task.numExamples >= 0 ? '' : 'numExamples (a number >= 0)',
    typeof task?.train === 'function' ? '' : 'train(model, opts)',
    typeof task?.validate === 'function' ? '' : 'validate(model, opts)',
  ].filter(Boolean);
  if (problems.length) throw new FedError('config', `createTask() in ${path} must return TaskCode; missing ${problems.join(', ')}`);
  return task as TaskCode;
}

export const clientCommand: Command = {
  name: 'client',
  help: 'client --name k1 --reducer grpc://host:7000 [--combiner c1] --data mnist --clients-total 5 --index 0 --seed 1 [--task ./task.ts]',
  run: async (argv) => {
    const parsed = parseCommand('client', 'client --name NAME --reducer ENDPOINT [settings]', clientSettings, argv);
    if (!parsed) return 0;
    const { settings: s } = parsed;
    const name = s.name.replace(/^client\//, '');
    const log = parsed.log.child({ name });
    if (s.index >= s.clientsTotal) throw new FedError('config', `--index ${s.index} must be below --clients-total ${s.clientsTotal}`);
    const faults = { dropout: s.dropout, stragglers: s.stragglers, seed: s.seed, clientsTotal: s.clientsTotal };
    if (faults.dropout > 0 || faults.stragglers > 0) checkPlan(faults);
    // TLS files and limits are checked before the task (TF.js, the digits) loads.
    const { nodeSecurity } = await import('../security/node-security.ts');
    const security = nodeSecurity(s.reducerEndpoint, s, { role: 'client', name }, log);
    const base = s.task
      ? await loadTaskModule(s.task, { name, index: s.index, clientsTotal: s.clientsTotal, seed: s.seed, partition: s.partition })
      : await mnistTask({ kind: s.model as ModelKind, seed: s.seed, partition: s.partition, clientsTotal: s.clientsTotal, index: s.index, trainSize: s.trainSize });
    let client: ClientHandle | undefined;
    const code: TaskCode =
      faults.dropout > 0 || faults.stragglers > 0
        ? withDropout(base, {
            ...faults,
            index: s.index,
            mode: s.dropoutMode as DropoutMode,
            // Vanishing as a network loss would: the link to the combiner closes under the task.
            disconnect: () => {
              const combiner = client?.actor.getSnapshot().context.combiner;
              if (combiner) client?.node.linkTo(combiner)?.close('dropout: client vanished');
            },
            onFate: (round, fate) => {
              if (fate !== 'train') log.info({ round, fate, mode: fate === 'drop' ? s.dropoutMode : undefined }, 'fault injected');
            },
          })
        : base;
    if (code !== base) log.info({ dropout: faults.dropout, stragglers: faults.stragglers, mode: s.dropoutMode }, 'fault injection on');
    log.info({ numExamples: code.numExamples, task: s.task ?? `${s.data}/${s.model}`, shard: `${s.index + 1}/${s.clientsTotal}`, partition: s.partition }, 'task ready');
    const [{ startClient }, { Node }, { serveUntilSignal }] = await Promise.all([
      import('../actors/client.ts'),
      import('../actors/node.ts'),
      import('../actors/process-node.ts'),
    ]);
    const node = new Node({ name: `client-${name}`, transport: security.transport, token: security.token, link: security.link, resumeWithinMs: security.resumeWithinMs });
    const stopNodeLogs = logNode(node, log);
    client = await startClient({
      node,
      name,
      code,
      reducerEndpoint: s.reducerEndpoint,
      preferredCombiner: s.combiner ? `combiner/${s.combiner.replace(/^combiner\//, '')}` : undefined,
      // As in the in-process federation: client i+1 jitters its backoff with seed i+1.
      seed: s.index + 1,
    });
    const stopTaskLogs = logClient(client.actor, log);
    return serveUntilSignal({
      log,
      ready: { ready: 'client', address: client.address, reducer: s.reducerEndpoint, numExamples: code.numExamples, ...security.summary },
      exitWithParent: s.exitWithParent,
      close: async () => {
        stopTaskLogs();
        await client.stop();
        stopNodeLogs();
      },
    });
  },
};
