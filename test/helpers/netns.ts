// Network namespaces as test hosts on this machine: one namespace per host, each with one veth link
// to a bridge in a hub namespace, addresses 10.77.S.x/24 (S picked free per run), and an "operator"
// veth from the test's own namespace to the same bridge so the test can reach the hosts (the reducer's
// REST API). A host's link is cut with `ip link set <its hub-side veth> down` (a cable pulled: no
// FIN, no RST, packets just vanish) and restored with `up`.
//
// Needs root and iproute2 (`ip`); netnsUnavailable() says why not, so a test can skip with that
// message. Names are unique per run (fedstate-<pid>-<host>); set-up first removes what a crashed run
// left (namespaces whose pid is gone), and teardown (also registered for process exit and SIGINT /
// SIGTERM) deletes every namespace and link it created, so a failing test leaves nothing behind.
import { execFileSync } from 'node:child_process';

export interface NetnsHost {
  name: string;
  /** The namespace the host's processes run in. */
  ns: string;
  addr: string;
  /** Its link's end in the hub namespace (what cut/restore switch). */
  hubIf: string;
}

export interface Topology {
  hosts: Record<string, NetnsHost>;
  /** The /24 in use, e.g. 10.77.42.0/24. */
  subnet: string;
  /** The test's own address on the bridge. */
  operatorAddr: string;
  /** Command words that run a program in a host's namespace. */
  exec(host: string): string[];
  cut(host: string): void;
  restore(host: string): void;
  /** Deletes every namespace and link of this topology; idempotent. */
  teardown(): void;
}

const PREFIX = 'fedstate-';

function ip(args: string[], opts: { ignoreErrors?: boolean } = {}): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    if (opts.ignoreErrors) return '';
    const err = e as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')} failed: ${(err.stderr ?? err.message).trim()}`);
  }
}

/** Why namespaces cannot be used here (not root, no `ip`, no permission), or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'network namespaces need root (run as root, as CI does)';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return '`ip` (iproute2) is not installed';
  }
  const probe = `${PREFIX}${process.pid}-probe`;
  try {
    ip(['netns', 'add', probe]);
  } catch (e) {
    return `cannot create a network namespace: ${(e as Error).message}`;
  } finally {
    ip(['netns', 'del', probe], { ignoreErrors: true });
  }
  return undefined;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** Removes the namespaces (and their links) of earlier runs whose process is gone. */
export function sweepStale(): string[] {
  const removed: string[] = [];
  for (const line of ip(['netns', 'list'], { ignoreErrors: true }).split('\n')) {
    const name = line.trim().split(/\s+/)[0] ?? '';
    const m = new RegExp(`^${PREFIX}(\\d+)-`).exec(name);
    if (!m || alive(Number(m[1]))) continue;
    ip(['netns', 'del', name], { ignoreErrors: true });
    removed.push(name);
  }
  return removed;
}

/** A free 10.77.S.0/24: no route or address of this namespace in it. */
function freeSubnet(): number {
  const used = ip(['-4', 'route', 'show'], { ignoreErrors: true }) + ip(['-4', 'addr', 'show'], { ignoreErrors: true });
  for (let i = 0; i < 250; i++) {
    const s = ((process.pid + i) % 250) + 1;
    if (!used.includes(`10.77.${s}.`)) return s;
  }
  throw new Error('no free 10.77.S.0/24 subnet');
}

/**
 * Creates one namespace per host name (addresses 10.77.S.1, .2, … in order), a bridge joining them and
 * the operator link. Throws (after cleaning up) if any step fails.
 */
export function createTopology(names: string[]): Topology {
  sweepStale();
  const run = `${PREFIX}${process.pid}`;
  const hub = `${run}-hub`;
  const opIf = `fs${process.pid.toString(36)}op`.slice(0, 15);
  const s = freeSubnet();
  const hosts: Record<string, NetnsHost> = {};
  names.forEach((name, i) => {
    if (!/^[a-z0-9]{1,8}$/.test(name)) throw new Error(`host name "${name}" must be 1-8 lowercase letters or digits`);
    hosts[name] = { name, ns: `${run}-${name}`, addr: `10.77.${s}.${i + 1}`, hubIf: `h-${name}` };
  });
  const clean = (): void => {
    ip(['link', 'del', opIf], { ignoreErrors: true });
    for (const h of Object.values(hosts)) ip(['netns', 'del', h.ns], { ignoreErrors: true });
    ip(['netns', 'del', hub], { ignoreErrors: true });
  };
  let torn = false;
  const teardown = (): void => {
    if (torn) return;
    torn = true;
    process.off('exit', teardown);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    clean();
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    teardown();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.on('exit', teardown);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    // Idempotent: whatever of this run's names exists already goes first.
    clean();
    ip(['netns', 'add', hub]);
    ip(['-n', hub, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', hub, 'link', 'set', 'br0', 'up']);
    for (const h of Object.values(hosts)) {
      ip(['netns', 'add', h.ns]);
      ip(['-n', h.ns, 'link', 'set', 'lo', 'up']);
      ip(['link', 'add', 'eth0', 'netns', h.ns, 'type', 'veth', 'peer', 'name', h.hubIf, 'netns', hub]);
      ip(['-n', hub, 'link', 'set', h.hubIf, 'master', 'br0']);
      ip(['-n', hub, 'link', 'set', h.hubIf, 'up']);
      ip(['-n', h.ns, 'addr', 'add', `${h.addr}/24`, 'dev', 'eth0']);
      ip(['-n', h.ns, 'link', 'set', 'eth0', 'up']);
    }
    ip(['link', 'add', opIf, 'type', 'veth', 'peer', 'name', 'h-op', 'netns', hub]);
    ip(['-n', hub, 'link', 'set', 'h-op', 'master', 'br0']);
    ip(['-n', hub, 'link', 'set', 'h-op', 'up']);
    ip(['addr', 'add', `10.77.${s}.254/24`, 'dev', opIf]);
    ip(['link', 'set', opIf, 'up']);
  } catch (e) {
    teardown();
    throw e;
  }

  const host = (name: string): NetnsHost => {
    const h = hosts[name];
    if (!h) throw new Error(`no host ${name}`);
    return h;
  };
  return {
    hosts,
    subnet: `10.77.${s}.0/24`,
    operatorAddr: `10.77.${s}.254`,
    exec: (name) => ['ip', 'netns', 'exec', host(name).ns],
    cut: (name) => void ip(['-n', hub, 'link', 'set', host(name).hubIf, 'down']),
    restore: (name) => void ip(['-n', hub, 'link', 'set', host(name).hubIf, 'up']),
    teardown,
  };
}

/** Namespaces and links this process created that still exist (for tests of the teardown). */
export function leftovers(): string[] {
  const ns = ip(['netns', 'list'], { ignoreErrors: true })
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(`${PREFIX}${process.pid}-`));
  const opIf = `fs${process.pid.toString(36)}op`;
  const links = ip(['-br', 'link'], { ignoreErrors: true }).split('\n').filter((l) => l.startsWith(opIf));
  return [...ns, ...links.map((l) => l.split(/\s+/)[0]!.split('@')[0]!)];
}

// --- a light task for the namespace hosts ------------------------------------------------------------
// `fedstate client --task test/helpers/netns.ts` loads this: no TF.js and no dataset, so six node
// processes start fast; each round "trains" for TRAIN_MS (cancellable) and moves every parameter by a
// client-specific step, so rounds take long enough for a link to be cut mid-round.

import type { TaskCode } from '../../src/actors/client.ts';
import type { Params } from '../../src/model/params.ts';

export const TOY_SIZE = 10_000;
const TRAIN_MS = 1_500;

/** The seed model for the toy task: TOY_SIZE zeros. */
export const toySeed = (): Params => ({ layout: [{ name: 'w', shape: [TOY_SIZE] }], data: new Float32Array(TOY_SIZE) });

export function createTask(context: { index: number }): TaskCode {
  const step = (context.index + 1) / 100;
  return {
    numExamples: 100 * (context.index + 1),
    async train(model, { signal }) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, TRAIN_MS);
        signal.addEventListener('abort', () => {
          clearTimeout(timer);
          reject(new Error('cancelled'));
        });
      });
      return { params: { layout: model.layout, data: model.data.map((x) => x + step) }, numExamples: 100 * (context.index + 1), metrics: { loss: 1 / (1 + step) } };
    },
    async validate(model) {
      return { numExamples: 100, metrics: { mean: model.data.reduce((a, b) => a + b, 0) / model.data.length } };
    },
  };
}
