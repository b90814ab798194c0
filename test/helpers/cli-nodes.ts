// fedstate commands as child processes for the CLI tests: one-shot commands (`cli`) and long-running
// nodes (`node`) whose JSON log lines can be awaited. Every child is killed when the test process exits.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { encodeModel } from '../../src/model/codec.ts';

export const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});
// Children inherit no FEDSTATE_ settings from whoever runs the suite.
const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FEDSTATE_') || k === 'FEDSTATE_TF_BACKEND'));

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

export function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { env: { ...baseEnv, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      children.delete(child);
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    children.add(child);
  });
}

export interface CliNode {
  proc: ChildProcess;
  ready: Promise<Record<string, string>>;
  /** Parsed JSON log lines so far. */
  logs: Array<Record<string, unknown>>;
  exited: Promise<number | null>;
  waitLog(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
}

export function node(args: string[], env: NodeJS.ProcessEnv = {}): CliNode {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { env: { ...baseEnv, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  const logs: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  createInterface({ input: proc.stderr! }).on('line', (line) => {
    try {
      logs.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      logs.push({ msg: 'non-json', line });
    }
    for (const w of waiters) w();
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => (children.delete(proc), resolve(code))));
  const ready = new Promise<Record<string, string>>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      const rec = JSON.parse(line) as Record<string, string>;
      if (rec.ready) resolve(rec);
    });
    void exited.then((code) => reject(new Error(`exited ${code} before ready: ${JSON.stringify(logs.slice(-3))}`)));
  });
  ready.catch(() => undefined);
  const waitLog = (pred: (l: Record<string, unknown>) => boolean, timeoutMs = 30_000) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const check = (): void => {
        const hit = logs.find(pred);
        if (hit) {
          waiters.delete(check);
          clearTimeout(timer);
          resolve(hit);
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`log line not seen within ${timeoutMs} ms; last: ${JSON.stringify(logs.slice(-5))}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  return { proc, ready, logs, exited, waitLog };
}

/**
 * Writes the tiny task module the process tests run (client i moves every weight by i + 1 and reports
 * (i + 1) * 10 examples) and a 4-weight zero seed model into `dir`; returns their paths.
 */
export function writeStepTask(dir: string): { task: string; modelFile: string } {
  const task = join(dir, 'task.mjs');
  writeFileSync(
    task,
    `export function createTask(ctx) {
       const step = ctx.index + 1;
       return {
         numExamples: step * 10,
         async train(model) { return { params: { layout: model.layout, data: model.data.map((x) => x + step) }, numExamples: step * 10, metrics: { loss: 1 / step } }; },
         async validate() { return { numExamples: step * 10, metrics: { accuracy: 0.5 } }; },
       };
     }\n`,
  );
  const modelFile = join(dir, 'model.bin');
  writeFileSync(modelFile, encodeModel({ layout: [{ name: 'w', shape: [4] }], data: new Float32Array(4) }));
  return { task, modelFile };
}
