// The coordinate-wise median and trimmed mean of ./select.ts, compiled to WebAssembly (scalar code: the
// work is data-dependent branching, which SIMD does not help). Same algorithm, same pivot rule, same
// Float64 arithmetic for the final mean, so results are identical to the JS version (tests check it);
// the JS engine's bounds checks on every typed-array access are what this removes.
//
// All addresses are byte offsets into the module's memory; a column occupies 4 * n bytes.
import { encodeModule, op, valType, type FuncDef } from './wasm-encoder.ts';

const { i32, f32, f64 } = valType;

// select(lo, hi, k): Hoare quickselect with a median-of-three pivot, insertion sort below 13 elements.
// params 0 lo, 1 hi, 2 k (byte addresses, hi inclusive); locals 3 i, 4 j, 5 pivot, 6 p, 7 q, 8 v, 9 t
const selectFn: FuncDef = {
  name: 'select',
  params: [i32, i32, i32],
  results: [],
  locals: [i32, i32, f32, f32, f32, f32, f32],
  body: [
    op.block(), // $done
    op.block(), // $small
    op.loop(), // $outer
    op.localGet(1), op.localGet(0), op.i32Sub(), op.i32Const(48), op.i32LeS(), op.brIf(1),
    // mid = lo + ((hi - lo) / 8) * 4, i.e. element (lo + hi) >> 1
    op.localGet(0), op.localGet(1), op.localGet(0), op.i32Sub(), op.i32Const(3), op.i32ShrS(), op.i32Const(2), op.i32Shl(), op.i32Add(),
    op.f32Load(), op.localSet(7),
    op.localGet(0), op.f32Load(), op.localSet(6),
    // pivot = median of (a[lo], a[mid], a[hi]) = max(min(p, q), min(max(p, q), a[hi]))
    op.localGet(6), op.localGet(7), op.f32Min(),
    op.localGet(6), op.localGet(7), op.f32Max(), op.localGet(1), op.f32Load(), op.f32Min(),
    op.f32Max(), op.localSet(5),
    op.localGet(0), op.localSet(3),
    op.localGet(1), op.localSet(4),
    op.loop(), // $part
    // do i += 4 while a[i] < pivot (starting one below), and the mirror for j
    op.localGet(3), op.i32Const(4), op.i32Sub(), op.localSet(3),
    op.loop(),
    op.localGet(3), op.i32Const(4), op.i32Add(), op.localTee(3), op.f32Load(), op.localGet(5), op.f32Lt(), op.brIf(0),
    op.end(),
    op.localGet(4), op.i32Const(4), op.i32Add(), op.localSet(4),
    op.loop(),
    op.localGet(4), op.i32Const(4), op.i32Sub(), op.localTee(4), op.f32Load(), op.localGet(5), op.f32Gt(), op.brIf(0),
    op.end(),
    op.block(),
    op.localGet(3), op.localGet(4), op.i32GtS(), op.brIf(0),
    op.localGet(3), op.f32Load(), op.localSet(9),
    op.localGet(3), op.localGet(4), op.f32Load(), op.f32Store(),
    op.localGet(4), op.localGet(9), op.f32Store(),
    op.localGet(3), op.i32Const(4), op.i32Add(), op.localSet(3),
    op.localGet(4), op.i32Const(4), op.i32Sub(), op.localSet(4),
    op.end(),
    op.localGet(3), op.localGet(4), op.i32LeS(), op.brIf(0),
    op.end(), // $part
    // if (j < k) lo = i; if (k < i) hi = j; if (lo >= hi) done
    op.block(), op.localGet(4), op.localGet(2), op.i32GeS(), op.brIf(0), op.localGet(3), op.localSet(0), op.end(),
    op.block(), op.localGet(2), op.localGet(3), op.i32GeS(), op.brIf(0), op.localGet(4), op.localSet(1), op.end(),
    op.localGet(0), op.localGet(1), op.i32GeS(), op.brIf(2),
    op.br(0),
    op.end(), // $outer
    op.end(), // $small
    // insertion sort of [lo, hi]
    op.localGet(0), op.i32Const(4), op.i32Add(), op.localSet(3),
    op.block(),
    op.loop(),
    op.localGet(3), op.localGet(1), op.i32GtS(), op.brIf(1),
    op.localGet(3), op.f32Load(), op.localSet(8),
    op.localGet(3), op.i32Const(4), op.i32Sub(), op.localSet(4),
    op.block(),
    op.loop(),
    op.localGet(4), op.localGet(0), op.i32LtS(), op.brIf(1),
    op.localGet(4), op.f32Load(), op.localGet(8), op.f32Gt(), op.i32Eqz(), op.brIf(1),
    op.localGet(4), op.localGet(4), op.f32Load(), op.f32Store(4),
    op.localGet(4), op.i32Const(4), op.i32Sub(), op.localSet(4),
    op.br(0),
    op.end(),
    op.end(),
    op.localGet(4), op.localGet(8), op.f32Store(4),
    op.localGet(3), op.i32Const(4), op.i32Add(), op.localSet(3),
    op.br(0),
    op.end(),
    op.end(),
    op.end(), // $done
  ],
};

// median(off, n) -> f32. params 0 off, 1 n; locals 2 hi, 3 k, 4 lower, 5 upper, 6 i
const medianFn: FuncDef = {
  name: 'median',
  params: [i32, i32],
  results: [f32],
  locals: [i32, i32, f32, f32, i32],
  body: [
    op.localGet(0), op.localGet(1), op.i32Const(1), op.i32Sub(), op.i32Const(2), op.i32Shl(), op.i32Add(), op.localSet(2),
    op.localGet(0), op.localGet(1), op.i32Const(1), op.i32Sub(), op.i32Const(1), op.i32ShrS(), op.i32Const(2), op.i32Shl(), op.i32Add(), op.localSet(3),
    op.localGet(0), op.localGet(2), op.localGet(3), op.call(0),
    op.localGet(3), op.f32Load(), op.localSet(4),
    op.block(), op.localGet(1), op.i32Const(1), op.i32And(), op.i32Eqz(), op.brIf(0), op.localGet(4), op.ret(), op.end(),
    // even n: the smallest value above position k is the other middle value
    op.localGet(3), op.f32Load(4), op.localSet(5),
    op.localGet(3), op.i32Const(8), op.i32Add(), op.localSet(6),
    op.block(),
    op.loop(),
    op.localGet(6), op.localGet(2), op.i32GtS(), op.brIf(1),
    op.localGet(5), op.localGet(6), op.f32Load(), op.f32Min(), op.localSet(5),
    op.localGet(6), op.i32Const(4), op.i32Add(), op.localSet(6),
    op.br(0),
    op.end(),
    op.end(),
    op.localGet(4), op.f64PromoteF32(), op.localGet(5), op.f64PromoteF32(), op.f64Add(), op.f64Const(0.5), op.f64Mul(), op.f32DemoteF64(),
  ],
};

// trimmed(off, n, trim) -> f32. params 0 off, 1 n, 2 trim; locals 3 hi, 4 s, 5 i, 6 end
const trimmedFn: FuncDef = {
  name: 'trimmed',
  params: [i32, i32, i32],
  results: [f32],
  locals: [i32, f64, i32, i32],
  body: [
    op.localGet(0), op.localGet(1), op.i32Const(1), op.i32Sub(), op.i32Const(2), op.i32Shl(), op.i32Add(), op.localSet(3),
    op.localGet(0), op.localGet(2), op.i32Const(2), op.i32Shl(), op.i32Add(), op.localSet(5),
    op.localGet(3), op.localGet(2), op.i32Const(2), op.i32Shl(), op.i32Sub(), op.localSet(6),
    op.block(),
    op.localGet(2), op.i32Eqz(), op.brIf(0),
    op.localGet(0), op.localGet(3), op.localGet(5), op.call(0),
    op.localGet(5), op.localGet(3), op.localGet(6), op.call(0),
    op.end(),
    op.block(),
    op.loop(),
    op.localGet(5), op.localGet(6), op.i32GtS(), op.brIf(1),
    op.localGet(4), op.localGet(5), op.f32Load(), op.f64PromoteF32(), op.f64Add(), op.localSet(4),
    op.localGet(5), op.i32Const(4), op.i32Add(), op.localSet(5),
    op.br(0),
    op.end(),
    op.end(),
    op.localGet(4), op.localGet(1), op.localGet(2), op.i32Const(1), op.i32Shl(), op.i32Sub(), op.f64ConvertI32S(), op.f64Div(), op.f32DemoteF64(),
  ],
};

// reduce(scratch, n, cols, out, trim): out[j] = median (trim < 0) or trimmed mean of column j.
// params 0 scratch, 1 n, 2 cols, 3 out, 4 trim; locals 5 j
const reduceFn: FuncDef = {
  name: 'reduce',
  params: [i32, i32, i32, i32, i32],
  results: [],
  locals: [i32],
  body: [
    op.block(),
    op.loop(),
    op.localGet(5), op.localGet(2), op.i32GeS(), op.brIf(1),
    op.localGet(3),
    op.localGet(4), op.i32Const(0), op.i32LtS(),
    op.ifF32(),
    op.localGet(0), op.localGet(1), op.call(1),
    op.elseBranch(),
    op.localGet(0), op.localGet(1), op.localGet(4), op.call(2),
    op.end(),
    op.f32Store(),
    op.localGet(0), op.localGet(1), op.i32Const(2), op.i32Shl(), op.i32Add(), op.localSet(0),
    op.localGet(3), op.i32Const(4), op.i32Add(), op.localSet(3),
    op.localGet(5), op.i32Const(1), op.i32Add(), op.localSet(5),
    op.br(0),
    op.end(),
    op.end(),
  ],
};

interface SelectExports {
  reduce(scratch: number, n: number, cols: number, out: number, trim: number): void;
}

let compiled: WebAssembly.Module | null | undefined;

function selectModule(): WebAssembly.Module | null {
  if (compiled !== undefined) return compiled;
  try {
    const bytes = encodeModule([selectFn, medianFn, trimmedFn, reduceFn]);
    compiled = WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
  } catch {
    compiled = null;
  }
  return compiled;
}

/** A per-call instance over fresh memory: [64 bytes][scratch n x cols][out size]. Null when wasm is unavailable or too big. */
export function wasmColumnReducer(n: number, cols: number, size: number): { scratch: Float32Array; reduce(start: number, count: number, trim: number): void; result(): Float32Array } | null {
  const module = selectModule();
  // the scratch starts at 64, not 0: insertion sort steps one element below `lo` before it stops, and a
  // wasm address never wraps, so base - 4 + offset 4 at base 0 would trap
  const scratchAt = 64;
  const outAt = scratchAt + n * cols * 4;
  const bytes = outAt + size * 4;
  if (!module || bytes > 2 ** 31 - 65536) return null;
  const mem = new WebAssembly.Memory({ initial: Math.ceil(bytes / 65536) });
  const k = new WebAssembly.Instance(module, { env: { mem } }).exports as unknown as SelectExports;
  return {
    scratch: new Float32Array(mem.buffer, scratchAt, n * cols),
    reduce: (start, count, trim) => k.reduce(scratchAt, n, count, outAt + start * 4, trim),
    result: () => new Float32Array(mem.buffer, outAt, size).slice(),
  };
}
