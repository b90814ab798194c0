// Aggregation speed against C, measured in the same run:
//
//   npx tsx bench/aggregate.ts [--json] [--quick] [--updates N] [--params P] [--rounds R]
//
// The C reference (bench/native/aggregate.c) is compiled here with `gcc -O3 -march=native` into a temp
// dir. It generates the same updates (same integer hash) and times the same aggregations; the two sides
// run alternately, R rounds, and each side keeps its best time, so load from other processes on the
// machine hurts both alike. Ratios are C time / TypeScript time (1 = as fast as C, higher is better).
//
//   fedavgRatio          streaming FedAvg (wasm kernel) over updates resident in the kernel's memory (stage
//                        slots, the zero-copy path), as C's updates are resident in its own, vs the plain C
//                        loop acc[i] += w * (double)x[i]; both accumulators already mapped in (C: allocated
//                        before the clock; TS: an accumulator reset() between rounds). The kernel folds 16
//                        waiting updates per pass and checks every value for NaN/Inf, which C does not.
//   fedavgCopyRatio      the same through add() of ordinary JS Float32Arrays, which copies each update into
//                        wasm memory and checks it there before add() returns (the copy alone costs most
//                        of the C loop's time).
//   fedavgFreshRatio     zero-copy with a new accumulator every round vs C with a calloc'ed one every round
//                        (both pay first-touch page faults; ours are two Float64 buffers, C's one).
//   fedavgJsRatio        the JS fallback kernel (checks, then folds) vs the warm C loop.
//   plainJsRatio         calibration: the bare JS loop acc[i] += w * x[i] (no checks, fresh Float64Array)
//                        vs the C loop on a calloc'ed accumulator.
//   medianRatio, trimmedMeanRatio (beta 0.1): vs C running the same algorithm (blocked transpose +
//                        quickselect, bench/native/aggregate.c), not vs the FedAvg loop. The TS side runs
//                        the WebAssembly build of that selection (src/strategies/kernels/select-wasm.ts)
//                        and includes add()'s copy of each update into the strategy's store.
// Checksums of every result are compared between the two sides.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FedAvgAccumulator } from '../src/strategies/fedavg.ts';
import { createMedian } from '../src/strategies/median.ts';
import { createTrimmedMean } from '../src/strategies/trimmed-mean.ts';
import type { AggregationStrategy } from '../src/strategies/types.ts';
import { scriptFlags } from '../src/util/args.ts';
import { emitJson } from './lib/json.ts';

const flags = scriptFlags('npx tsx bench/aggregate.ts [flags]', {
  quick: { type: 'boolean', default: false, help: 'a small run: 100,000 parameters, 2 rounds' },
  updates: { type: 'number', default: 100, min: 2, max: 10_000, integer: true, help: 'updates aggregated per round' },
  params: { type: 'number', min: 1, max: 100_000_000, integer: true, help: 'parameters per update (default 1,000,000; 100,000 with --quick)' },
  rounds: { type: 'number', min: 1, max: 50, integer: true, help: 'timed rounds, best kept (default 3; 2 with --quick)' },
  json: { type: 'boolean', default: false, help: 'end with one JSON line' },
});
const quick = flags.quick;
const N = flags.updates;
const P = flags.params ?? (quick ? 100_000 : 1_000_000);
const ROUNDS = flags.rounds ?? (quick ? 2 : 3);
const FEDAVG_REPS = 3;

/** Must match value() in bench/native/aggregate.c. */
function value(i: number, k: number): number {
  let h = Math.imul(i, 0x9e3779b1) ^ Math.imul(k + 1, 0x85ebca77);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  return (h >>> 8) / 16777216 - 0.5;
}
const weight = (k: number): number => 1 + (k % 7);
function checksum(out: Float32Array): number {
  let s = 0;
  for (let i = 0; i < out.length; i++) s += out[i]! * ((i % 13) + 1);
  return s;
}

// ---- the C side ----

interface CResult {
  fedavgNaiveMs: number;
  fedavgNaiveChecksum: number;
  fedavgWarmMs: number;
  fedavgBatchedMs: number;
  fedavgF32IncMs: number;
  fedavgF32IncChecksum: number;
  medianMs: number;
  medianChecksum: number;
  trimmedMeanMs: number;
  trimmedMeanChecksum: number;
}

function compileC(): { bin: string; cleanup: () => void } | { error: string } {
  const dir = mkdtempSync(join(tmpdir(), 'fedstate-bench-'));
  const src = fileURLToPath(new URL('./native/aggregate.c', import.meta.url));
  const bin = join(dir, 'aggregate');
  try {
    execFileSync('gcc', ['-O3', '-march=native', '-o', bin, src, '-lm'], { stdio: 'pipe' });
    return { bin, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    return { error: e instanceof Error ? e.message.split('\n')[0]! : String(e) };
  }
}

function runC(bin: string): CResult {
  const out = execFileSync(bin, [String(N), String(P), String(FEDAVG_REPS), '1'], { maxBuffer: 1 << 20 }).toString().trim();
  return JSON.parse(out.split('\n').at(-1)!) as CResult;
}

// ---- the TypeScript side ----

const time = (f: () => void): number => {
  const t0 = performance.now();
  f();
  return performance.now() - t0;
};

/** add() of the JS arrays (each copied into wasm memory) into an accumulator reused via reset(). */
function fedavgCopy(acc: FedAvgAccumulator, xs: Float32Array[]): { ms: number; out: Float32Array } {
  let out: Float32Array = new Float32Array(0);
  const ms = time(() => {
    acc.reset();
    xs.forEach((x, k) => acc.add(x, weight(k)));
    out = acc.finish();
  });
  return { ms, out };
}

/** Updates resident in the accumulator's stage slots (filled before the clock starts). */
function residentAccumulator(xs: Float32Array[]): { acc: FedAvgAccumulator; slots: Float32Array[] } {
  const acc = new FedAvgAccumulator(P, { kernel: 'wasm', stageSlots: xs.length });
  const slots = xs.map((x, k) => {
    const s = acc.stage(k);
    s.set(x);
    return s;
  });
  return { acc, slots };
}

function fedavgZeroCopy(r: { acc: FedAvgAccumulator; slots: Float32Array[] }, reset: boolean): { ms: number; out: Float32Array } {
  let out: Float32Array = new Float32Array(0);
  const ms = time(() => {
    if (reset) r.acc.reset();
    r.slots.forEach((s, k) => r.acc.add(s, weight(k)));
    out = r.acc.finish();
  });
  return { ms, out };
}

function plainJs(xs: Float32Array[]): { ms: number; out: Float32Array } {
  let out: Float32Array = new Float32Array(0);
  const ms = time(() => {
    const acc = new Float64Array(P);
    let total = 0;
    xs.forEach((x, k) => {
      const w = weight(k);
      total += w;
      for (let i = 0; i < P; i++) acc[i]! += w * x[i]!;
    });
    out = new Float32Array(P);
    for (let i = 0; i < P; i++) out[i] = acc[i]! / total;
  });
  return { ms, out };
}

function buffered(xs: Float32Array[], strategy: AggregationStrategy): { ms: number; out: Float32Array } {
  let out: Float32Array = new Float32Array(0);
  const ms = time(() => {
    const acc = strategy.begin({ size: P, expected: xs.length });
    xs.forEach((x, k) => acc.add(x, weight(k)));
    out = acc.finish();
  });
  return { ms, out };
}

// ---- accuracy: Float64 sum (what FedAvg does) vs a Float32 running mean (FEDn's increment_average) ----

function accuracy(): { f64MaxUlps: number; f32IncMaxUlps: number; f64ExactFraction: number; f32IncExactFraction: number } {
  const n = 1000;
  const d = 4096;
  // a shared offset plus small client differences: the regime where running means drift
  const xs = Array.from({ length: n }, (_, k) => Float32Array.from({ length: d }, (_, i) => 0.75 + value(i, k) * 1e-3));
  const ws = xs.map((_, k) => 1 + ((k * 37) % 500));
  // reference: Neumaier-compensated Float64 sum, then one rounding to Float32
  const ref = new Float32Array(d);
  const total = ws.reduce((a, b) => a + b, 0);
  for (let i = 0; i < d; i++) {
    let s = 0;
    let c = 0;
    for (let k = 0; k < n; k++) {
      const t = ws[k]! * xs[k]![i]!;
      const u = s + t;
      c += Math.abs(s) >= Math.abs(t) ? s - u + t : t - u + s;
      s = u;
    }
    ref[i] = (s + c) / total;
  }
  const acc = new FedAvgAccumulator(d);
  xs.forEach((x, k) => acc.add(x, ws[k]!));
  const f64 = acc.finish();
  const inc = new Float32Array(d);
  let seen = 0;
  xs.forEach((x, k) => {
    seen = Math.fround(seen + ws[k]!);
    const c = Math.fround(ws[k]! / seen);
    for (let i = 0; i < d; i++) inc[i] = Math.fround(inc[i]! + Math.fround(c * Math.fround(x[i]! - inc[i]!)));
  });
  const ulp = (v: number): number => {
    const b = new Float32Array([Math.abs(v)]);
    const next = new Float32Array(1);
    new Uint32Array(next.buffer)[0] = new Uint32Array(b.buffer)[0]! + 1;
    return next[0]! - b[0]!;
  };
  const stats = (got: Float32Array) => {
    let worst = 0;
    let exact = 0;
    for (let i = 0; i < d; i++) {
      const e = Math.abs(got[i]! - ref[i]!) / ulp(ref[i]!);
      worst = Math.max(worst, e);
      if (got[i] === ref[i]) exact++;
    }
    return { worst, exact: exact / d };
  };
  const a = stats(f64);
  const b = stats(inc);
  return { f64MaxUlps: a.worst, f32IncMaxUlps: b.worst, f64ExactFraction: a.exact, f32IncExactFraction: b.exact };
}

// ---- main ----

const mb = (P * N * 4) / 2 ** 20;
console.log(`aggregation bench: ${N} updates x ${P.toLocaleString('en')} parameters (${mb.toFixed(0)} MiB of updates), ${ROUNDS} rounds, best of each`);
const c = compileC();
if ('error' in c) console.log(`C reference unavailable (${c.error}); ratios will be null`);
const xs = Array.from({ length: N }, (_, k) => {
  const a = new Float32Array(P);
  for (let i = 0; i < P; i++) a[i] = value(i, k);
  return a;
});

const best: Record<string, number> = {};
const sums: Record<string, number> = {};
const keep = (key: string, r: { ms: number; out?: Float32Array }): void => {
  best[key] = Math.min(best[key] ?? Infinity, r.ms);
  if (r.out) sums[key] = checksum(r.out);
};
let cBest: CResult | undefined;
try {
  for (let round = 0; round < ROUNDS; round++) {
    if (!('error' in c)) {
      const r = runC(c.bin);
      if (!cBest) cBest = r;
      else for (const k of Object.keys(r) as Array<keyof CResult>) if (k.endsWith('Ms')) cBest[k] = Math.min(cBest[k], r[k]);
    }
    const copyAcc = new FedAvgAccumulator(P, 'wasm');
    const jsAcc = new FedAvgAccumulator(P, 'js');
    let resident = residentAccumulator(xs);
    for (let rep = 0; rep < FEDAVG_REPS; rep++) {
      keep('fedavgCopy', fedavgCopy(copyAcc, xs));
      keep('fedavgZeroCopy', fedavgZeroCopy(resident, true));
    }
    for (let rep = 0; rep < FEDAVG_REPS; rep++) {
      resident = residentAccumulator(xs); // a fresh accumulator: its Float64 buffers are not mapped in yet
      keep('fedavgFresh', fedavgZeroCopy(resident, false));
    }
    keep('fedavgJs', fedavgCopy(jsAcc, xs));
    keep('plainJs', plainJs(xs));
    keep('median', buffered(xs, createMedian()));
    keep('trimmedMean', buffered(xs, createTrimmedMean({ beta: 0.1 })));
  }
} finally {
  if (!('error' in c)) c.cleanup();
}

const ratio = (cMs: number | undefined, tsMs: number | undefined): number | null =>
  cMs === undefined || tsMs === undefined ? null : Math.round((cMs / tsMs) * 1000) / 1000;
const agree = (a: number | undefined, b: number | undefined): boolean | null =>
  a === undefined || b === undefined ? null : Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(a));
const acc = accuracy();
const result = {
  updates: N,
  params: P,
  fedavgRatio: ratio(cBest?.fedavgWarmMs, best.fedavgZeroCopy),
  fedavgCopyRatio: ratio(cBest?.fedavgWarmMs, best.fedavgCopy),
  fedavgFreshRatio: ratio(cBest?.fedavgNaiveMs, best.fedavgFresh),
  fedavgJsRatio: ratio(cBest?.fedavgWarmMs, best.fedavgJs),
  plainJsRatio: ratio(cBest?.fedavgNaiveMs, best.plainJs),
  medianRatio: ratio(cBest?.medianMs, best.median),
  trimmedMeanRatio: ratio(cBest?.trimmedMeanMs, best.trimmedMean),
  ms: {
    cFedavgNaive: cBest?.fedavgNaiveMs ?? null,
    cFedavgWarm: cBest?.fedavgWarmMs ?? null,
    cFedavgBatched: cBest?.fedavgBatchedMs ?? null,
    cFedavgF32RunningMean: cBest?.fedavgF32IncMs ?? null,
    cMedian: cBest?.medianMs ?? null,
    cTrimmedMean: cBest?.trimmedMeanMs ?? null,
    fedavgZeroCopy: best.fedavgZeroCopy,
    fedavgCopy: best.fedavgCopy,
    fedavgFresh: best.fedavgFresh,
    fedavgJs: best.fedavgJs,
    plainJs: best.plainJs,
    median: best.median,
    trimmedMean: best.trimmedMean,
  },
  checksumsAgree: {
    fedavgZeroCopy: agree(cBest?.fedavgNaiveChecksum, sums.fedavgZeroCopy),
    fedavgCopy: agree(cBest?.fedavgNaiveChecksum, sums.fedavgCopy),
    fedavgFresh: agree(cBest?.fedavgNaiveChecksum, sums.fedavgFresh),
    median: agree(cBest?.medianChecksum, sums.median),
    trimmedMean: agree(cBest?.trimmedMeanChecksum, sums.trimmedMean),
  },
  accuracy: acc,
};

const f = (v: number | null | undefined, d = 1): string => (v === null || v === undefined ? '-' : v.toFixed(d));
console.log('');
console.log('                         C ms   TS ms   ratio (C/TS)   checksum');
const row = (label: string, cMs: number | undefined, tsMs: number | undefined, r: number | null, note: unknown = ''): void =>
  console.log(`${label.padEnd(22)}${f(cMs).padStart(7)} ${f(tsMs).padStart(7)}   ${f(r, 3).padStart(6)}         ${note}`);
row('fedavg zero-copy', cBest?.fedavgWarmMs, best.fedavgZeroCopy, result.fedavgRatio, result.checksumsAgree.fedavgZeroCopy);
row('fedavg add() copying', cBest?.fedavgWarmMs, best.fedavgCopy, result.fedavgCopyRatio, result.checksumsAgree.fedavgCopy);
row('fedavg fresh acc', cBest?.fedavgNaiveMs, best.fedavgFresh, result.fedavgFreshRatio, result.checksumsAgree.fedavgFresh);
row('fedavg JS fallback', cBest?.fedavgWarmMs, best.fedavgJs, result.fedavgJsRatio);
row('plain JS loop', cBest?.fedavgNaiveMs, best.plainJs, result.plainJsRatio, '(calibration)');
row('median', cBest?.medianMs, best.median, result.medianRatio, result.checksumsAgree.median);
row('trimmed mean 0.1', cBest?.trimmedMeanMs, best.trimmedMean, result.trimmedMeanRatio, result.checksumsAgree.trimmedMean);
console.log(`C, other FedAvg loops: batched like the wasm kernel (16 per pass, every value checked, double-buffered) ${f(cBest?.fedavgBatchedMs)} ms, Float32 running mean ${f(cBest?.fedavgF32IncMs)} ms`);
console.log(
  `accuracy over 1000 updates (max error in Float32 ulps / share exactly rounded): Float64 sum ${f(acc.f64MaxUlps, 2)} / ${f(acc.f64ExactFraction * 100)}%,` +
    ` Float32 running mean ${f(acc.f32IncMaxUlps, 2)} / ${f(acc.f32IncExactFraction * 100)}%`,
);
emitJson(result);
