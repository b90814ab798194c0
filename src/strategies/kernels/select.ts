import { FedError } from '../../errors.ts';
import { wasmColumnReducer } from './select-wasm.ts';

// Coordinate-wise order statistics over n stored updates. Updates are rows; a coordinate's n values are
// a column, scattered across n arrays. Blocks of columns are first transposed into a small scratch (which
// stays in L2), so each column is contiguous while it is partially ordered in place.

/**
 * Partially orders a[lo..hi] (inclusive) so that a[k] holds the value it would have if the range were
 * sorted, everything before it is <= a[k] and everything after is >= a[k]. Hoare partitioning with a
 * median-of-three pivot (Wirth's FIND), O(hi - lo) expected; no allocation.
 */
export function selectInPlace(a: Float32Array, lo: number, hi: number, k: number): void {
  while (hi - lo > 12) {
    const mid = (lo + hi) >>> 1;
    const p = a[lo]!;
    const q = a[mid]!;
    const z = a[hi]!;
    const x = p < q ? p : q;
    const y = p < q ? q : p;
    const pivot = z < x ? x : z > y ? y : z;
    let i = lo;
    let j = hi;
    do {
      while (a[i]! < pivot) i++;
      while (pivot < a[j]!) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    } while (i <= j);
    if (j < k) lo = i;
    if (k < i) hi = j;
    if (lo >= hi) return;
  }
  // short ranges: insertion sort is cheaper than more partitioning
  for (let i = lo + 1; i <= hi; i++) {
    const v = a[i]!;
    let j = i - 1;
    while (j >= lo && a[j]! > v) {
      a[j + 1] = a[j]!;
      j--;
    }
    a[j + 1] = v;
  }
}

/** Median of a[off..off+n) (mean of the two middle values when n is even). Reorders the range. */
export function medianOf(a: Float32Array, off: number, n: number): number {
  const hi = off + n - 1;
  const k = off + ((n - 1) >> 1);
  selectInPlace(a, off, hi, k);
  const lower = a[k]!;
  if (n % 2 === 1) return lower;
  let upper = a[k + 1]!;
  for (let i = k + 2; i <= hi; i++) if (a[i]! < upper) upper = a[i]!;
  return (lower + upper) / 2;
}

/** Mean of a[off..off+n) without its `trim` smallest and `trim` largest values. Reorders the range. */
export function trimmedMeanOf(a: Float32Array, off: number, n: number, trim: number): number {
  const hi = off + n - 1;
  if (trim > 0) {
    selectInPlace(a, off, hi, off + trim);
    selectInPlace(a, off + trim, hi, hi - trim);
  }
  let s = 0;
  for (let i = off + trim; i <= hi - trim; i++) s += a[i]!;
  return s / (n - 2 * trim);
}

// Columns per block: 256 columns x up to 1024 rows x 4 bytes = 1 MiB at most, usually far less.
const COLS = 256;

/** How each column is reduced: its median, or its mean without `trim` values at each end. */
export type ColumnReduction = { kind: 'median' } | { kind: 'trimmed'; trim: number };

function transpose(rows: readonly Float32Array[], start: number, cols: number, scratch: Float32Array): void {
  const n = rows.length;
  for (let r = 0; r < n; r++) {
    const row = rows[r]!;
    for (let j = 0, at = r; j < cols; j++, at += n) scratch[at] = row[start + j]!;
  }
}

/**
 * out[j] = the reduction of column j over all rows. Runs the WebAssembly build of the same selection
 * (./select-wasm.ts) when available, else the JS functions above; `kernel` forces one (tests compare them).
 * In JS the two reductions get their own loops so each call site stays monomorphic and can be inlined.
 */
export function columnwise(rows: readonly Float32Array[], size: number, how: ColumnReduction, kernel?: 'wasm' | 'js'): Float32Array {
  const n = rows.length;
  const forced = typeof process === 'undefined' ? undefined : process.env?.FEDSTATE_KERNEL;
  const wasm = (kernel ?? (forced === 'js' ? 'js' : 'wasm')) === 'wasm' ? wasmColumnReducer(n, COLS, size) : null;
  if (kernel === 'wasm' && !wasm) throw new FedError('config', 'the wasm selection kernel is not available here');
  if (wasm) {
    const trim = how.kind === 'median' ? -1 : how.trim;
    for (let start = 0; start < size; start += COLS) {
      const cols = Math.min(COLS, size - start);
      transpose(rows, start, cols, wasm.scratch);
      wasm.reduce(start, cols, trim);
    }
    return wasm.result();
  }
  const out = new Float32Array(size);
  const scratch = new Float32Array(n * COLS);
  for (let start = 0; start < size; start += COLS) {
    const cols = Math.min(COLS, size - start);
    transpose(rows, start, cols, scratch);
    if (how.kind === 'median') {
      for (let j = 0; j < cols; j++) out[start + j] = medianOf(scratch, j * n, n);
    } else {
      const trim = how.trim;
      for (let j = 0; j < cols; j++) out[start + j] = trimmedMeanOf(scratch, j * n, n, trim);
    }
  }
  return out;
}
