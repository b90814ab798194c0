// The dashboard page's code (runs in the browser; the reducer serves it transpiled). It polls the REST
// API for rounds, nodes and the trail, and follows the inspection WebSocket for live statecharts.
// What it plots and highlights is mirrored on `window.fedstate` and in data attributes, so a browser
// test can read exactly what the page shows.
import type { RoundResult } from '../../../machines/reducer.ts';
import type { ActorView, EventSummary } from '../inspect.ts';
import type { MachineGraph } from '../machine-graph.ts';
import type { TrailEntry } from '../../store/types.ts';
import { escapeXml, layoutChart, renderSvg, type ChartLayout, type ElkLike } from './statechart.ts';

declare const uPlot: typeof import('uplot');
declare const ELK: new () => ElkLike;
type UPlot = InstanceType<typeof uPlot>;

interface Status {
  state: string;
  session: { id: string; rounds: number; committed: number; round: number } | null;
  failure: string;
  globalModelId: string;
  history: RoundResult[];
}
interface CombinerRow {
  name: string;
  connected: boolean;
  state: string;
  clients: string[];
  assigned: string[];
  lastSeen: number;
}
interface ClientRow {
  name: string;
  status: string;
  combiner: string | null;
  lastSeen: number;
  state: string | null;
}
interface Page<T> {
  items: T[];
  total: number;
}

interface PlotSeries {
  rounds: number[];
  accuracy: Array<number | null>;
  loss: Array<number | null>;
  updates: number[];
}

interface ActorPanel {
  view: ActorView;
  el: HTMLElement;
  chart: HTMLElement;
  log: HTMLOListElement;
  stateLabel: HTMLElement;
  rendered: boolean;
}

const state = {
  plots: { rounds: [], accuracy: [], loss: [], updates: [] } as PlotSeries,
  actors: {} as Record<string, { state: string; active: string[]; taken: string[] }>,
  ws: 'connecting' as 'connecting' | 'open' | 'closed',
  messages: 0,
  renders: 0,
  selectedClient: '' as string,
};
(window as unknown as { fedstate: typeof state }).fedstate = state;

const $ = <T extends HTMLElement = HTMLElement>(sel: string): T => document.querySelector(sel) as T;

async function get<T>(path: string): Promise<T> {
  const res = await fetch(path, { cache: 'no-store' });
  if (!res.ok) throw new Error(`${path}: ${res.status}`);
  return (await res.json()) as T;
}

const ago = (ms: number): string => {
  if (!ms) return '–';
  const s = Math.max(0, (Date.now() - ms) / 1000);
  return s < 60 ? `${s.toFixed(0)} s ago` : s < 3600 ? `${(s / 60).toFixed(0)} min ago` : new Date(ms).toLocaleString();
};
const short = (id: string | null | undefined): string => (id ? id.slice(0, 12) : '–');
const fmt = (x: number): string => (Math.abs(x) >= 100 || Number.isInteger(x) ? String(Math.round(x * 100) / 100) : x.toPrecision(4));
const metricOf = (r: RoundResult, key: string): number | null => {
  const v = r.evalMetrics[key] ?? r.validation[key] ?? r.trainMetrics[key];
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
};

// --- plots ---------------------------------------------------------------------------------------

const plots: Record<string, UPlot | undefined> = {};
function plot(id: string, label: string, xs: number[], ys: Array<number | null>, opts: { bars?: boolean; range?: [number, number] } = {}): void {
  const el = $(`#${id}`);
  el.dataset.points = String(ys.filter((y) => y !== null).length);
  el.dataset.values = JSON.stringify(ys);
  const data = [xs, ys] as unknown as import('uplot').AlignedData;
  const existing = plots[id];
  if (existing) {
    existing.setData(data);
    return;
  }
  const width = Math.max(240, el.clientWidth || 320);
  plots[id] = new uPlot(
    {
      width,
      height: 200,
      scales: { x: { time: false }, ...(opts.range ? { y: { range: opts.range } } : {}) },
      axes: [{ label: 'round' }, {}],
      series: [
        { label: 'round' },
        opts.bars
          ? { label, stroke: '#2d6cb5', fill: 'rgba(45,108,181,0.35)', paths: uPlot.paths.bars!({ size: [0.6, 40] }), points: { show: false } }
          : { label, stroke: '#d48a00', width: 2, points: { show: true, size: 7 } },
      ],
    },
    data,
    el,
  );
}

function renderPlots(history: RoundResult[]): void {
  const closed = [...history].sort((a, b) => a.round - b.round);
  const p: PlotSeries = {
    rounds: closed.map((r) => r.round),
    accuracy: closed.map((r) => metricOf(r, 'accuracy')),
    loss: closed.map((r) => metricOf(r, 'loss')),
    updates: closed.map((r) => r.updates),
  };
  state.plots = p;
  plot('plot-accuracy', 'accuracy', p.rounds, p.accuracy, { range: [0, 1] });
  plot('plot-loss', 'loss', p.rounds, p.loss);
  plot('plot-participation', 'updates', p.rounds, p.updates, { bars: true });
}

// --- tables --------------------------------------------------------------------------------------

function rows(tbody: HTMLElement, html: string[]): void {
  tbody.innerHTML = html.join('') || '<tr><td colspan="8" class="muted">none yet</td></tr>';
}

async function refresh(): Promise<void> {
  const [status, combiners, clients, trail] = await Promise.all([
    get<Status>('/api/status'),
    get<Page<CombinerRow>>('/api/combiners?limit=500'),
    get<Page<ClientRow>>('/api/clients?limit=500'),
    get<Page<TrailEntry>>('/api/models?order=desc&limit=25'),
  ]);
  $('#reducer-state').textContent = status.state + (status.failure ? ` (${status.failure})` : '');
  $('#session').textContent = status.session?.id ?? '–';
  $('#rounds').textContent = status.session ? `${status.session.committed}/${status.session.rounds} committed, round ${status.session.round}` : '–';
  $('#global-model').textContent = short(status.globalModelId);
  renderPlots(status.history);
  rows(
    $('#combiners tbody'),
    combiners.items.map(
      (c) =>
        `<tr data-combiner="${escapeXml(c.name)}"><td>${escapeXml(c.name)}</td><td><span class="dot ${c.connected ? 'connected' : 'disconnected'}"></span>${c.connected ? 'connected' : 'gone'}</td><td>${escapeXml(c.state)}</td><td>${c.clients.length}${c.assigned.length ? ` (+${c.assigned.length} assigned)` : ''}<br><small class="mono">${escapeXml(c.clients.join(', '))}</small></td><td>${ago(c.lastSeen)}</td></tr>`,
    ),
  );
  rows(
    $('#clients tbody'),
    clients.items.map(
      (c) =>
        `<tr data-client="${escapeXml(c.name)}"><td>${escapeXml(c.name)}</td><td><span class="dot ${escapeXml(c.status)}"></span>${escapeXml(c.status)}</td><td>${escapeXml(c.combiner ?? '–')}</td><td class="mono">${escapeXml(state.actors[c.name]?.state ?? c.state ?? '–')}</td><td>${ago(c.lastSeen)}</td></tr>`,
    ),
  );
  $('#trail-total').textContent = `(${trail.total} entries, newest first)`;
  rows(
    $('#trail tbody'),
    trail.items.map(
      (e) =>
        `<tr data-model="${e.modelId}"><td>${e.index}</td><td class="mono" title="${e.modelId}">${short(e.modelId)}</td><td class="mono">${short(e.parentModelId)}</td><td>${escapeXml(e.sessionId || '–')}</td><td>${e.round}</td><td>${escapeXml(e.strategy)}</td><td class="mono">${escapeXml(
          Object.entries(e.metrics)
            .slice(0, 4)
            .map(([k, v]) => `${k}=${fmt(v)}`)
            .join(' '),
        )}</td><td>${new Date(e.committedAt).toLocaleTimeString()}</td></tr>`,
    ),
  );
}

let refreshing = false;
let again = false;
async function refreshSoon(): Promise<void> {
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = true;
  try {
    await refresh();
  } catch (e) {
    console.warn('refresh failed', e);
  } finally {
    refreshing = false;
    if (again) {
      again = false;
      void refreshSoon();
    }
  }
}

// --- statecharts ---------------------------------------------------------------------------------

const elk = new ELK();
const graphs = new Map<string, Promise<ChartLayout>>();
const layoutFor = (role: string): Promise<ChartLayout> => {
  let p = graphs.get(role);
  if (!p) graphs.set(role, (p = get<MachineGraph>(`/api/machines/${role}`).then((g) => layoutChart(elk, g))));
  return p;
};

const panels = new Map<string, ActorPanel>();

function shown(address: string): boolean {
  return !address.startsWith('client/') || address === state.selectedClient;
}

function panelFor(view: ActorView): ActorPanel {
  let p = panels.get(view.address);
  if (p) return p;
  const el = document.createElement('div');
  el.className = 'actor';
  el.dataset.actor = view.address;
  el.innerHTML = `<h3>${escapeXml(view.address)}<span class="state"></span></h3><div class="chart"></div><ol class="log"></ol>`;
  p = { view, el, chart: el.querySelector('.chart')!, log: el.querySelector('.log')!, stateLabel: el.querySelector('.state')!, rendered: false };
  panels.set(view.address, p);
  const order = (a: string): string => (a.startsWith('reducer/') ? '0' : a.startsWith('combiner/') ? '1' : '2') + a;
  const after = [...panels.values()].filter((q) => q !== p && q.el.isConnected && order(q.view.address) > order(view.address)).sort((a, b) => order(a.view.address).localeCompare(order(b.view.address)))[0];
  $('#charts').insertBefore(el, after?.el ?? null);
  for (const e of view.events) appendEvent(p, e);
  void drawChart(p);
  syncClientSelect();
  return p;
}

async function drawChart(p: ActorPanel): Promise<void> {
  p.el.hidden = !shown(p.view.address);
  if (!p.view.role) return;
  const layout = await layoutFor(p.view.role);
  p.chart.innerHTML = renderSvg(layout, { active: p.view.active, taken: p.view.taken });
  p.rendered = true;
  highlight(p);
}

function highlight(p: ActorPanel): void {
  const active = new Set(p.view.active);
  const taken = new Set(p.view.taken);
  p.el.dataset.state = p.view.state;
  p.stateLabel.textContent = p.view.state;
  state.actors[p.view.address] = { state: p.view.state, active: p.view.active, taken: p.view.taken };
  if (!p.rendered) return;
  for (const g of p.chart.querySelectorAll<SVGGElement>('[data-state]')) {
    const on = active.has(g.dataset.state ?? '');
    g.classList.toggle('sc-active', on);
    g.dataset.active = String(on);
  }
  for (const g of p.chart.querySelectorAll<SVGGElement>('[data-edge]')) g.classList.toggle('sc-taken', taken.has(g.dataset.edge ?? ''));
  state.renders++;
  // Keep the active innermost state in view in tall charts.
  const deepest = p.view.active[p.view.active.length - 1];
  const target = deepest ? p.chart.querySelector<SVGGElement>(`[data-state="${CSS.escape(deepest)}"]`) : null;
  if (target && p.chart.scrollHeight > p.chart.clientHeight) {
    const box = target.getBBox();
    if (box.y < p.chart.scrollTop || box.y > p.chart.scrollTop + p.chart.clientHeight - 40) p.chart.scrollTop = Math.max(0, box.y - 80);
  }
}

const MAX_LOG = 120;
function logLine(p: ActorPanel, html: string, cls = ''): void {
  const li = document.createElement('li');
  if (cls) li.className = cls;
  li.innerHTML = html;
  p.log.prepend(li);
  while (p.log.children.length > MAX_LOG) p.log.lastElementChild?.remove();
}

/** XState's internal event names, shortened: "xstate.done.actor.0.reducer.running.reducing" -> "done: running.reducing". */
export function eventLabel(type: string): string {
  const m = /^xstate\.(done|error)\.actor\.(?:\d+\.)?[^.]+\.(.+)$/.exec(type);
  if (m) return `${m[1]}: ${m[2]}`;
  const a = /^xstate\.after\.([^.]+)\./.exec(type);
  if (a) return `after ${a[1]}`;
  if (type.startsWith('xstate.done.state.')) return 'done (final state reached)';
  return type;
}

function appendEvent(p: ActorPanel, e: EventSummary): void {
  const fields = Object.entries(e.fields)
    .map(([k, v]) => `${escapeXml(k)}=${escapeXml(String(v))}`)
    .join(' ');
  logLine(p, `<span class="t">${new Date(e.at).toISOString().slice(11, 23)}</span> <span class="ty" title="${escapeXml(e.type)}">${escapeXml(eventLabel(e.type))}</span>${e.from && !e.type.startsWith('xstate.') ? ` <span class="fr">← ${escapeXml(e.from)}</span>` : ''} <span class="f">${fields}</span>`);
}

function syncClientSelect(): void {
  const select = $<HTMLSelectElement>('#client-select');
  const clients = [...panels.keys()].filter((a) => a.startsWith('client/')).sort();
  if (!state.selectedClient && clients[0]) state.selectedClient = clients[0];
  const html = clients.map((c) => `<option value="${escapeXml(c)}"${c === state.selectedClient ? ' selected' : ''}>${escapeXml(c)}</option>`).join('');
  if (select.innerHTML !== html) select.innerHTML = html;
  for (const p of panels.values()) p.el.hidden = !shown(p.view.address);
}

// --- the inspection stream -------------------------------------------------------------------------

type Msg =
  | { type: 'hello'; actors: ActorView[] }
  | { type: 'actor'; actor: ActorView }
  | ({ type: 'state' } & Omit<ActorView, 'events' | 'counts'>)
  | { type: 'events'; items: EventSummary[] }
  | { type: 'error'; message: string };

function onMessage(msg: Msg): void {
  state.messages++;
  switch (msg.type) {
    case 'hello':
      for (const v of msg.actors) {
        const p = panels.get(v.address);
        if (p) {
          p.view = v;
          highlight(p);
        } else panelFor(v);
      }
      break;
    case 'actor':
      panelFor(msg.actor);
      break;
    case 'state': {
      const p = panels.get(msg.address);
      if (!p) break;
      p.view = { ...p.view, ...msg };
      highlight(p);
      logLine(p, `<span class="t">${new Date(msg.changedAt).toISOString().slice(11, 23)}</span> → ${escapeXml(msg.state)}`, 'state');
      if (msg.address.startsWith('reducer/')) void refreshSoon();
      break;
    }
    case 'events':
      for (const e of msg.items) {
        const p = panels.get(e.actor);
        if (p) appendEvent(p, e);
      }
      break;
    case 'error':
      console.warn('inspect stream:', msg.message);
  }
}

let backoff = 250;
function connect(): void {
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/inspect`);
  const status = $('#ws-status');
  ws.onopen = () => {
    backoff = 250;
    state.ws = 'open';
    status.dataset.status = 'open';
    status.textContent = 'streaming';
  };
  ws.onmessage = (ev) => onMessage(JSON.parse(String(ev.data)) as Msg);
  ws.onclose = () => {
    state.ws = 'closed';
    status.dataset.status = 'closed';
    status.textContent = 'reconnecting';
    setTimeout(connect, backoff);
    backoff = Math.min(5_000, backoff * 2);
  };
}

$<HTMLSelectElement>('#client-select').addEventListener('change', (ev) => {
  state.selectedClient = (ev.target as HTMLSelectElement).value;
  syncClientSelect();
});

connect();
void refreshSoon();
setInterval(() => void refreshSoon(), 2_000);
