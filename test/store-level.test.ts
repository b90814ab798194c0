// Level-only behaviour: crash safety across processes (SIGKILL), the directory lock, the trail verify
// command, and throughput numbers printed for the record.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Level } from 'level';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isFedError } from '../src/errors.ts';
import { openLevelStore, verifyTrail } from '../src/store/index.ts';
import { keys } from '../src/store/kv.ts';
import { runTrailVerify } from '../src/store/verify-cli.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const writer = join(root, 'test/fixtures/store-writer.ts');

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'fedstate-store-level-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Starts the writer and calls onLine for each stdout line; resolves with the exit signal/code. */
function startWriter(dir: string, onLine: (line: string, child: ChildProcess) => void): { child: ChildProcess; exited: Promise<{ code: number | null; signal: string | null; stderr: string }> } {
  const child = spawn(process.execPath, ['--import', 'tsx', writer, dir], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let buf = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      onLine(line, child);
    }
  });
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: string | null; stderr: string }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stderr })),
  );
  return { child, exited };
}

test('SIGKILL mid-append: every acknowledged append survives and the trail verifies, sixteen times over', async () => {
  await withDir(async (dir) => {
    const acked = new Map<number, string>();
    const ackedRounds: Array<[string, number]> = [];
    const runs = 16;
    for (let run = 0; run < runs; run++) {
      const target = 3 + Math.floor(Math.random() * 40);
      // Spread kill points over the append cycle (blob put, fsynced trail batch, round put).
      const delayMs = Math.random() * 6;
      let seen = 0;
      let killing = false;
      let pid = 0;
      let lockChecked: Promise<void> | undefined;
      const { exited } = startWriter(dir, (line, child) => {
        const [kind, a, b] = line.split(' ');
        if (kind === 'ready') {
          pid = child.pid ?? 0;
          // While the writer holds the store, a second opener is refused, not silently sharing it.
          lockChecked = (async () => {
            const err = await openLevelStore(dir).then(
              async (s) => (await s.close(), undefined),
              (e: unknown) => e,
            );
            assert.ok(isFedError(err, 'conflict'), `second open refused: ${String(err)}`);
            const v = await runTrailVerify(dir);
            assert.is(v.code, 2);
            assert.match(v.output, /another process/);
          })();
        }
        if (kind === 'committed' && a && b) {
          acked.set(Number(a), b);
          ackedRounds.push([`pid-${pid}`, seen]);
          seen++;
          if (seen >= target && !killing) {
            killing = true;
            // Only after the lock probe, so the probe always runs against a live writer.
            const kill = (): void => void child.kill('SIGKILL');
            setTimeout(() => void (lockChecked ?? Promise.resolve()).then(kill, kill), delayMs);
          }
        }
      });
      const { signal, stderr } = await exited;
      assert.is(signal, 'SIGKILL', `writer died by SIGKILL, not on its own: ${stderr}`);
      await lockChecked;

      const store = await openLevelStore(dir);
      try {
        const result = await verifyTrail(store);
        assert.ok(result.ok, `trail verifies after kill #${run}: ${JSON.stringify(result)}`);
        const trail = await store.trail();
        for (const [index, modelId] of acked) assert.is(trail[index]?.modelId, modelId, `acknowledged entry ${index} survived`);
        // At most one append can have landed after the last line printed (resolved but not yet printed).
        const maxAcked = Math.max(...acked.keys());
        assert.ok(trail.length === maxAcked + 1 || trail.length === maxAcked + 2, `trail length ${trail.length} vs last ack ${maxAcked}`);
        for (const [sessionId, round] of ackedRounds) assert.ok(await store.getRound(sessionId, round), `round ${round} of ${sessionId} survived`);
      } finally {
        await store.close();
      }
    }
    assert.ok(acked.size >= runs * 3);
  });
});

test('trail verify command: 0 and the count when intact, 1 naming the first bad entry, 2 without a store', async () => {
  await withDir(async (dir) => {
    const store = await openLevelStore(dir);
    let parent: string | null = null;
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      const modelId = await store.putBlob(randomBytes(4096));
      await store.appendTrail({ modelId, parentModelId: parent, sessionId: 's', round: i, strategy: 'fedavg', metrics: { accuracy: i / 10 } });
      ids.push(modelId);
      parent = modelId;
    }
    await store.close();

    const ok = await runTrailVerify(dir);
    assert.is(ok.code, 0);
    assert.match(ok.output, /^trail ok: 8 entries/);
    assert.ok(ok.output.includes(ids[7]!), 'names the head model');

    // The standalone wrapper exits with the same code.
    const cli = await runCli(['--store', dir]);
    assert.is(cli.code, 0);
    assert.match(cli.stdout, /trail ok: 8 entries/);

    const db = new Level<string, Uint8Array>(dir, { valueEncoding: 'view' });
    await db.open();
    const blob = (await db.get(keys.blob(ids[5]!)))!;
    blob[100] = blob[100]! ^ 1; // one flipped bit
    await db.put(keys.blob(ids[5]!), blob);
    const entry = JSON.parse(new TextDecoder().decode((await db.get(keys.trail(6)))!)) as { metrics: Record<string, number> };
    entry.metrics.accuracy = 0.99;
    await db.put(keys.trail(6), new TextEncoder().encode(JSON.stringify(entry)));
    await db.close();

    const bad = await runTrailVerify(dir);
    assert.is(bad.code, 1);
    assert.match(bad.output, /entry #5/, 'the first bad entry, not the later one');
    assert.ok(bad.output.includes(ids[5]!), 'names the model');
    assert.match(bad.output, /blob altered/);
    const badCli = await runCli([`--store=${dir}`]);
    assert.is(badCli.code, 1);
    assert.match(badCli.stderr, /BROKEN at entry #5/);

    const missing = await runTrailVerify(join(dir, 'nothing-here'));
    assert.is(missing.code, 2);
    assert.match(missing.output, /no store/);
    assert.is((await runCli([])).code, 2);
  });
});

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'src/store/verify-cli.ts'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('throughput on level (printed, loosely bounded)', async () => {
  await withDir(async (dir) => {
    const store = await openLevelStore(dir);
    const mb = 1 << 20;
    const blobs = Array.from({ length: 32 }, () => randomBytes(mb));
    let t = performance.now();
    const hashes: string[] = [];
    for (const b of blobs) hashes.push(await store.putBlob(b));
    const putMBs = blobs.length / ((performance.now() - t) / 1000);
    t = performance.now();
    for (const h of hashes) await store.getBlob(h);
    const getMBs = hashes.length / ((performance.now() - t) / 1000);

    const small = await Promise.all(Array.from({ length: 200 }, () => store.putBlob(randomBytes(64))));
    let parent: string | null = null;
    t = performance.now();
    for (const [i, modelId] of small.entries()) {
      await store.appendTrail({ modelId, parentModelId: parent, sessionId: 's', round: i, strategy: 'fedavg', metrics: { loss: 1 } });
      parent = modelId;
    }
    const appendsPerS = small.length / ((performance.now() - t) / 1000);

    t = performance.now();
    const verified = await verifyTrail(store);
    const verifyMs = performance.now() - t;
    assert.ok(verified.ok);

    const params = new Float32Array(1_000_000).map((_, i) => Math.sin(i));
    t = performance.now();
    await store.putState('opt', { m: params, v: params, t: 1 });
    const back = await store.getState<{ m: Float32Array }>('opt');
    const stateMs = performance.now() - t;
    assert.is(back?.m[999_999], params[999_999]);
    await store.close();

    console.log(
      `  level: blob put ${putMBs.toFixed(0)} MB/s, get ${getMBs.toFixed(0)} MB/s (1 MB blobs); ` +
        `trail append ${appendsPerS.toFixed(0)}/s (fsync); verify 200 entries ${verifyMs.toFixed(0)} ms; ` +
        `state put+get 2x1M f32 ${stateMs.toFixed(0)} ms`,
    );
    // Loose floors only catch pathologies (e.g. base64 blobs or an fsync per blob), not machine speed.
    assert.ok(putMBs > 10, `blob put ${putMBs} MB/s`);
    assert.ok(appendsPerS > 5, `append ${appendsPerS}/s`);
  });
});

test.run();
