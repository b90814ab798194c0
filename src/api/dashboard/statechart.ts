// Lays a machine graph out with ELK and draws it as SVG markup. Shared by the dashboard (in the
// browser, served transpiled) and `fedstate inspect --format svg` (in Node), so this module imports
// nothing at run time: the caller hands in an ELK instance.
import type { GraphEdge, GraphNode, MachineGraph } from '../machine-graph.ts';

export interface ElkPoint {
  x: number;
  y: number;
}
export interface ElkLabel {
  text?: string;
  width?: number;
  height?: number;
  x?: number;
  y?: number;
}
export interface ElkEdgeSection {
  startPoint: ElkPoint;
  endPoint: ElkPoint;
  bendPoints?: ElkPoint[];
}
export interface ElkEdge {
  id: string;
  sources: string[];
  targets: string[];
  labels?: ElkLabel[];
  sections?: ElkEdgeSection[];
  container?: string;
}
export interface ElkNode {
  id: string;
  width?: number;
  height?: number;
  x?: number;
  y?: number;
  children?: ElkNode[];
  edges?: ElkEdge[];
  labels?: ElkLabel[];
  layoutOptions?: Record<string, string>;
}
export interface ElkLike {
  layout(graph: ElkNode): Promise<ElkNode>;
}

export interface PlacedNode {
  id: string;
  x: number;
  y: number;
  w: number;
  h: number;
  /** null for an initial-state marker. */
  node: GraphNode | null;
}
export interface PlacedEdge {
  id: string;
  points: Array<[number, number]>;
  label: { text: string; x: number; y: number; w: number; h: number } | null;
  edge: GraphEdge | null;
}
export interface ChartLayout {
  graph: MachineGraph;
  width: number;
  height: number;
  nodes: PlacedNode[];
  edges: PlacedEdge[];
}

const CHAR_W = 6.6;
const LINE_H = 13;
const MAX_INTERNAL = 6;
const textW = (s: string): number => Math.ceil(s.length * CHAR_W);

export const edgeText = (e: GraphEdge): string => (e.guard ? `${e.label} [${e.guard}]` : e.label);
const internalLines = (n: GraphNode): string[] => {
  const lines = n.internal.map((i) => `${i.event}${i.guard ? ` [${i.guard}]` : ''}`);
  return lines.length > MAX_INTERNAL ? [...lines.slice(0, MAX_INTERNAL - 1), `+${lines.length - MAX_INTERNAL + 1} more`] : lines;
};
const headerH = (n: GraphNode): number => 22 + internalLines(n).length * LINE_H;

const initMarker = (parent: string): string => `${parent}::initial`;

/** Runs ELK on the graph: compound states contain their children, edges may cross levels. */
export async function layoutChart(elk: ElkLike, graph: MachineGraph): Promise<ChartLayout> {
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  const build = (n: GraphNode): ElkNode => {
    const lines = internalLines(n);
    const width = Math.max(textW(n.key) + 24, ...lines.map((l) => textW(l) + 16), 60);
    if (n.children.length === 0) return { id: n.id, width, height: headerH(n) + 6 };
    const kids = n.children.map((c) => build(byId.get(c)!));
    if (n.initial) kids.unshift({ id: initMarker(n.id), width: 10, height: 10 });
    return {
      id: n.id,
      children: kids,
      layoutOptions: { 'elk.padding': `[top=${headerH(n) + 8},left=12,bottom=12,right=12]`, 'elk.nodeSize.minimum': `(${width},40)`, 'elk.nodeSize.constraints': 'MINIMUM_SIZE' },
    };
  };
  const root = byId.get(graph.root)!;
  const edges: ElkEdge[] = graph.edges.map((e) => ({
    id: e.id,
    sources: [e.source],
    targets: [e.target],
    labels: [{ text: edgeText(e), width: textW(edgeText(e)), height: LINE_H }],
  }));
  for (const n of graph.nodes) if (n.initial) edges.push({ id: `${initMarker(n.id)}->`, sources: [initMarker(n.id)], targets: [n.initial] });
  const input: ElkNode = {
    id: '__chart',
    layoutOptions: {
      'elk.algorithm': 'layered',
      'elk.direction': 'DOWN',
      'elk.hierarchyHandling': 'INCLUDE_CHILDREN',
      'elk.layered.spacing.nodeNodeBetweenLayers': '36',
      'elk.spacing.nodeNode': '24',
      'elk.spacing.edgeLabel': '2',
      'elk.edgeLabels.placement': 'CENTER',
    },
    children: [build(root)],
    edges,
  };
  const out = await elk.layout(input);

  const nodes: PlacedNode[] = [];
  const offset = new Map<string, ElkPoint>([['__chart', { x: 0, y: 0 }]]);
  const place = (n: ElkNode, ox: number, oy: number): void => {
    const x = ox + (n.x ?? 0);
    const y = oy + (n.y ?? 0);
    offset.set(n.id, { x, y });
    nodes.push({ id: n.id, x, y, w: n.width ?? 0, h: n.height ?? 0, node: byId.get(n.id) ?? null });
    for (const c of n.children ?? []) place(c, x, y);
  };
  for (const c of out.children ?? []) place(c, 0, 0);
  const edgeById = new Map(graph.edges.map((e) => [e.id, e]));
  const placedEdges: PlacedEdge[] = (out.edges ?? []).map((e) => {
    // ELK gives edge coordinates relative to the node that ends up containing the edge.
    const o = offset.get(e.container ?? '__chart') ?? { x: 0, y: 0 };
    const points: Array<[number, number]> = [];
    for (const s of e.sections ?? []) {
      points.push([s.startPoint.x + o.x, s.startPoint.y + o.y]);
      for (const b of s.bendPoints ?? []) points.push([b.x + o.x, b.y + o.y]);
      points.push([s.endPoint.x + o.x, s.endPoint.y + o.y]);
    }
    const l = e.labels?.[0];
    const label = l && l.text ? { text: l.text, x: (l.x ?? 0) + o.x, y: (l.y ?? 0) + o.y, w: l.width ?? 0, h: l.height ?? 0 } : null;
    return { id: e.id, points, label, edge: edgeById.get(e.id) ?? null };
  });
  return { graph, width: Math.ceil(out.width ?? 0), height: Math.ceil(out.height ?? 0), nodes, edges: placedEdges };
}

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

const STYLE = `
.sc-state rect{fill:#fff;stroke:#5b6b7f;stroke-width:1.2}
.sc-state.sc-compound>rect{fill:#f5f7fa}
.sc-state.sc-root>rect{fill:#fbfcfd;stroke-dasharray:4 3}
.sc-state.sc-active>rect{fill:#fff4c2;stroke:#d48a00;stroke-width:2.4}
.sc-state.sc-compound.sc-active>rect{fill:#fffbe8}
.sc-state.sc-root.sc-active>rect{fill:#fbfcfd;stroke:#5b6b7f;stroke-width:1.2}
.sc-state text{font:600 12px system-ui,sans-serif;fill:#1d2733}
.sc-state text.sc-internal{font:400 10.5px ui-monospace,monospace;fill:#5b6b7f}
.sc-edge path{fill:none;stroke:#8796a8;stroke-width:1.1}
.sc-edge.sc-taken path{stroke:#d48a00;stroke-width:2.2}
.sc-edge text{font:400 10.5px ui-monospace,monospace;fill:#34475c}
.sc-edge.sc-taken text{fill:#9a5b00;font-weight:700}
.sc-init circle{fill:#1d2733}
`;

/** SVG markup for a laid-out chart; `active` state ids are highlighted, `taken` edge ids too. */
export function renderSvg(layout: ChartLayout, opts: { active?: readonly string[]; taken?: readonly string[]; title?: string } = {}): string {
  const active = new Set(opts.active ?? []);
  const taken = new Set(opts.taken ?? []);
  const pad = 8;
  const w = layout.width + pad * 2;
  const h = layout.height + pad * 2;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" class="statechart" data-machine="${escapeXml(layout.graph.id)}" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}">`);
  if (opts.title) parts.push(`<title>${escapeXml(opts.title)}</title>`);
  parts.push(`<style>${STYLE}</style>`);
  parts.push(`<defs><marker id="sc-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#8796a8"/></marker></defs>`);
  parts.push(`<g transform="translate(${pad},${pad})">`);
  for (const p of layout.nodes) {
    if (!p.node) {
      parts.push(`<g class="sc-init"><circle cx="${p.x + p.w / 2}" cy="${p.y + p.h / 2}" r="${p.w / 2}"/></g>`);
      continue;
    }
    const n = p.node;
    const cls = ['sc-state', `sc-${n.type}`, n.children.length ? 'sc-compound' : '', n.parent === null ? 'sc-root' : '', active.has(n.id) ? 'sc-active' : ''].filter(Boolean).join(' ');
    parts.push(`<g class="${cls}" data-state="${escapeXml(n.id)}" data-active="${active.has(n.id)}">`);
    parts.push(`<rect x="${p.x}" y="${p.y}" width="${p.w}" height="${p.h}" rx="8" ry="8"/>`);
    if (n.type === 'final') parts.push(`<rect x="${p.x + 3}" y="${p.y + 3}" width="${p.w - 6}" height="${p.h - 6}" rx="6" ry="6" fill="none"/>`);
    const tx = n.children.length ? p.x + 10 : p.x + p.w / 2;
    const anchor = n.children.length ? 'start' : 'middle';
    parts.push(`<text x="${tx}" y="${p.y + 16}" text-anchor="${anchor}">${escapeXml(n.key)}</text>`);
    internalLines(n).forEach((line, i) => parts.push(`<text class="sc-internal" x="${tx}" y="${p.y + 16 + LINE_H * (i + 1)}" text-anchor="${anchor}">${escapeXml(line)}</text>`));
    parts.push(`</g>`);
  }
  for (const e of layout.edges) {
    if (e.points.length < 2) continue;
    const d = e.points.map(([x, y], i) => `${i ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`).join('');
    const attrs = e.edge ? ` data-edge="${escapeXml(e.edge.id)}" data-source="${escapeXml(e.edge.source)}" data-target="${escapeXml(e.edge.target)}" data-event="${escapeXml(e.edge.event)}"` : ' data-initial="true"';
    parts.push(`<g class="sc-edge${taken.has(e.id) ? ' sc-taken' : ''}"${attrs}><path d="${d}" marker-end="url(#sc-arrow)"/>`);
    if (e.label) parts.push(`<text x="${(e.label.x + 1).toFixed(1)}" y="${(e.label.y + e.label.h - 3).toFixed(1)}">${escapeXml(e.label.text)}</text>`);
    parts.push(`</g>`);
  }
  parts.push(`</g></svg>`);
  return parts.join('');
}
