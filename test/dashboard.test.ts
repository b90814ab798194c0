// The dashboard in real headless Chromium (Debian's /usr/bin/chromium via playwright-core) against an
// in-process federation: one accuracy point per finished round, the reducer's statechart highlighting
// its current state and following it as rounds advance, every asset served by the reducer itself.
// A screenshot lands in test-output/dashboard.png.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startFederation, type Federation } from '../src/actors/federation.ts';
import { startDashboard, type Dashboard } from '../src/api/dashboard.ts';
import { toyLayout, toyTask } from './helpers/toy-task.ts';

const CHROMIUM = '/usr/bin/chromium';
const ROUNDS = 4;
const SIZE = 32;

function ensureChromium(): string | null {
  if (existsSync(CHROMIUM)) return null;
  try {
    // Same step as .ci/run, for a developer machine that lacks it.
    execFileSync('sh', ['-c', 'apt-get update -qq && apt-get install -y -qq chromium'], { stdio: 'ignore', timeout: 240_000 });
  } catch {
    /* reported below */
  }
  return existsSync(CHROMIUM) ? null : `${CHROMIUM} is absent and could not be installed with apt-get (install Debian's chromium package)`;
}

const missing = ensureChromium();
if (missing && process.env.CI) throw new Error(`dashboard browser test cannot run in CI: ${missing}`);
if (missing) console.log(`SKIP dashboard browser tests: ${missing}`);
const it = missing ? test.skip : test;

let fed: Federation;
let dash: Dashboard;
let browser: Browser;
let page: Page;
const requests: string[] = [];
const problems: string[] = [];

test.before(async () => {
  if (missing) return;
  const targets = [1, 2, 3].map((k) => Float32Array.from({ length: SIZE }, () => k));
  fed = await startFederation({
    combiners: 2,
    clients: targets.map((t) => toyTask({ target: t, numExamples: 10, delayMs: 250 })),
    // A stand-in for held-out accuracy that changes every round: how close the model is to the target mean.
    evaluate: async (p, round) => ({ accuracy: Math.min(0.99, 0.5 + round * 0.1), loss: Math.abs(p.data[0]! - 2) + 1 / round }),
  });
  await fed.ready();
  dash = await startDashboard({ reducer: fed.reducer, combiners: fed.combiners, clients: fed.clients, inspectClients: 2 });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
});

test.after(async () => {
  await browser?.close();
  await dash?.close();
  await fed?.close();
});

const reducerActive = (p: Page): Promise<string[]> =>
  p.$$eval('[data-actor="reducer/main"] svg [data-state][data-active="true"]', (els) => els.map((e) => (e as HTMLElement).dataset.state!));

it('the page loads from the reducer alone and draws every inspected statechart with its current state', async () => {
  await page.goto(dash.url);
  await page.waitForFunction(() => (window as any).fedstate?.ws === 'open');
  await page.waitForSelector('[data-actor="reducer/main"] svg [data-state="reducer.idle"][data-active="true"]');
  assert.equal(await reducerActive(page), ['reducer', 'reducer.idle']);
  for (const a of ['combiner/c1', 'combiner/c2']) await page.waitForSelector(`[data-actor="${a}"] svg [data-state="combiner.idle"][data-active="true"]`);
  // the chosen client's chart is shown, the other inspected client's is one select away
  await page.waitForSelector('[data-actor="client/k1"]:not([hidden]) svg [data-state="client.connected.ready"][data-active="true"]');
  assert.ok(await page.$eval('[data-actor="client/k2"]', (e) => (e as HTMLElement).hidden), 'one client at a time');
  assert.equal(await page.$$eval('#client-select option', (os) => os.map((o) => (o as HTMLOptionElement).value)), ['client/k1', 'client/k2']);
  // every transition of the machine is drawn
  const graph = (await (await fetch(`${dash.url}/api/machines/reducer`)).json()) as { edges: unknown[]; nodes: unknown[] };
  assert.is(await page.$$eval('[data-actor="reducer/main"] svg [data-edge]', (e) => e.length), graph.edges.length);
  assert.is(await page.$$eval('[data-actor="reducer/main"] svg [data-state]', (e) => e.length), graph.nodes.length);
  const local = requests.filter((u) => !u.startsWith(dash.url) && !u.startsWith('data:'));
  assert.equal(local, [], 'no request leaves the reducer (no CDN)');
  assert.ok(requests.some((u) => u.endsWith('/vendor/uPlot.iife.min.js')) && requests.some((u) => u.endsWith('/vendor/elk.bundled.js')));
});

it('as rounds advance: the highlight follows the reducer, and the accuracy plot has one point per finished round', async () => {
  // Record every state the reducer chart highlights, as the page changes it.
  await page.evaluate(() => {
    const w = window as any;
    w.seenStates = [];
    const root = document.querySelector('[data-actor="reducer/main"] svg')!;
    new MutationObserver(() => {
      const on = [...root.querySelectorAll('[data-state][data-active="true"]')].map((e) => (e as HTMLElement).dataset.state).pop();
      if (on && w.seenStates[w.seenStates.length - 1] !== on) w.seenStates.push(on);
    }).observe(root, { subtree: true, attributes: true, attributeFilter: ['data-active'] });
  });
  await fed.reducer.seed({ layout: toyLayout(SIZE), data: new Float32Array(SIZE) });
  await page.waitForSelector('[data-actor="reducer/main"] svg [data-state="reducer.seeded"][data-active="true"]');
  fed.reducer.start({ sessionId: 'browser', rounds: ROUNDS, roundTimeoutMs: 20_000 });

  // Mid-session: the page shows exactly the rounds finished so far.
  const history = () => fed.reducer.actor.getSnapshot().context.history.length;
  while (history() < 2) await new Promise((r) => setTimeout(r, 20));
  await page.waitForFunction(() => Number(document.querySelector('#plot-accuracy')!.getAttribute('data-points')) >= 2, undefined, { timeout: 5_000 });
  const mid = await page.$eval('#plot-accuracy', (e) => Number((e as HTMLElement).dataset.points));
  assert.ok(mid >= 2 && mid <= history(), `mid-session plot has ${mid} points, ${history()} rounds finished`);

  const summary = await fed.reducer.finished();
  assert.is(summary.status, 'done', summary.failure);
  await page.waitForSelector('[data-actor="reducer/main"] svg [data-state="reducer.done"][data-active="true"]');
  await page.waitForFunction((n) => (window as any).fedstate.plots.rounds.length === n, ROUNDS, { timeout: 5_000 });

  const plots = await page.evaluate(() => (window as any).fedstate.plots);
  assert.equal(plots.rounds, summary.rounds.map((r) => r.round));
  assert.equal(plots.accuracy, summary.rounds.map((r) => r.evalMetrics.accuracy));
  assert.equal(plots.updates, summary.rounds.map((r) => r.updates));
  assert.is(await page.$eval('#plot-accuracy', (e) => Number((e as HTMLElement).dataset.points)), ROUNDS, 'one point per finished round');
  assert.is(await page.$eval('#plot-participation', (e) => Number((e as HTMLElement).dataset.points)), ROUNDS);
  assert.ok(await page.$('#plot-accuracy canvas'), 'uPlot drew a canvas');

  const seen: string[] = await page.evaluate(() => (window as any).seenStates);
  for (const s of ['reducer.seeded', 'reducer.running.awaitingCombiners', 'reducer.done']) assert.ok(seen.includes(s), `highlighted ${s}; saw ${seen.join(' → ')}`);
  assert.ok(seen.filter((s) => s === 'reducer.running.awaitingCombiners').length >= 2, `the highlight went back to awaitingCombiners for later rounds: ${seen.join(' → ')}`);
  assert.is(seen[seen.length - 1], 'reducer.done');
  assert.equal((await reducerActive(page)).sort(), ['reducer', 'reducer.done']);
  // The highlight is really drawn: the done state's box is filled with the highlight colour.
  const fill = await page.$eval('[data-actor="reducer/main"] svg [data-state="reducer.done"] rect', (r) => getComputedStyle(r).fill);
  assert.is(fill, 'rgb(255, 244, 194)');
  assert.ok(await page.$('[data-actor="reducer/main"] svg .sc-edge.sc-taken'), 'the last transition is marked');

  // Tables and the event log follow too.
  await page.waitForFunction((n) => document.querySelectorAll('#trail tbody tr[data-model]').length === n, ROUNDS + 1);
  assert.is(await page.$$eval('#clients tbody tr[data-client]', (r) => r.length), 3);
  assert.is(await page.$$eval('#combiners tbody tr[data-combiner]', (r) => r.length), 2);
  const log = await page.$$eval('[data-actor="reducer/main"] .log li', (li) => li.map((l) => l.textContent ?? ''));
  assert.ok(log.some((l) => /RoundReport ← combiner\/c[12]/.test(l)), 'the event log shows round reports');
  assert.ok(log.length <= 120, 'the log is bounded');

  mkdirSync('test-output', { recursive: true });
  await page.screenshot({ path: 'test-output/dashboard.png', fullPage: true });
  assert.equal(problems, [], 'no page or console errors');
});

test.run();
