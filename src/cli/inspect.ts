// `fedstate inspect reducer|combiner|client --format mermaid|svg`: prints a statechart as Mermaid
// stateDiagram-v2 text or as an SVG laid out with ELK, straight from the machine definition.
import ElkModule from 'elkjs/lib/elk.bundled.js';
import { FedError } from '../errors.ts';
import { graphOf, isRole, roles, type GraphNode, type MachineGraph } from '../api/machine-graph.ts';
import { layoutChart, renderSvg, type ElkLike } from '../api/dashboard/statechart.ts';
import { parseFlags } from '../util/args.ts';
import type { Command } from './types.ts';

/**
 * Mermaid state ids: the path below the machine with dots replaced (Mermaid ids are global and plain);
 * the machine's root is a composite state named after the machine, so transitions the root itself
 * takes (from any state, like the client's STOP) have a source to be drawn from.
 */
export const mermaidId = (graph: MachineGraph, id: string): string => (id === graph.root ? graph.id : id.slice(graph.id.length + 1)).replace(/[^A-Za-z0-9_]/g, '_');

const clean = (s: string): string => s.replace(/[;\n]/g, ' ');
const ROOT_HOME = '';

export function toMermaid(graph: MachineGraph): string {
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  const ancestors = (id: string): string[] => {
    const out: string[] = [];
    for (let n = byId.get(id); n; n = n.parent ? byId.get(n.parent) : undefined) out.push(n.id);
    return out;
  };
  // An edge lives in the innermost composite that strictly contains both ends.
  const home = (source: string, target: string): string => {
    const a = ancestors(source).slice(1);
    const b = new Set(ancestors(target).slice(1));
    return a.find((x) => b.has(x)) ?? ROOT_HOME;
  };
  const edgesIn = new Map<string, string[]>();
  for (const e of graph.edges) {
    const h = home(e.source, e.target);
    const label = clean(e.guard ? `${e.label} [${e.guard}]` : e.label);
    edgesIn.set(h, [...(edgesIn.get(h) ?? []), `${mermaidId(graph, e.source)} --> ${mermaidId(graph, e.target)} : ${label}`]);
  }
  const lines = ['stateDiagram-v2'];
  const block = (n: GraphNode, indent: string): void => {
    if (n.initial) lines.push(`${indent}[*] --> ${mermaidId(graph, n.initial)}`);
    for (const cid of n.children) {
      const c = byId.get(cid)!;
      const id = mermaidId(graph, c.id);
      lines.push(`${indent}state "${clean(c.key).replace(/"/g, "'")}" as ${id}`);
      for (const i of c.internal) lines.push(`${indent}${id} : on ${clean(i.event)}${i.guard ? ` [${clean(i.guard)}]` : ''}`);
      if (c.invokes.length) lines.push(`${indent}${id} : invokes ${c.invokes.join(', ')}`);
      if (c.children.length) {
        lines.push(`${indent}state ${id} {`);
        block(c, `${indent}  `);
        lines.push(`${indent}}`);
      }
      if (c.type === 'final') lines.push(`${indent}${id} --> [*]`);
    }
    for (const e of edgesIn.get(n.id) ?? []) lines.push(`${indent}${e}`);
  };
  const root = byId.get(graph.root)!;
  const rid = mermaidId(graph, root.id);
  lines.push(`  [*] --> ${rid}`, `  state "${graph.id}" as ${rid}`);
  for (const i of root.internal) lines.push(`  ${rid} : on ${clean(i.event)}${i.guard ? ` [${clean(i.guard)}]` : ''}`);
  lines.push(`  state ${rid} {`);
  block(root, '    ');
  lines.push('  }');
  for (const e of edgesIn.get(ROOT_HOME) ?? []) lines.push(`  ${e}`);
  return `${lines.join('\n')}\n`;
}

export async function toSvg(graph: MachineGraph): Promise<string> {
  // elk.bundled.js is CommonJS exporting {default: ELK}; depending on the loader the default import is
  // the constructor or that object.
  const mod = ElkModule as unknown as (new () => ElkLike) | { default: new () => ElkLike };
  const ELK = typeof mod === 'function' ? mod : mod.default;
  const layout = await layoutChart(new ELK(), graph);
  return `${renderSvg(layout, { title: `${graph.id} statechart` })}\n`;
}

export const inspectCommand: Command = {
  name: 'inspect',
  help: 'inspect reducer|combiner|client [--format mermaid|svg]   print a statechart (Mermaid text or SVG)',
  run: async (argv) => {
    const args = parseFlags(argv, { format: { type: 'string', default: 'mermaid', choices: ['mermaid', 'svg'], help: 'output format' } });
    const [role, ...extra] = args._;
    if (!role || !isRole(role) || extra.length) throw new FedError('config', `inspect needs one role: ${roles.join(' | ')}${role && !isRole(role) ? ` (got "${role}")` : ''}`);
    const graph = graphOf(role);
    process.stdout.write(args.format === 'svg' ? await toSvg(graph) : toMermaid(graph));
    return 0;
  },
};
