// `fedstate inspect`: the Mermaid output names every state and every transition of each machine, and
// the SVG is well-formed XML with one shape per state and one path per transition. The expected sets
// are read here straight from the XState StateNode tree, independently of src/api/machine-graph.ts.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { AnyStateMachine } from 'xstate';
import { clientMachine } from '../machines/client.ts';
import { combinerMachine } from '../machines/combiner.ts';
import { reducerMachine } from '../machines/reducer.ts';
import { graphOf } from '../src/api/machine-graph.ts';
import { toMermaid, toSvg } from '../src/cli/inspect.ts';

const run = promisify(execFile);
const machines: Record<string, AnyStateMachine> = { reducer: reducerMachine as unknown as AnyStateMachine, combiner: combinerMachine as unknown as AnyStateMachine, client: clientMachine as unknown as AnyStateMachine };

interface SN {
  key: string;
  path: string[];
  states: Record<string, SN>;
  transitions: Map<string, Array<{ eventType: string; target?: SN[]; guard?: unknown }>>;
  always?: Array<{ eventType: string; target?: SN[]; guard?: unknown }>;
  invoke: Array<{ id: string; src: unknown }>;
}

interface Expected {
  states: Array<{ id: string; key: string }>;
  transitions: Array<{ source: string; target: string; eventType: string; guard: string | null; src?: string }>;
  targetless: Array<{ source: string; eventType: string; root: boolean }>;
}

let machineId = '';
/** The CLI's Mermaid ids: the path joined by "_", the root named after the machine. */
const mid = (path: string[]): string => (path.length ? path.join('_') : machineId);

function expected(machine: AnyStateMachine): Expected {
  const out: Expected = { states: [], transitions: [], targetless: [] };
  machineId = machine.id;
  const walk = (n: SN): void => {
    if (n.path.length) out.states.push({ id: mid(n.path), key: n.key });
    const all = [...[...n.transitions.values()].flat(), ...(n.always ?? [])];
    for (const t of all) {
      const guard = t.guard && typeof t.guard === 'object' && 'type' in t.guard ? String((t.guard as { type: string }).type) : null;
      if (!t.target?.length) {
        out.targetless.push({ source: mid(n.path), eventType: t.eventType, root: n.path.length === 0 });
        continue;
      }
      const invoked = /^xstate\.(?:done|error)\.actor\.(.+)$/.exec(t.eventType)?.[1];
      const src = invoked ? String(n.invoke.find((i) => i.id === invoked)?.src) : undefined;
      for (const target of t.target) out.transitions.push({ source: mid(n.path), target: mid(target.path), eventType: t.eventType, guard, src });
    }
    for (const c of Object.values(n.states)) walk(c);
  };
  walk(machine.root as unknown as SN);
  return out;
}

function labelMatches(label: string, t: Expected['transitions'][number]): boolean {
  const e = t.eventType;
  let ok: boolean;
  if (e === '') ok = label.startsWith('always');
  else if (e.startsWith('xstate.after.')) ok = label.startsWith(`after ${e.split('.')[2]}`);
  else if (e.startsWith('xstate.done.actor.')) ok = label.startsWith(`${t.src}.done`);
  else if (e.startsWith('xstate.error.actor.')) ok = label.startsWith(`${t.src}.error`);
  else if (e.startsWith('xstate.done.state.')) ok = label.startsWith('done');
  else ok = label === e || label.startsWith(`${e} [`);
  return ok && (!t.guard || label.includes(`[${t.guard}]`));
}

function checkMermaid(role: string, text: string): void {
  const exp = expected(machines[role]!);
  const lines = text.split('\n').map((l) => l.trim());
  assert.is(lines[0], 'stateDiagram-v2');
  for (const s of exp.states) assert.ok(lines.includes(`state "${s.key}" as ${s.id}`), `${role}: state ${s.id} is named`);
  const declared = lines.filter((l) => /^state "/.test(l));
  assert.ok(lines.includes(`state "${machines[role]!.id}" as ${machines[role]!.id}`), `${role}: the root is a composite state`);
  assert.is(declared.length, exp.states.length + 1, `${role}: no extra states`);

  const arrows = lines.map((l) => /^(\w+) --> (\w+) : (.+)$/.exec(l)).filter((m): m is RegExpExecArray => !!m);
  const unused = [...arrows];
  for (const t of exp.transitions) {
    const i = unused.findIndex((m) => m[1] === t.source && m[2] === t.target && labelMatches(m[3]!, t));
    assert.ok(i >= 0, `${role}: transition ${t.source} --${t.eventType || 'always'}${t.guard ? `[${t.guard}]` : ''}--> ${t.target} is drawn`);
    unused.splice(i, 1);
  }
  assert.equal(unused.map((m) => m[0]), [], `${role}: no transition is drawn that the machine does not have`);
  assert.ok(exp.transitions.length > 10);

  for (const t of exp.targetless) {
    const name = t.eventType;
    assert.ok(lines.some((l) => l.startsWith(`${t.source} : on ${name}`)), `${role}: ${t.source} handles ${name} in place`);
  }
}

/** A small XML well-formedness check: balanced tags, quoted attributes, escaped text. */
function wellFormed(xml: string): string[] {
  const problems: string[] = [];
  const stack: string[] = [];
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/y;
  let i = 0;
  while (i < xml.length) {
    const lt = xml.indexOf('<', i);
    const text = xml.slice(i, lt < 0 ? xml.length : lt);
    if (/&(?!(?:lt|gt|amp|quot|apos|#\d+);)/.test(text)) problems.push(`unescaped & near ${text.slice(0, 40)}`);
    if (lt < 0) break;
    tag.lastIndex = lt;
    const m = tag.exec(xml);
    if (!m) {
      problems.push(`bad tag at ${lt}: ${xml.slice(lt, lt + 60)}`);
      break;
    }
    const [, close, name, , self] = m;
    if (close) {
      if (stack.pop() !== name) problems.push(`</${name}> closes the wrong element`);
    } else if (!self) stack.push(name!);
    i = tag.lastIndex;
  }
  if (stack.length) problems.push(`unclosed: ${stack.join(' > ')}`);
  return problems;
}

for (const role of ['reducer', 'combiner', 'client']) {
  test(`${role}: Mermaid names every state and every transition of the machine`, () => {
    checkMermaid(role, toMermaid(graphOf(role)));
  });

  test(`${role}: SVG is well-formed, one shape per state and one path per transition`, async () => {
    const svg = await toSvg(graphOf(role));
    assert.equal(wellFormed(svg.trim()), []);
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    const exp = expected(machines[role]!);
    const states = [...svg.matchAll(/data-state="([^"]+)"/g)].map((m) => m[1]);
    assert.is(states.length, exp.states.length + 1, 'every state plus the root');
    for (const s of exp.states) assert.ok(states.includes(`${graphOf(role).id}.${s.id.replace(/_/g, '.')}`) || states.some((x) => x!.endsWith(s.key)), s.id);
    const edges = [...svg.matchAll(/data-edge="([^"]+)"/g)];
    assert.is(edges.length, exp.transitions.length);
    for (const m of svg.matchAll(/ d="([^"]+)"/g)) assert.not.match(m[1]!, /NaN|undefined/, 'every path has coordinates');
    const [, w, h] = /viewBox="0 0 (\d+) (\d+)"/.exec(svg)!;
    assert.ok(Number(w) > 200 && Number(h) > 200, `laid out (${w}x${h})`);
  });
}

test('the fedstate command prints Mermaid and SVG to stdout, and refuses an unknown role or format', async () => {
  const mermaid = await run(process.execPath, ['bin/fedstate.js', 'inspect', 'reducer', '--format', 'mermaid']);
  checkMermaid('reducer', mermaid.stdout);
  const svg = await run(process.execPath, ['bin/fedstate.js', 'inspect', 'client', '--format', 'svg']);
  assert.equal(wellFormed(svg.stdout.trim()), []);
  assert.match(svg.stdout, /data-machine="client"/);
  const dflt = await run(process.execPath, ['bin/fedstate.js', 'inspect', 'combiner']);
  assert.match(dflt.stdout, /^stateDiagram-v2\n/, 'Mermaid by default');
  for (const args of [['inspect', 'gardener'], ['inspect', 'reducer', '--format', 'png'], ['inspect']]) {
    const err = await run(process.execPath, ['bin/fedstate.js', ...args]).then(
      () => assert.unreachable(`${args.join(' ')} should fail`),
      (e: { code: number; stderr: string }) => e,
    );
    assert.is((err as { code: number }).code, 2, args.join(' '));
    assert.match((err as { stderr: string }).stderr, /config: /);
  }
});

test.run();
