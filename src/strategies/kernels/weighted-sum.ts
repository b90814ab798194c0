// The weighted-sum kernel behind streaming FedAvg: acc (Float64) += w * x (Float32), refusing an x that
// holds a NaN or an infinity before any of it reaches acc.
//
// Two implementations with one contract, so the fallback is always there and tests can prove they agree:
//   - 'wasm': WebAssembly SIMD emitted by ./wasm-encoder.ts. The update is copied into the module's memory
//     in blocks that stay in L1/L2, checked there, and only then folded into the accumulator.
//   - 'js':   plain typed-array loops (about a quarter of the speed of C on the bench machine).
//
// Why the accumulator is Float64 (sum of w*x, divided by the total weight once at the end) and not a
// running mean in Float32: both are limited by memory bandwidth, not arithmetic (bench/aggregate.ts
// measures both), and the Float64 sum rounds once per coordinate at the end instead of once per update,
// so FedAvg over hundreds of clients and the hierarchical/flat equality stay exact to Float32 rounding.
//
// Why double buffering (wasm): the update is validated block by block while it streams through the
// cache. A NaN found in a late block must not leave the early blocks folded in, and subtracting them back
// out is not exact in floating point. So a block is written to the *other* buffer (next = acc + w*x); the
// buffers swap only when every block passed. That costs 8 more bytes of memory per parameter but reads
// the update from memory once, which is what the bench measures.
import { FedError } from '../../errors.ts';
import { encodeModule, op, valType, type FuncDef } from './wasm-encoder.ts';

export type KernelKind = 'wasm' | 'js';

export interface WeightedSum {
  readonly kind: KernelKind;
  readonly size: number;
  /** acc += weight * x. Throws FedError('not-finite') and leaves acc untouched when x holds a NaN/Inf. */
  add(x: Float32Array, weight: number): void;
  /** Float32(acc * scale), a fresh array. */
  scaled(scale: number): Float32Array;
  /** A copy of the Float64 accumulator (for tests and for checkpointing). */
  snapshot(): Float64Array;
}

// Block of the update copied and checked at a time (floats). 16384 floats = 64 KiB: the block and the
// 2 x 128 KiB of accumulator it touches stay in L2, so the check and the fold reuse what the copy loaded.
// Measured on the bench machine (1M parameters x 100 updates): 2K blocks ~70-100 ms (per-call overhead),
// 4K ~60 ms, 16K-64K ~52-55 ms; the naive C loop takes ~48 ms.
const BLOCK = 16384;
// Every length the kernels see is a multiple of this; buffers are padded with zeros, which add nothing.
const LANES = 16;
const padTo = (n: number, m: number): number => Math.ceil(n / m) * m;

const { i32, f64, v128 } = valType;

// locals of bad(x, n): 0 x, 1 n, 2 end, 3 seen, 4 mask
const badFn: FuncDef = {
  name: 'bad',
  params: [i32, i32],
  results: [i32],
  locals: [i32, v128, v128],
  body: [
    // exponent bits all ones <=> NaN or +-Infinity
    op.i32Const(0x7f800000), op.i32x4Splat(), op.localSet(4),
    op.localGet(0), op.localGet(1), op.i32Const(2), op.i32Shl(), op.i32Add(), op.localSet(2),
    op.block(),
    op.localGet(0), op.localGet(2), op.i32GeU(), op.brIf(0),
    op.loop(),
    ...[0, 16, 32, 48].flatMap((off) => [
      op.localGet(3),
      op.localGet(0), op.v128Load(off), op.localGet(4), op.v128And(), op.localGet(4), op.i32x4Eq(),
      op.v128Or(), op.localSet(3),
    ]),
    op.localGet(0), op.i32Const(64), op.i32Add(), op.localTee(0), op.localGet(2), op.i32LtU(), op.brIf(0),
    op.end(),
    op.end(),
    op.localGet(3), op.v128AnyTrue(),
  ],
};

// locals of axpy(dst, src, x, n, w): 0 dst, 1 src, 2 x, 3 n, 4 w, 5 end, 6 wv.  dst = src + w * x
const axpyFn: FuncDef = {
  name: 'axpy',
  params: [i32, i32, i32, i32, f64],
  results: [],
  locals: [i32, v128],
  body: [
    op.localGet(4), op.f64x2Splat(), op.localSet(6),
    op.localGet(2), op.localGet(3), op.i32Const(2), op.i32Shl(), op.i32Add(), op.localSet(5),
    op.block(),
    op.localGet(2), op.localGet(5), op.i32GeU(), op.brIf(0),
    op.loop(),
    // 8 floats per iteration: two at a time widened to f64x2
    ...[0, 1, 2, 3].flatMap((k) => [
      op.localGet(0),
      op.localGet(1), op.v128Load(16 * k),
      op.localGet(2), op.v128Load64Zero(8 * k), op.f64x2PromoteLowF32x4(), op.localGet(6), op.f64x2Mul(),
      op.f64x2Add(),
      op.v128Store(16 * k),
    ]),
    op.localGet(0), op.i32Const(64), op.i32Add(), op.localSet(0),
    op.localGet(1), op.i32Const(64), op.i32Add(), op.localSet(1),
    op.localGet(2), op.i32Const(32), op.i32Add(), op.localTee(2), op.localGet(5), op.i32LtU(), op.brIf(0),
    op.end(),
    op.end(),
  ],
};

// locals of scale(out, acc, n, s): 0 out, 1 acc, 2 n, 3 s, 4 end, 5 sv.  out = f32(acc * s)
const lowHalves = [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23];
const scaleFn: FuncDef = {
  name: 'scale',
  params: [i32, i32, i32, f64],
  results: [],
  locals: [i32, v128],
  body: [
    op.localGet(3), op.f64x2Splat(), op.localSet(5),
    op.localGet(0), op.localGet(2), op.i32Const(2), op.i32Shl(), op.i32Add(), op.localSet(4),
    op.block(),
    op.localGet(0), op.localGet(4), op.i32GeU(), op.brIf(0),
    op.loop(),
    op.localGet(0),
    op.localGet(1), op.v128Load(0), op.localGet(5), op.f64x2Mul(), op.f32x4DemoteF64x2Zero(),
    op.localGet(1), op.v128Load(16), op.localGet(5), op.f64x2Mul(), op.f32x4DemoteF64x2Zero(),
    op.i8x16Shuffle(lowHalves),
    op.v128Store(0),
    op.localGet(1), op.i32Const(32), op.i32Add(), op.localSet(1),
    op.localGet(0), op.i32Const(16), op.i32Add(), op.localTee(0), op.localGet(4), op.i32LtU(), op.brIf(0),
    op.end(),
    op.end(),
  ],
};

interface KernelExports {
  bad(x: number, n: number): number;
  axpy(dst: number, src: number, x: number, n: number, w: number): void;
  scale(out: number, acc: number, n: number, s: number): void;
}

let compiled: WebAssembly.Module | null | undefined;

/** The compiled kernel module, or null when this runtime has no WebAssembly SIMD. */
export function kernelModule(): WebAssembly.Module | null {
  if (compiled !== undefined) return compiled;
  try {
    const bytes = encodeModule([badFn, axpyFn, scaleFn]);
    compiled = WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
  } catch {
    compiled = null;
  }
  return compiled;
}

export const wasmAvailable = (): boolean => kernelModule() !== null;

const PAGE = 65536;
// wasm32 addresses 4 GiB; 16 bytes per parameter (two Float64 buffers) plus the block.
const MAX_WASM_SIZE = Math.floor((4 * 1024 ** 3 - 2 * PAGE) / 16) - BLOCK;

class WasmWeightedSum implements WeightedSum {
  readonly kind = 'wasm' as const;
  private readonly k: KernelExports;
  private readonly mem: WebAssembly.Memory;
  private readonly padded: number;
  private readonly stageAt = 0;
  private cur: number;
  private next: number;
  private stage: Float32Array;

  constructor(readonly size: number, module: WebAssembly.Module) {
    this.padded = padTo(Math.max(size, 1), LANES);
    const bytes = BLOCK * 4 + 2 * this.padded * 8;
    this.mem = new WebAssembly.Memory({ initial: Math.ceil(bytes / PAGE) });
    this.k = new WebAssembly.Instance(module, { env: { mem: this.mem } }).exports as unknown as KernelExports;
    this.cur = BLOCK * 4;
    this.next = this.cur + this.padded * 8;
    this.stage = new Float32Array(this.mem.buffer, this.stageAt, BLOCK);
  }

  add(x: Float32Array, weight: number): void {
    const { k, stage, size } = this;
    for (let start = 0; start < size; start += BLOCK) {
      const len = Math.min(BLOCK, size - start);
      const lanes = padTo(len, LANES);
      stage.set(len === BLOCK ? x.subarray(start, start + BLOCK) : x.subarray(start, start + len));
      // a short last block: zero the padding, left over from the previous full block
      if (lanes !== len) stage.fill(0, len, lanes);
      if (k.bad(this.stageAt, lanes) !== 0) {
        throw new FedError('not-finite', `update holds a non-finite value in [${start}, ${start + len})`);
      }
      k.axpy(this.next + start * 8, this.cur + start * 8, this.stageAt, lanes, weight);
    }
    const t = this.cur;
    this.cur = this.next;
    this.next = t;
  }

  scaled(scale: number): Float32Array {
    // the result goes to the spare buffer (its contents are dead until the next add writes it)
    this.k.scale(this.next, this.cur, this.padded, scale);
    return new Float32Array(this.mem.buffer, this.next, this.size).slice();
  }

  snapshot(): Float64Array {
    return new Float64Array(this.mem.buffer, this.cur, this.size).slice();
  }
}

class JsWeightedSum implements WeightedSum {
  readonly kind = 'js' as const;
  private readonly acc: Float64Array;

  constructor(readonly size: number) {
    this.acc = new Float64Array(size);
  }

  add(x: Float32Array, weight: number): void {
    const { acc, size } = this;
    // checked in full first: a NaN found half-way would otherwise leave half of x folded in
    for (let i = 0; i < size; i++) {
      const v = x[i]!;
      if (v - v !== 0) throw new FedError('not-finite', `update holds a non-finite value at ${i}`);
    }
    for (let i = 0; i < size; i++) acc[i]! += weight * x[i]!;
  }

  scaled(scale: number): Float32Array {
    const out = new Float32Array(this.size);
    const { acc } = this;
    for (let i = 0; i < out.length; i++) out[i] = acc[i]! * scale;
    return out;
  }

  snapshot(): Float64Array {
    return this.acc.slice();
  }
}

/**
 * A weighted-sum accumulator over `size` parameters. `kind` defaults to 'wasm' when the runtime supports
 * WebAssembly SIMD and the size fits in a wasm32 memory, else 'js'. The environment variable
 * FEDSTATE_KERNEL=js forces the fallback (for comparison and as an escape hatch).
 */
export function createWeightedSum(size: number, kind?: KernelKind): WeightedSum {
  if (!Number.isSafeInteger(size) || size < 0) throw new FedError('config', `size must be a non-negative integer, got ${size}`);
  const forced = typeof process === 'undefined' ? undefined : process.env?.FEDSTATE_KERNEL;
  const want = kind ?? (forced === 'js' ? 'js' : 'wasm');
  const module = want === 'wasm' && size <= MAX_WASM_SIZE ? kernelModule() : null;
  if (want === 'wasm' && kind === 'wasm' && module === null) {
    throw new FedError('config', 'the wasm kernel is not available in this runtime (no WebAssembly SIMD, or size too large)');
  }
  return module ? new WasmWeightedSum(size, module) : new JsWeightedSum(size);
}
