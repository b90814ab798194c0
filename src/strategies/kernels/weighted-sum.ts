// The weighted-sum kernel behind streaming FedAvg: acc (Float64) += w * x (Float32), refusing an x that
// holds a NaN or an infinity before any of it reaches acc.
//
// Two implementations with one contract, so the fallback is always there and tests prove they agree bit
// for bit:
//   - 'wasm': WebAssembly SIMD emitted by ./wasm-encoder.ts (no wat2wasm or clang-for-wasm32 on our
//     machines; the encoder is ~150 lines). One fused pass per update: check + widen + multiply + add.
//   - 'js':   plain typed-array loops, a tenth of C's speed here (bench/aggregate.ts).
//
// Float64 sum, not a Float32 running mean (FEDn's increment_average): the bench measures both. In C the
// running mean is ~30% faster (it moves half the accumulator bytes), but over 1000 updates it is off by
// up to ~19 Float32 ulps and rounds only ~8% of coordinates correctly, while the Float64 sum, divided once
// at the end, rounds 100% of them correctly. That exactness is what makes identical inputs come back
// bit-identical and hierarchical FedAvg equal flat FedAvg to one Float32 rounding; we keep it.
//
// Why double buffering: a NaN found in a late block must not leave the early blocks folded in, and
// subtracting them back out is not exact in floating point (and a huge adversarial update would wipe the
// small coordinates it passed through). So each pass writes next = acc + w*x into the other Float64
// buffer and the buffers swap only when the whole update passed: exact refusal with one read of x.
//
// Where the time goes (1M parameters x 100 updates, bench machine): the plain C loop is memory-bound at
// ~18 ms. Copying JS arrays into wasm memory alone costs ~15 ms (that much is DRAM bandwidth), and the
// fused wasm pass ~21 ms even on cached data (128-bit SIMD against gcc's 512-bit). So add() of an
// ordinary Float32Array lands around 0.4-0.5 of C; an update written straight into a stage slot (the
// zero-copy path: decode model bytes into stage(), then add it) skips the copy: ~0.55-0.7.
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
  /** Back to an empty sum, keeping the memory (already mapped in, so the next round skips page faults). */
  reset(): void;
  /**
   * Stage slot `slot`: a Float32Array of `size` inside the kernel's memory. Write an update into it
   * (e.g. decode model bytes into it) and pass it to add(): the kernel folds it where it is, without
   * the copy add() otherwise makes. Slots are reserved with `stageSlots` at creation.
   */
  stage(slot: number): Float32Array;
}

// Block of an update copied into wasm memory at a time on the copy path (floats). 16384 floats = 64 KiB
// stay in L2 between the copy and the fold; measured: 2K blocks are slower (call overhead), 16K-64K best.
const BLOCK = 16384;
// Every length the kernels see is a multiple of this; buffers are padded with zeros, which add nothing.
const LANES = 16;
const padTo = (n: number, m: number): number => Math.ceil(n / m) * m;

const { i32, f64, v128 } = valType;

// fold(dst, src, x, n, w) -> i32: dst = src + w * x over n floats (n a multiple of 8), Float64 dst/src,
// Float32 x; returns 1 when x holds a NaN or an infinity. One pass: x is read once, and the check costs
// two instructions per 4 floats (x - x is +0 for every finite x and NaN otherwise; the bits are OR-ed).
// locals: 0 dst, 1 src, 2 x, 3 n, 4 w, 5 end, 6 wv, 7 seen, 8 v
const highToLow = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];
const foldFn: FuncDef = {
  name: 'fold',
  params: [i32, i32, i32, i32, f64],
  results: [i32],
  locals: [i32, v128, v128, v128],
  body: [
    op.localGet(4), op.f64x2Splat(), op.localSet(6),
    op.localGet(2), op.localGet(3), op.i32Const(2), op.i32Shl(), op.i32Add(), op.localSet(5),
    op.block(),
    op.localGet(2), op.localGet(5), op.i32GeU(), op.brIf(0),
    op.loop(),
    ...[0, 1].flatMap((q) => [
      op.localGet(2), op.v128Load(16 * q), op.localSet(8),
      op.localGet(7), op.localGet(8), op.localGet(8), op.f32x4Sub(), op.v128Or(), op.localSet(7),
      op.localGet(0),
      op.localGet(1), op.v128Load(32 * q),
      op.localGet(8), op.f64x2PromoteLowF32x4(), op.localGet(6), op.f64x2Mul(),
      op.f64x2Add(),
      op.v128Store(32 * q),
      op.localGet(0),
      op.localGet(1), op.v128Load(32 * q + 16),
      op.localGet(8), op.localGet(8), op.i8x16Shuffle(highToLow), op.f64x2PromoteLowF32x4(), op.localGet(6), op.f64x2Mul(),
      op.f64x2Add(),
      op.v128Store(32 * q + 16),
    ]),
    op.localGet(0), op.i32Const(64), op.i32Add(), op.localSet(0),
    op.localGet(1), op.i32Const(64), op.i32Add(), op.localSet(1),
    op.localGet(2), op.i32Const(32), op.i32Add(), op.localTee(2), op.localGet(5), op.i32LtU(), op.brIf(0),
    op.end(),
    op.end(),
    op.localGet(7), op.v128AnyTrue(),
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
  fold(dst: number, src: number, x: number, n: number, w: number): number;
  scale(out: number, acc: number, n: number, s: number): void;
}

let compiled: WebAssembly.Module | null | undefined;

/** The compiled kernel module, or null when this runtime has no WebAssembly SIMD. */
export function kernelModule(): WebAssembly.Module | null {
  if (compiled !== undefined) return compiled;
  try {
    const bytes = encodeModule([foldFn, scaleFn]);
    compiled = WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
  } catch {
    compiled = null;
  }
  return compiled;
}

export const wasmAvailable = (): boolean => kernelModule() !== null;

const PAGE = 65536;
// wasm32 addresses 4 GiB: two Float64 buffers (16 bytes per parameter) plus stage slots (4 each).
const MAX_WASM_BYTES = 4 * 1024 ** 3 - PAGE;

class WasmWeightedSum implements WeightedSum {
  readonly kind = 'wasm' as const;
  private readonly k: KernelExports;
  private readonly mem: WebAssembly.Memory;
  private readonly padded: number;
  private readonly blockAt: number;
  private readonly slotsAt: number;
  private cur: number;
  private next: number;
  private readonly block: Float32Array;
  private readonly slotViews: Float32Array[];

  constructor(
    readonly size: number,
    module: WebAssembly.Module,
    slots: number,
  ) {
    this.padded = padTo(Math.max(size, 1), LANES);
    // layout: [acc A][acc B][copy block][stage slots...], every part 64-byte aligned
    this.cur = 0;
    this.next = this.padded * 8;
    this.blockAt = 2 * this.padded * 8;
    this.slotsAt = this.blockAt + BLOCK * 4;
    const bytes = this.slotsAt + slots * this.padded * 4;
    this.mem = new WebAssembly.Memory({ initial: Math.ceil(bytes / PAGE) });
    this.k = new WebAssembly.Instance(module, { env: { mem: this.mem } }).exports as unknown as KernelExports;
    this.block = new Float32Array(this.mem.buffer, this.blockAt, BLOCK);
    // the memory never grows after this, so these views stay attached
    this.slotViews = Array.from({ length: slots }, (_, i) => new Float32Array(this.mem.buffer, this.slotsAt + i * this.padded * 4, size));
  }

  stage(slot: number): Float32Array {
    const view = this.slotViews[slot];
    if (!view) throw new FedError('config', `stage slot ${slot} does not exist (the accumulator has ${this.slotViews.length})`);
    return view;
  }

  private slotOf(x: Float32Array): number {
    if (x.buffer !== this.mem.buffer || x.length !== this.size) return -1;
    const rel = x.byteOffset - this.slotsAt;
    const stride = this.padded * 4;
    return rel >= 0 && rel % stride === 0 && rel / stride < this.slotViews.length ? rel / stride : -1;
  }

  add(x: Float32Array, weight: number): void {
    const { k, size } = this;
    const slot = this.slotOf(x);
    if (slot >= 0) {
      // zero-copy: the update was written straight into a stage slot (its padding stays zero)
      if (k.fold(this.next, this.cur, this.slotsAt + slot * this.padded * 4, this.padded, weight) !== 0) {
        throw new FedError('not-finite', 'update holds a non-finite value');
      }
    } else {
      const { block } = this;
      for (let start = 0; start < size; start += BLOCK) {
        const len = Math.min(BLOCK, size - start);
        const lanes = padTo(len, LANES);
        block.set(len === BLOCK ? x.subarray(start, start + BLOCK) : x.subarray(start, start + len));
        // a short last block: zero the padding left over from the previous full block
        if (lanes !== len) block.fill(0, len, lanes);
        if (k.fold(this.next + start * 8, this.cur + start * 8, this.blockAt, lanes, weight) !== 0) {
          throw new FedError('not-finite', `update holds a non-finite value in [${start}, ${start + len})`);
        }
      }
    }
    // every block passed: the new sum becomes current (a refused update never gets here)
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

  reset(): void {
    new Float64Array(this.mem.buffer, this.cur, this.padded).fill(0);
  }
}

class JsWeightedSum implements WeightedSum {
  readonly kind = 'js' as const;
  private readonly acc: Float64Array;
  private readonly slots: Float32Array[];

  constructor(
    readonly size: number,
    slots: number,
  ) {
    this.acc = new Float64Array(size);
    this.slots = Array.from({ length: slots }, () => new Float32Array(size));
  }

  stage(slot: number): Float32Array {
    const view = this.slots[slot];
    if (!view) throw new FedError('config', `stage slot ${slot} does not exist (the accumulator has ${this.slots.length})`);
    return view;
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

  reset(): void {
    this.acc.fill(0);
  }
}

export interface WeightedSumOptions {
  /** 'wasm' (default when the runtime has WebAssembly SIMD) or 'js'. */
  kind?: KernelKind;
  /** Stage slots to reserve for zero-copy adds (see WeightedSum.stage); default 0. */
  stageSlots?: number;
}

/**
 * A weighted-sum accumulator over `size` parameters. The kernel defaults to 'wasm' when the runtime
 * supports WebAssembly SIMD and everything fits in a wasm32 memory, else 'js'. The environment variable
 * FEDSTATE_KERNEL=js forces the fallback (for comparison and as an escape hatch).
 */
export function createWeightedSum(size: number, options: KernelKind | WeightedSumOptions = {}): WeightedSum {
  const o: WeightedSumOptions = typeof options === 'string' ? { kind: options } : options;
  if (!Number.isSafeInteger(size) || size < 0) throw new FedError('config', `size must be a non-negative integer, got ${size}`);
  const slots = o.stageSlots ?? 0;
  if (!Number.isSafeInteger(slots) || slots < 0) throw new FedError('config', `stageSlots must be a non-negative integer, got ${slots}`);
  const forced = typeof process === 'undefined' ? undefined : process.env?.FEDSTATE_KERNEL;
  const want = o.kind ?? (forced === 'js' ? 'js' : 'wasm');
  const padded = padTo(Math.max(size, 1), LANES);
  const fits = 2 * padded * 8 + BLOCK * 4 + slots * padded * 4 <= MAX_WASM_BYTES;
  const module = want === 'wasm' && fits ? kernelModule() : null;
  if (o.kind === 'wasm' && module === null) {
    throw new FedError('config', 'the wasm kernel is not available here (no WebAssembly SIMD, or the model does not fit a wasm32 memory)');
  }
  return module ? new WasmWeightedSum(size, module, slots) : new JsWeightedSum(size, slots);
}
