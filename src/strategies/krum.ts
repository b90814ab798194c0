// Krum and Multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
// Gradient Descent"). With n updates of which at most f are Byzantine, each update i gets the score
//   s(i) = sum of squared L2 distances from update i to its n - f - 2 nearest other updates,
// and Krum returns the update with the lowest score; the paper's guarantee needs n > 2f + 2.
// Multi-Krum averages the m lowest-scoring updates (m = 1 is Krum; m defaults to n - f, the paper's
// suggestion). The average is unweighted, as in the paper: weights are client claims and are only
// summed into totalWeight for the reducer.
//
// Ties are broken by comparing the updates themselves (lexicographically), never by arrival order, so
// the result does not depend on the order updates arrived in.
// Holds every update and an n x n distance table: memory n x size x 4 + n^2 x 8 bytes; time O(n^2 size).
import { FedError } from '../errors.ts';
import type { Accumulator, AggregationContext, AggregationStrategy } from './types.ts';
import { BufferedAccumulator } from './buffered.ts';
import { nothingAdded } from './validate.ts';

export interface KrumOptions {
  /** Number of Byzantine updates tolerated. */
  f: number;
  /** Number of updates averaged (Multi-Krum); 1 = Krum; undefined = n - f. */
  m?: number;
}

export function checkKrumOptions(o: KrumOptions): void {
  if (!Number.isSafeInteger(o.f) || o.f < 0) throw new FedError('config', `krum: f must be a non-negative integer, got ${o.f}`);
  if (o.m !== undefined && (!Number.isSafeInteger(o.m) || o.m < 1)) throw new FedError('config', `krum: m must be a positive integer, got ${o.m}`);
}

export function squaredDistance(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    s += d * d;
  }
  return s;
}

function lexCompare(a: Float32Array, b: Float32Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1;
  return 0;
}

export interface KrumResult {
  scores: number[];
  /** Indices (in arrival order) of the selected updates, best first. */
  selected: number[];
}

/** Scores and selection for rows; exported for inspection and tests. */
export function krumSelect(rows: readonly Float32Array[], f: number, m: number): KrumResult {
  const n = rows.length;
  if (n <= 2 * f + 2) {
    throw new FedError('config', `krum with f=${f} needs more than ${2 * f + 2} updates, got ${n}`, { n, f });
  }
  if (m > n) throw new FedError('config', `multikrum: m=${m} exceeds the ${n} updates`);
  const dist = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const d = squaredDistance(rows[i]!, rows[j]!);
      dist[i * n + j] = d;
      dist[j * n + i] = d;
    }
  }
  const neighbours = n - f - 2;
  const scores = rows.map((_, i) => {
    const ds: number[] = [];
    for (let j = 0; j < n; j++) if (j !== i) ds.push(dist[i * n + j]!);
    // summed in ascending order: the same total whatever the arrival order
    ds.sort((x, y) => x - y);
    let s = 0;
    for (let k = 0; k < neighbours; k++) s += ds[k]!;
    return s;
  });
  const order = rows.map((_, i) => i).sort((i, j) => scores[i]! - scores[j]! || lexCompare(rows[i]!, rows[j]!));
  return { scores, selected: order.slice(0, m) };
}

export class KrumAccumulator extends BufferedAccumulator implements Accumulator {
  /** The last finish()'s scores and selection, for reporting which updates were kept. */
  lastResult: KrumResult | undefined;

  constructor(
    ctx: AggregationContext,
    readonly options: KrumOptions,
    private readonly label: string,
  ) {
    super(ctx, label);
    checkKrumOptions(options);
  }

  finish(): Float32Array {
    const { rows, size } = this.store;
    if (rows.length === 0) throw nothingAdded(this.label);
    const m = this.options.m ?? rows.length - this.options.f;
    const result = krumSelect(rows, this.options.f, m);
    this.lastResult = result;
    if (result.selected.length === 1) return rows[result.selected[0]!]!.slice();
    const sum = new Float64Array(size);
    for (const i of result.selected) {
      const row = rows[i]!;
      for (let t = 0; t < size; t++) sum[t]! += row[t]!;
    }
    const out = new Float32Array(size);
    for (let t = 0; t < size; t++) out[t] = sum[t]! / result.selected.length;
    return out;
  }
}

/** Krum: m = 1. */
export function createKrum(options: { f: number }): AggregationStrategy {
  const o = { f: options.f, m: 1 };
  checkKrumOptions(o);
  return { name: 'krum', streaming: false, begin: (ctx) => new KrumAccumulator(ctx, o, 'krum') };
}

/** Multi-Krum: average of the m best-scored updates (default n - f). */
export function createMultiKrum(options: KrumOptions): AggregationStrategy {
  checkKrumOptions(options);
  return { name: 'multikrum', streaming: false, begin: (ctx) => new KrumAccumulator(ctx, { ...options }, 'multikrum') };
}
