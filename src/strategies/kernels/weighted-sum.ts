// The weighted-sum kernel behind streaming FedAvg: acc (Float64) += w * x (Float32), refusing an x that
// holds a NaN or an infinity before any of it reaches acc.
//
// Two implementations with one contract, so the fallback is always there and tests prove they agree bit
// for bit:
//   - 'wasm': WebAssembly SIMD emitted by ./wasm-encoder.ts (no wat2wasm or clang-for-wasm32 on our
//     machines; the encoder is ~150 lines). One fused pass per batch of updates: check, widen, multiply, add.
//   - 'js':   plain typed-array loops, a tenth of C's speed here (bench/aggregate.ts).
//
// Float64 sum, not a Float32 running mean (FEDn's increment_average): the bench measures both. In C the
// running mean is ~30% faster (it moves half the accumulator bytes), but over 1000 updates it is off by
// up to ~19 Float32 ulps and rounds only ~8% of coordinates correctly, while the Float64 sum, divided once
// at the end, rounds 100% of them correctly. That exactness is what makes identical inputs come back
// bit-identical and hierarchical FedAvg equal flat FedAvg to one Float32 rounding; we keep it.
//
// Why batches, and two Float64 buffers: the fold is bound by memory traffic on the Float64 sum (8 bytes
// per parameter read and written per update, against 4 bytes of update read). So the kernel folds up to
// BATCH waiting updates in one pass over the sum: next = cur + w1*x1 + w2*x2 + ..., in that order per
// coordinate, which rounds exactly as adding them one by one does (the JS kernel, sequential, agrees bit
// for bit). The pass also checks its result for NaN and infinities, which is exactly checking every value
// it read (see foldFn), so each update is read once. A refused update must leave no trace, and subtracting a
// folded one back out is not exact in floating point; so the pass writes into the spare buffer, and
// only a clean pass becomes current. A pass that found a non-finite update is redone without it.
//
// When an update is refused: add() of an ordinary array copies it into the kernel's memory and checks
// it there at once (the copy is still in cache), so add() throws and nothing changes. An update written
// into a stage slot (the zero-copy path) is read first by the batched pass, so its refusal is reported
// when that pass runs, through the onRefused callback; it is excluded exactly all the same.
//
// Measured (bench/aggregate.ts, 100 x 1M parameters, 2-core EPYC, same run as gcc -O3 -march=native):
// one update per pass, double-buffered, ran at 0.51-0.57 of the plain C loop; four per pass at
// 0.66-0.69; eight per pass with the check on the result at 0.70-0.72; sixteen at 0.84-0.97; a
// separate check pass before an in-place fold at ~0.55 (it reads every update twice from DRAM).
import { FedError } from '../../errors.ts';
import { firstNonFinite } from '../../model/params.ts';
import { bytesOf, copyInto } from '../../util/shared-copy.ts';
import { encodeModule, op, valType, type FuncDef, type ValType } from './wasm-encoder.ts';

export type KernelKind = 'wasm' | 'js';

/** An update a batched pass refused (see the header): which add() it was, its weight, where it failed. */
export interface DeferredRefusal {
  tag: number;
  weight: number;
  error: FedError;
}

export interface WeightedSum {
  readonly kind: KernelKind;
  readonly size: number;
  /** Bytes of memory the kernel holds: sums, inbox and stage slots. */
  readonly memoryBytes: number;
  /**
   * sum += weight * x (possibly later, in a batch: see flush). An x that is not a stage slot is copied
   * and checked at once: a NaN or an infinity throws FedError('not-finite') and changes nothing. A
   * stage slot is checked when its batch is folded; a refusal then goes to onRefused with `tag`.
   */
  add(x: Float32Array, weight: number, tag?: number): void;
  /** Folds every update add() has kept waiting; stage slots are free again afterwards. */
  flush(): void;
  /** Float32(sum * scale) into `into` (`size` floats) or else a fresh array (flushes first). */
  scaled(scale: number, into?: Float32Array): Float32Array;
  /** A copy of the Float64 sum (for tests and for checkpointing; flushes first). */
  snapshot(): Float64Array;
  /** Back to an empty sum, dropping waiting updates, keeping the memory (already mapped in). */
  reset(): void;
  /**
   * Stage slot `slot`: a Float32Array of `size` inside the kernel's memory. Write an update into it
   * (e.g. decode model bytes into it) and pass it to add(): the kernel folds it where it is, without
   * the copy add() otherwise makes. Ask for the slot again before rewriting it: a slot whose update
   * still waits for its batch is folded first. Slots are reserved with `stageSlots` at creation.
   */
  stage(slot: number): Float32Array;
  /**
   * Stage slot `slot` as bytes, starting `prefix` bytes before its first float (at most the
   * `stageHeadroom` reserved at creation) and ending with its last: room to receive a whole encoded
   * model whose data section then lands exactly on the slot. Like stage(), folds a waiting slot first.
   */
  stageBytes(slot: number, prefix: number): Uint8Array;
}

// Every length the kernels see is a multiple of this; buffers are padded with zeros, which add nothing.
const LANES = 16;
const padTo = (n: number, m: number): number => Math.ceil(n / m) * m;

const { i32, f64, v128 } = valType;

// check(x, n) -> i32: 1 when x (n floats, n a multiple of 16) holds a NaN or an infinity. x - x is +0 for
// every finite x and NaN otherwise; the bits of four vectors are OR-ed per step, tested once at the end.
// locals: 0 x, 1 n, 2 end, 3 seen, 4 t
const checkFn: FuncDef = {
  name: 'check',
  params: [i32, i32],
  results: [i32],
  locals: [i32, v128, v128],
  body: [
    op.localGet(0), op.localGet(1), op.i32Const(2), op.i32Shl(), op.i32Add(), op.localSet(2),
    op.block(),
    op.localGet(0), op.localGet(2), op.i32GeU(), op.brIf(0),
    op.loop(),
    ...[0, 1, 2, 3].flatMap((q) => [
      op.localGet(0), op.v128Load(16 * q), op.localTee(4), op.localGet(4), op.f32x4Sub(),
      ...(q === 0 ? [] : [op.v128Or()]),
    ]),
    op.localGet(3), op.v128Or(), op.localSet(3),
    op.localGet(0), op.i32Const(64), op.i32Add(), op.localTee(0), op.localGet(2), op.i32LtU(), op.brIf(0),
    op.end(),
    op.end(),
    op.localGet(3), op.v128AnyTrue(),
  ],
};

// Updates folded per pass over the sum (see the header). Measured per 100 updates of 1M parameters on
// the 2-core EPYC (fold time of the zero-copy path): 8 per pass 18 ms, 12 15.5 ms, 16 15 ms, 20 16.5 ms,
// 32 18 ms. Past 16 it slows again, likely from spills: 16 weights plus the sums already exceed the 16
// SIMD registers V8 allocates, and each extra update adds a stream the prefetchers must follow.
export const BATCH = 16;
// Inbox slots for copies of ordinary arrays: a full inbox folds the batch early, so copied updates go 4
// per pass while staged ones go up to BATCH, and the copy path costs 16 bytes per parameter, not 32.
const INBOX = 4;
const highToLow = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];

/**
 * foldK(dst, src, x_1..x_k, n, w_1..w_k) -> i32: dst = src + w_1*x_1 + ... + w_k*x_k over n floats (n a
 * multiple of 8), Float64 dst/src, Float32 x_j, added in that order per coordinate. Returns 1 when some
 * coordinate of dst is a NaN or an infinity (dst must then not be used), else 0.
 *
 * Checking dst instead of every x_j is exact, not a heuristic: src is finite (only clean passes become
 * current), each weight is finite and positive, and every partial sum is bounded by the total weight
 * times the largest Float32, at most 2^800 * 2^128 (fedavg.ts caps the total weight), so a finite batch
 * cannot overflow, while a NaN or infinity in any x_j makes w_j * x_j, and so the sum, non-finite.
 * One check per coordinate instead of one per coordinate per update: ~5% faster at 4 per pass.
 */
function foldFn(k: number): FuncDef {
  // params: 0 dst, 1 src, 2..k+1 x_j, k+2 n, k+3.. w_j; then locals
  const X = 2;
  const n = k + 2;
  const w = k + 3;
  const end = 2 * k + 3;
  const off = end + 1;
  const wv = off + 1;
  const seen = wv + k;
  const lo = seen + 1;
  const hi = lo + 1;
  const v = hi + 1;
  const body: number[][] = [];
  for (let j = 0; j < k; j++) body.push(op.localGet(w + j), op.f64x2Splat(), op.localSet(wv + j));
  body.push(op.localGet(X), op.localGet(n), op.i32Const(2), op.i32Shl(), op.i32Add(), op.localSet(end));
  body.push(op.block(), op.localGet(X), op.localGet(end), op.i32GeU(), op.brIf(0), op.loop());
  for (let q = 0; q < 2; q++) {
    body.push(op.localGet(1), op.v128Load(32 * q), op.localSet(lo), op.localGet(1), op.v128Load(32 * q + 16), op.localSet(hi));
    for (let j = 0; j < k; j++) {
      body.push(
        op.localGet(X + j), op.localGet(off), op.i32Add(), op.v128Load(16 * q), op.localSet(v),
        op.localGet(lo), op.localGet(v), op.f64x2PromoteLowF32x4(), op.localGet(wv + j), op.f64x2Mul(), op.f64x2Add(), op.localSet(lo),
        op.localGet(hi), op.localGet(v), op.localGet(v), op.i8x16Shuffle(highToLow), op.f64x2PromoteLowF32x4(), op.localGet(wv + j), op.f64x2Mul(),
        op.f64x2Add(), op.localSet(hi),
      );
    }
    body.push(
      // d - d is +0 for a finite d and NaN otherwise
      op.localGet(seen), op.localGet(lo), op.localGet(lo), op.f64x2Sub(), op.v128Or(), op.localGet(hi), op.localGet(hi), op.f64x2Sub(), op.v128Or(),
      op.localSet(seen),
      op.localGet(0), op.localGet(lo), op.v128Store(32 * q), op.localGet(0), op.localGet(hi), op.v128Store(32 * q + 16),
    );
  }
  body.push(
    op.localGet(0), op.i32Const(64), op.i32Add(), op.localSet(0),
    op.localGet(1), op.i32Const(64), op.i32Add(), op.localSet(1),
    op.localGet(off), op.i32Const(32), op.i32Add(), op.localTee(off),
    op.localGet(X), op.i32Add(), op.localGet(end), op.i32LtU(), op.brIf(0),
    op.end(), op.end(),
    op.localGet(seen), op.v128AnyTrue(),
  );
  return {
    name: `fold${k}`,
    params: [i32, i32, ...Array<ValType>(k).fill(i32), i32, ...Array<ValType>(k).fill(f64)],
    results: [i32],
    locals: [i32, i32, ...Array<ValType>(k).fill(v128), v128, v128, v128, v128],
    body,
  };
}

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

type FoldK = (dst: number, src: number, ...xsThenNThenWeights: number[]) => number;

interface KernelExports {
  check(x: number, n: number): number;
  scale(out: number, acc: number, n: number, s: number): void;
}

let compiled: WebAssembly.Module | null | undefined;

/** The compiled kernel module, or null when this runtime has no WebAssembly SIMD. */
export function kernelModule(): WebAssembly.Module | null {
  if (compiled !== undefined) return compiled;
  try {
    const bytes = encodeModule([checkFn, scaleFn, ...Array.from({ length: BATCH }, (_, i) => foldFn(i + 1))], { shared: true });
    compiled = WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
  } catch {
    compiled = null;
  }
  return compiled;
}

export const wasmAvailable = (): boolean => kernelModule() !== null;

const PAGE = 65536;
// wasm32 addresses 4 GiB: two Float64 sums (16 bytes per parameter), INBOX inbox slots and the stage
// slots (4 bytes per parameter each).
const MAX_WASM_BYTES = 4 * 1024 ** 3 - PAGE;
const wasmBytes = (padded: number, slots: number, headroom: number): number => padded * 16 + INBOX * padded * 4 + slots * (headroom + padded * 4);
/** Headroom before each stage slot, rounded up so every slot stays 64-byte aligned. */
const roundHeadroom = (bytes: number): number => padTo(bytes, 64);

function slotBytes(view: Float32Array, prefix: number, headroom: number): Uint8Array {
  if (!Number.isSafeInteger(prefix) || prefix < 0 || prefix > headroom) {
    throw new FedError('config', `a prefix of ${prefix} bytes does not fit the ${headroom}-byte headroom before each stage slot`);
  }
  return new Uint8Array(view.buffer, view.byteOffset - prefix, prefix + view.byteLength);
}

function checkInto(into: Float32Array, size: number): void {
  if (!(into instanceof Float32Array) || into.length !== size) {
    throw new FedError('wrong-shape', `the aggregate has ${size} parameters; the array to write it into has ${into?.length}`);
  }
}

interface Waiting {
  at: number;
  weight: number;
  tag: number;
}

class WasmWeightedSum implements WeightedSum {
  readonly kind = 'wasm' as const;
  private readonly k: KernelExports;
  private readonly folds: FoldK[];
  private readonly mem: WebAssembly.Memory;
  private readonly padded: number;
  private cur: number;
  private next: number;
  private readonly inboxAt: number;
  private readonly slotsAt: number;
  private readonly inbox: Float32Array[];
  private readonly slotViews: Float32Array[];
  private readonly slotStride: number;
  private readonly waiting: Waiting[] = [];
  private inboxUsed = 0;

  constructor(
    readonly size: number,
    module: WebAssembly.Module,
    slots: number,
    private readonly headroom: number,
    private readonly onRefused: (refusal: DeferredRefusal) => void,
  ) {
    this.padded = padTo(Math.max(size, 1), LANES);
    // layout: [sum A][sum B][INBOX inbox slots][headroom, stage slot]..., every part 64-byte aligned.
    // The inbox holds copies of ordinary arrays until their batch is folded; scaled() writes its result
    // there. The headroom before a slot takes an encoded model's header (see stageBytes).
    const stride = this.padded * 4;
    this.cur = 0;
    this.next = this.padded * 8;
    this.inboxAt = this.padded * 16;
    this.slotsAt = this.inboxAt + INBOX * stride + headroom;
    this.slotStride = headroom + stride;
    // Shared, so an update received into a stage slot can be hashed by the link's worker thread while it
    // arrives; the memory never grows, so its maximum is its size.
    const pages = Math.ceil(wasmBytes(this.padded, slots, headroom) / PAGE);
    this.mem = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    const exports = new WebAssembly.Instance(module, { env: { mem: this.mem } }).exports as Record<string, unknown>;
    this.k = exports as unknown as KernelExports;
    this.folds = Array.from({ length: BATCH }, (_, i) => exports[`fold${i + 1}`] as FoldK);
    // the memory never grows after this, so these views stay attached
    this.inbox = Array.from({ length: INBOX }, (_, i) => new Float32Array(this.mem.buffer, this.inboxAt + i * stride, size));
    this.slotViews = Array.from({ length: slots }, (_, i) => new Float32Array(this.mem.buffer, this.slotsAt + i * this.slotStride, size));
  }

  stageBytes(slot: number, prefix: number): Uint8Array {
    const view = this.stage(slot);
    return slotBytes(view, prefix, this.headroom);
  }

  get memoryBytes(): number {
    return this.mem.buffer.byteLength;
  }

  stage(slot: number): Float32Array {
    const view = this.slotViews[slot];
    if (!view) throw new FedError('config', `stage slot ${slot} does not exist (the accumulator has ${this.slotViews.length})`);
    if (this.waiting.some((w) => w.at === view.byteOffset)) this.flush();
    return view;
  }

  private isSlot(x: Float32Array): boolean {
    if (x.buffer !== this.mem.buffer || x.length !== this.size) return false;
    const rel = x.byteOffset - this.slotsAt;
    return rel >= 0 && rel % this.slotStride === 0 && rel / this.slotStride < this.slotViews.length;
  }

  add(x: Float32Array, weight: number, tag = 0): void {
    let at = x.byteOffset;
    if (this.isSlot(x)) {
      if (this.waiting.some((w) => w.at === at)) {
        throw new FedError('config', 'this stage slot still holds an update waiting to be folded: ask stage() for it again before rewriting it');
      }
    } else {
      if (this.inboxUsed === INBOX) this.flush();
      const box = this.inbox[this.inboxUsed]!;
      // the padding after `size` is never written, so it stays zero and adds nothing
      copyInto(bytesOf(box), bytesOf(x), 0);
      at = box.byteOffset;
      if (this.k.check(at, this.padded) !== 0) throw new FedError('not-finite', `update holds a non-finite value at ${firstNonFinite(x)}`);
      this.inboxUsed++;
    }
    this.waiting.push({ at, weight, tag });
    if (this.waiting.length === BATCH) this.flush();
  }

  flush(): void {
    const batch = this.waiting.splice(0);
    this.inboxUsed = 0;
    if (batch.length === 0) return;
    if (this.fold(batch) !== 0) {
      // rare: find the non-finite updates one by one, then fold the others again from the same sum
      const good: Waiting[] = [];
      for (const w of batch) {
        if (this.k.check(w.at, this.padded) === 0) good.push(w);
        else {
          const at = firstNonFinite(new Float32Array(this.mem.buffer, w.at, this.size));
          this.onRefused({ tag: w.tag, weight: w.weight, error: new FedError('not-finite', `update holds a non-finite value at ${at}`) });
        }
      }
      if (good.length === batch.length) throw new FedError('internal', 'a batch of finite updates summed to a non-finite value');
      if (good.length === 0) return;
      if (this.fold(good) !== 0) throw new FedError('internal', 'a batch of checked updates was refused on its second pass');
    }
    // the pass was clean: its result becomes the sum
    const t = this.cur;
    this.cur = this.next;
    this.next = t;
  }

  private fold(batch: readonly Waiting[]): number {
    const fold = this.folds[batch.length - 1]!;
    return fold(this.next, this.cur, ...batch.map((w) => w.at), this.padded, ...batch.map((w) => w.weight));
  }

  scaled(scale: number, into?: Float32Array): Float32Array {
    this.flush();
    const out = this.inbox[0]!;
    this.k.scale(out.byteOffset, this.cur, this.padded, scale);
    if (!into) return out.slice();
    checkInto(into, this.size);
    copyInto(bytesOf(into), bytesOf(out), 0);
    return into;
  }

  snapshot(): Float64Array {
    this.flush();
    return new Float64Array(this.mem.buffer, this.cur, this.size).slice();
  }

  reset(): void {
    this.waiting.length = 0;
    this.inboxUsed = 0;
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
    private readonly headroom: number,
  ) {
    this.acc = new Float64Array(size);
    this.slots = Array.from({ length: slots }, () => new Float32Array(new ArrayBuffer(headroom + size * 4), headroom, size));
  }

  stage(slot: number): Float32Array {
    const view = this.slots[slot];
    if (!view) throw new FedError('config', `stage slot ${slot} does not exist (the accumulator has ${this.slots.length})`);
    return view;
  }

  stageBytes(slot: number, prefix: number): Uint8Array {
    return slotBytes(this.stage(slot), prefix, this.headroom);
  }

  get memoryBytes(): number {
    return this.acc.byteLength + this.slots.reduce((n, v) => n + v.buffer.byteLength, 0);
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

  flush(): void {
    // nothing waits: every add() folds at once
  }

  scaled(scale: number, into?: Float32Array): Float32Array {
    const out = into ?? new Float32Array(this.size);
    checkInto(out, this.size);
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

const ignoreRefusal = (): void => undefined;

export interface WeightedSumOptions {
  /** 'wasm' (default when the runtime has WebAssembly SIMD) or 'js'. */
  kind?: KernelKind;
  /** Stage slots to reserve for zero-copy adds (see WeightedSum.stage); default 0. */
  stageSlots?: number;
  /** Receives a staged update refused when its batch was folded (see WeightedSum.add). */
  onRefused?: (refusal: DeferredRefusal) => void;
  /** Bytes reserved before each stage slot for stageBytes(); default 0, rounded up to 64. */
  stageHeadroom?: number;
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
  const asked = o.stageHeadroom ?? 0;
  if (!Number.isSafeInteger(asked) || asked < 0) throw new FedError('config', `stageHeadroom must be a non-negative integer, got ${asked}`);
  const headroom = roundHeadroom(asked);
  const padded = padTo(Math.max(size, 1), LANES);
  const fits = wasmBytes(padded, slots, headroom) <= MAX_WASM_BYTES;
  const module = want === 'wasm' && fits ? kernelModule() : null;
  if (o.kind === 'wasm' && module === null) {
    throw new FedError('config', 'the wasm kernel is not available here (no WebAssembly SIMD, or the model does not fit a wasm32 memory)');
  }
  return module ? new WasmWeightedSum(size, module, slots, headroom, o.onRefused ?? ignoreRefusal) : new JsWeightedSum(size, slots, headroom);
}
