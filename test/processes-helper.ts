// Runs sandbox/run.ts and returns its --json summary. The sandbox runs in its own process group, so
// the group (the sandbox and every node process it started) can be killed if a test fails or hangs.
import { execFileSync, spawn } from 'node:child_process';

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
