// A tiny WebAssembly binary encoder: just enough of the module format and instruction set to emit the
// aggregation kernels at run time. Why not wat2wasm/clang: neither is on the machines this project runs
// on (no clang with a wasm32 target; `wabt` would be a build-time dependency for ~100 bytes of code), and
// generating the bytes from TypeScript keeps the kernels reviewable next to their JS fallbacks.
//
// Only the opcodes the kernels use are named here. Reference: WebAssembly core spec 2.0, section 5
// (binary format) and the fixed-width SIMD proposal (opcodes behind the 0xfd prefix).

export const valType = { i32: 0x7f, i64: 0x7e, f32: 0x7d, f64: 0x7c, v128: 0x7b } as const;
export type ValType = (typeof valType)[keyof typeof valType];

export function uleb(value: number): number[] {
  const out: number[] = [];
  let v = value >>> 0;
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
  return out;
}

export function sleb(value: number): number[] {
  const out: number[] = [];
  let v = value | 0;
  for (;;) {
    const byte = v & 0x7f;
    v >>= 7;
    const done = (v === 0 && (byte & 0x40) === 0) || (v === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}

const f64Bytes = (x: number): number[] => [...new Uint8Array(new Float64Array([x]).buffer)];
const memarg = (alignLog2: number, offset: number): number[] => [...uleb(alignLog2), ...uleb(offset)];
const simd = (op: number, ...imm: number[]): number[] => [0xfd, ...uleb(op), ...imm];

/** Instructions as byte sequences; a function body is the concatenation of these. */
export const op = {
  block: (): number[] => [0x02, 0x40],
  loop: (): number[] => [0x03, 0x40],
  end: (): number[] => [0x0b],
  br: (depth: number): number[] => [0x0c, ...uleb(depth)],
  brIf: (depth: number): number[] => [0x0d, ...uleb(depth)],
  localGet: (i: number): number[] => [0x20, ...uleb(i)],
  localSet: (i: number): number[] => [0x21, ...uleb(i)],
  localTee: (i: number): number[] => [0x22, ...uleb(i)],
  i32Const: (v: number): number[] => [0x41, ...sleb(v)],
  f64Const: (v: number): number[] => [0x44, ...f64Bytes(v)],
  call: (func: number): number[] => [0x10, ...uleb(func)],
  ret: (): number[] => [0x0f],
  /** if with one f32 result; pair with elseBranch() and end(). */
  ifF32: (): number[] => [0x04, 0x7d],
  elseBranch: (): number[] => [0x05],
  i32And: (): number[] => [0x71],
  i32Or: (): number[] => [0x72],
  i32Eqz: (): number[] => [0x45],
  i32Add: (): number[] => [0x6a],
  i32LtS: (): number[] => [0x48],
  i32GtS: (): number[] => [0x4a],
  i32LeS: (): number[] => [0x4c],
  i32GeS: (): number[] => [0x4e],
  i32ShrS: (): number[] => [0x75],
  i32Mul: (): number[] => [0x6c],
  f32Load: (offset = 0): number[] => [0x2a, ...memarg(2, offset)],
  f32Store: (offset = 0): number[] => [0x38, ...memarg(2, offset)],
  f32Lt: (): number[] => [0x5d],
  f32Gt: (): number[] => [0x5e],
  f32Min: (): number[] => [0x96],
  f32Max: (): number[] => [0x97],
  f64Add: (): number[] => [0xa0],
  f64Mul: (): number[] => [0xa2],
  f64Div: (): number[] => [0xa3],
  f32DemoteF64: (): number[] => [0xb6],
  f64ConvertI32S: (): number[] => [0xb7],
  f64PromoteF32: (): number[] => [0xbb],
  i32Sub: (): number[] => [0x6b],
  i32Shl: (): number[] => [0x74],
  i32LtU: (): number[] => [0x49],
  i32GeU: (): number[] => [0x4f],
  v128Load: (offset = 0): number[] => simd(0x00, ...memarg(4, offset)),
  v128Store: (offset = 0): number[] => simd(0x0b, ...memarg(4, offset)),
  v128Load64Zero: (offset = 0): number[] => simd(0x5d, ...memarg(3, offset)),
  i8x16Shuffle: (lanes: readonly number[]): number[] => {
    if (lanes.length !== 16) throw new Error('i8x16.shuffle needs 16 lane indices');
    return simd(0x0d, ...lanes);
  },
  i32x4Splat: (): number[] => simd(0x11),
  f64x2Splat: (): number[] => simd(0x14),
  i32x4Eq: (): number[] => simd(0x37),
  v128And: (): number[] => simd(0x4e),
  v128Or: (): number[] => simd(0x50),
  v128AnyTrue: (): number[] => simd(0x53),
  f32x4DemoteF64x2Zero: (): number[] => simd(0x5e),
  f32x4Sub: (): number[] => simd(0xe5),
  f64x2PromoteLowF32x4: (): number[] => simd(0x5f),
  f64x2Add: (): number[] => simd(0xf0),
  f64x2Sub: (): number[] => simd(0xf1),
  f64x2Mul: (): number[] => simd(0xf2),
};

export interface FuncDef {
  name: string;
  params: ValType[];
  results: ValType[];
  /** Extra locals, numbered after the params. */
  locals: ValType[];
  body: number[][];
}

const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, content: number[]): number[] => [id, ...uleb(content.length), ...content];
const utf8 = (s: string): number[] => {
  const b = [...new TextEncoder().encode(s)];
  return [...uleb(b.length), ...b];
};

const MAX_PAGES = 65536;

/**
 * A module that imports one memory as env.mem and exports every function by name. With `shared`, the
 * memory is a shared one (limits flag 3: min 1, max 4 GiB), so its buffer is a SharedArrayBuffer that
 * other threads can read (the link's hash worker does).
 */
export function encodeModule(funcs: readonly FuncDef[], options: { shared?: boolean } = {}): Uint8Array<ArrayBuffer> {
  const types = funcs.map((f) => [0x60, ...uleb(f.params.length), ...f.params, ...uleb(f.results.length), ...f.results]);
  const limits = options.shared ? [0x03, ...uleb(1), ...uleb(MAX_PAGES)] : [0x00, ...uleb(1)];
  const imports = [[...utf8('env'), ...utf8('mem'), 0x02, ...limits]];
  const funcIndex = funcs.map((_, i) => uleb(i));
  const exports = funcs.map((f, i) => [...utf8(f.name), 0x00, ...uleb(i)]);
  const bodies = funcs.map((f) => {
    const locals = f.locals.map((t) => [...uleb(1), t]);
    const code = [...vec(locals), ...f.body.flat(), 0x0b];
    return [...uleb(code.length), ...code];
  });
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(types)),
    ...section(2, vec(imports)),
    ...section(3, vec(funcIndex)),
    ...section(7, vec(exports)),
    ...section(10, vec(bodies)),
  ]);
}
