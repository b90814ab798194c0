// Runs sandbox/run.ts and returns its --json summary. The sandbox runs in its own process group, so
// the group (the sandbox and every node process it started) can be killed if a test fails or hangs.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

export interface Summary {
  rounds: Array<{ round: number; accuracy: number; loss: number; updates: number; ms: number }>;
  finalAccuracy: number;
  status: string;
  trailVerified: boolean;
  transport: string;
  processes: boolean;
  wallMs: number;
  /** `fedstate` node processes of the sandbox's group still alive after it exited (the test wants none). */
  stragglers: string[];
}

const groups = new Set<number>();
const killAll = (): void => {
  for (const pid of groups) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
};
process.on('exit', killAll);

export function sandbox(args: string[], timeoutMs = 80_000): Promise<Summary> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'sandbox/run.ts', ...args, '--json'], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    groups.add(child.pid!);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      killAll();
      reject(new Error(`sandbox ${args.join(' ')} took longer than ${timeoutMs} ms; stderr:\n${stderr.slice(-2000)}`));
    }, timeoutMs);
    child.once('exit', async (code) => {
      clearTimeout(timer);
      // Node processes left in the group are counted, then killed (there should be none: the sandbox
      // reaps its children). Helpers such as tsx's esbuild service leave on their own a moment later.
      let stragglers = nodesInGroup(child.pid!);
      for (let i = 0; i < 20 && stragglers.length > 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
        stragglers = nodesInGroup(child.pid!);
      }
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // the group is empty
      }
      groups.delete(child.pid!);
      const last = stdout.trim().split('\n').at(-1) ?? '';
      try {
        const summary = { ...(JSON.parse(last) as Summary), stragglers };
        if (code !== 0 && summary.status === 'done') return reject(new Error(`sandbox exited ${code}: ${stderr.slice(-2000)}`));
        resolve(summary);
      } catch {
        reject(new Error(`sandbox ${args.join(' ')} exited ${code} without a JSON summary; stderr:\n${stderr.slice(-3000)}`));
      }
    });
  });
}


/** `fedstate` node processes (src/cli.ts) alive in process group `pgid`; zombies do not count. */
function nodesInGroup(pgid: number): string[] {
  return execFileSync('ps', ['-eo', 'pgid=,stat=,args='], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => {
      const [g, stat, ...args] = l.trim().split(/\s+/);
      return g === String(pgid) && !stat?.startsWith('Z') && args.some((a) => a.endsWith('src/cli.ts'));
    });
}

/**
 * The acceptance check of multi-process runs over one transport: every reducer, combiner and client its
 * own `fedstate` process on loopback, the session driven through the REST API. With the same seed it
 * must finish, match the in-process run's accuracy within 1 point, and leave no process behind.
 */
export function processesMatchInproc(transport: 'grpc' | 'ws'): void {
  const out = mkdtempSync(join(tmpdir(), `fedstate-proc-${transport}-`));
  const common = ['--rounds', '2', '--clients', '3', '--combiners', '2', '--seed', '3', '--out', out];
  test(`${transport} processes: done, accuracy within 1 point of inproc for the same seed, children reaped`, async () => {
    const inproc = await sandbox([...common, '--transport', 'inproc']);
    assert.is(inproc.status, 'done');
    const procs = await sandbox([...common, '--transport', transport, '--processes']);
    assert.is(procs.status, 'done');
    assert.is(procs.transport, transport);
    assert.is(procs.processes, true);
    assert.is(procs.trailVerified, true, 'trail verified from the reducer store after it closed');
    assert.equal(procs.rounds.map((r) => [r.round, r.updates]), [[1, 3], [2, 3]]);
    assert.ok(procs.finalAccuracy > 0.85, `final accuracy ${procs.finalAccuracy}`);
    assert.ok(Math.abs(procs.finalAccuracy - inproc.finalAccuracy) <= 0.01, `processes ${procs.finalAccuracy} vs inproc ${inproc.finalAccuracy}`);
    assert.equal(procs.stragglers, [], 'no node process outlives the sandbox');
    assert.equal(readdirSync(join(out, 'logs')).sort(), ['client-k1.log', 'client-k2.log', 'client-k3.log', 'combiner-c1.log', 'combiner-c2.log', 'reducer.log']);
  });
  test.after(() => rmSync(out, { recursive: true, force: true }));
  test.run();
}
