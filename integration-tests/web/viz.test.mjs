// Browser tests of the web visualizer: a real chromium driven by playwright-core
// against a running `deeplake serve` (scripts/test.sh starts it and builds the
// datasets). Environment: DEEPLAKE_VIZ_URL (the server), DEEPLAKE_VIZ_OUT (where
// screenshots and figures go), DEEPLAKE_VIZ_RICH / _10K / _100K / _1M / _MEDIA (dataset
// names), DEEPLAKE_VIZ_MEDIA_FILES (the folder of the media dataset's linked images,
// WAV and MP4 files, with colours.json), DEEPLAKE_VIZ_TOKEN_URL and DEEPLAKE_VIZ_TOKEN
// (a server that needs that read token).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.DEEPLAKE_VIZ_URL;
const OUT = process.env.DEEPLAKE_VIZ_OUT || 'target/web-test';
const RICH = process.env.DEEPLAKE_VIZ_RICH || 'rich';
const TEN_K = process.env.DEEPLAKE_VIZ_10K || 'images10k';
const HUNDRED_K = process.env.DEEPLAKE_VIZ_100K || 'rows100k';
const MILLION = process.env.DEEPLAKE_VIZ_1M || 'rows1m';
const MEDIA = process.env.DEEPLAKE_VIZ_MEDIA || 'media';
const MEDIA_FILES = process.env.DEEPLAKE_VIZ_MEDIA_FILES;
const TOKEN_URL = process.env.DEEPLAKE_VIZ_TOKEN_URL;
const TOKEN = process.env.DEEPLAKE_VIZ_TOKEN;
assert.ok(BASE, 'DEEPLAKE_VIZ_URL must name the server');
mkdirSync(OUT, { recursive: true });

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--enable-precise-memory-info'],
  });
});

after(async () => {
  if (browser) await browser.close();
});

/** A fresh page that records console errors, page errors and every request URL. */
async function openPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  const requests = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`${m.text()} (${m.location().url})`); });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('request', (r) => requests.push(r.url()));
  return { context, page, errors, requests };
}

async function shot(page, name) {
  const path = join(OUT, `${name}.png`);
  await page.screenshot({ path });
  console.log(`screenshot: ${path}`);
}

async function api(path) {
  const res = await fetch(new URL(path, BASE));
  assert.equal(res.status, 200, `${path}: ${res.status}`);
  return res.json();
}

const waitScreen = (page, n) => page.waitForFunction((k) => window.__viz.screens >= k, n, { timeout: 15000 });

/**
 * Waits until the first grid shows the rows at its scroll position, all loaded. Cells
 * that are loaded but still hold the rows of before the scroll do not count: the
 * scroll event may not have reached the page yet.
 */
const waitLoadedHere = (page) => page.waitForFunction(() => {
  const g = window.__viz.grids[0];
  const top = Math.floor(g.root.scrollTop / g.cellH) * g.cols;
  return g.cells.some((c) => c.index === top && c.loaded) && g.cells.every((c) => c.index < 0 || c.loaded);
}, null, { timeout: 15000 });

/** Runs `action`, then waits until `grids` more grids settled (cells on screen drawn). */
async function settle(page, action, grids = 1) {
  const n = await page.evaluate(() => window.__viz.screens);
  await action();
  await waitScreen(page, n + grids);
}

/** Pixel statistics of the canvas of the grid cell showing `row` (the image area). */
function cellPixels(page, row, withData = true) {
  return page.evaluate(([r, keep]) => {
    const cell = [...document.querySelectorAll('.cell')].find((c) => !c.hidden && c.dataset.row === String(r));
    if (!cell) return null;
    const c = cell.querySelector('canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let opaque = 0, sum = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 0) {
        opaque++;
        sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2];
      }
    }
    return { opaque, total: d.length / 4, mean: sum.map((s) => s / Math.max(1, opaque)), data: keep ? Array.from(d) : null };
  }, [row, withData]);
}

/** The mean colour of a sample's image, decoded by the browser on its own. */
function imageMean(page, url) {
  return page.evaluate(async (u) => {
    const bmp = await createImageBitmap(await (await fetch(u)).blob());
    const c = new OffscreenCanvas(bmp.width, bmp.height);
    const x = c.getContext('2d');
    x.drawImage(bmp, 0, 0);
    const d = x.getImageData(0, 0, bmp.width, bmp.height).data;
    const sum = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) { sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2]; }
    return sum.map((s) => s / (d.length / 4));
  }, url);
}

function diffPixels(a, b) {
  let n = 0;
  for (let i = 0; i < a.length; i += 4) {
    if (Math.abs(a[i] - b[i]) + Math.abs(a[i + 1] - b[i + 1]) + Math.abs(a[i + 2] - b[i + 2]) > 30) n++;
  }
  return n;
}

async function setOverlays(page, on) {
  const boxes = await page.$$('.toggles input[type=checkbox]');
  for (const b of boxes) {
    if ((await b.isChecked()) !== on) {
      const redrawn = page.evaluate(() => Promise.all(window.__viz.grids.map((g) => new Promise((r) => g.addEventListener('redrawn', r, { once: true })))));
      await b.click();
      await redrawn;
    }
  }
}

test('rich dataset: thumbnails, overlays, query, branches, diff, sequence', async () => {
  const { context, page, errors, requests } = await openPage();
  const info = await api(`datasets/${RICH}`);
  await page.goto(`${BASE}/#/d/${RICH}`);
  await waitScreen(page, 1);
  await shot(page, 'rich-grid');

  // Thumbnails: with overlays off, the canvas shows the image: mostly opaque, and its
  // mean colour close to the image's own.
  await setOverlays(page, false);
  const plain = await cellPixels(page, 0);
  assert.ok(plain, 'row 0 is on screen');
  assert.ok(plain.opaque > plain.total * 0.9, `image fills the canvas (${plain.opaque}/${plain.total})`);
  const want = await imageMean(page, `${BASE}/datasets/${RICH}/tensors/images/samples/0?format=raw`);
  for (let k = 0; k < 3; k++) {
    assert.ok(Math.abs(plain.mean[k] - want[k]) < 12, `channel ${k}: canvas ${plain.mean[k]} vs image ${want[k]}`);
  }
  // Overlays on change the pixels (masks, boxes, keypoints, polygons, points).
  await setOverlays(page, true);
  const drawn = await cellPixels(page, 0);
  const changed = diffPixels(plain.data, drawn.data);
  assert.ok(changed > 200, `overlays change ${changed} pixels`);
  // Only the box overlay: fewer pixels change than with everything, but some do.
  for (const b of await page.$$('.toggles input[type=checkbox]')) {
    const id = await b.getAttribute('id');
    if (id !== 'toggle-boxes') {
      const redrawn = page.evaluate(() => new Promise((r) => window.__viz.grids[0].addEventListener('redrawn', r, { once: true })));
      await b.click();
      await redrawn;
    }
  }
  const boxOnly = diffPixels(plain.data, (await cellPixels(page, 0)).data);
  assert.ok(boxOnly > 20 && boxOnly < changed, `box overlay changes ${boxOnly} pixels (all: ${changed})`);
  await setOverlays(page, true);
  await shot(page, 'rich-overlays');

  // Alt text names the row and its labels.
  const alt = await page.getAttribute('.cell[data-row="0"] canvas', 'aria-label');
  const labels = await api(`datasets/${RICH}/tensors/labels/samples?start=0&end=${info.length}`);
  const names = info.tensors.find((t) => t.name === 'labels').class_names;
  const label0 = names[labels.samples[0].data[0]];
  assert.match(alt, new RegExp(`^row 0: .*${label0}`));

  // A query: the count matches the labels read through the API.
  const circles = labels.samples.filter((s) => names[s.data[0]] === 'circle').length;
  assert.ok(circles > 0);
  await page.fill('#tql', "SELECT * WHERE labels == 'circle'");
  await settle(page, () => page.click('#run'));
  assert.equal(Number(await page.getAttribute('#tql-msg', 'data-count')), circles);
  const shownRows = await page.$$eval('.cell:not([hidden])[data-row]', (cs) => cs.map((c) => Number(c.dataset.row)));
  const firstCircle = labels.samples.findIndex((s) => names[s.data[0]] === 'circle');
  assert.ok(shownRows.includes(firstCircle), `row ${firstCircle} is shown (${shownRows})`);
  assert.equal(await page.evaluate(() => window.__viz.grids[0].count), circles);
  await shot(page, 'rich-query');
  // The query saved as a view: the daemon lists it with the same rows.
  page.once('dialog', (d) => d.accept('circles'));
  await settle(page, () => page.click('#save-view'));
  await page.waitForFunction(() => /saved view circles/.test(document.querySelector('#tql-msg').textContent));
  const view = await api(`datasets/${RICH}/views/circles`);
  assert.equal(JSON.stringify(view).includes("labels == 'circle'"), true, JSON.stringify(view).slice(0, 300));
  // A bad query shows where it fails.
  await page.fill('#tql', 'SELECT * WHERE labels ==');
  await page.click('#run');
  await page.waitForSelector('#tql-msg.error');
  assert.match(await page.textContent('#tql-msg'), /position \d+/);
  await settle(page, () => page.click('#clear'));

  // Another branch: more rows and row 0 relabelled.
  const relabel = await api(`datasets/${RICH}/tensors/labels/samples/0?ref=relabel`);
  const relabelled = names[relabel.data[0]];
  assert.notEqual(relabelled, label0);
  await settle(page, () => page.selectOption('#ref', 'relabel'));
  // The branch deleted the last row and appended five.
  assert.equal(await page.evaluate(() => window.__viz.grids[0].count), info.length + 4);
  const alt2 = await page.getAttribute('.cell[data-row="0"] canvas', 'aria-label');
  assert.match(alt2, new RegExp(`^row 0: .*${relabelled}`));
  // Diff against main: relabelled rows are marked changed.
  await settle(page, () => page.selectOption('#diff', 'main'));
  assert.ok(await page.$('.cell[data-row="0"].updated'), 'row 0 is marked changed');
  assert.ok(await page.$('.cell[data-row="1"]:not(.updated):not(.added)'), 'row 1 is unmarked');
  assert.match(await page.textContent('#legend'), /\+5 added.*~10 changed.*-0 deleted in main/);
  await shot(page, 'rich-diff');
  // From main, diffed against the branch: the row the branch deleted is marked.
  await settle(page, () => page.selectOption('#ref', 'main'));
  await settle(page, () => page.selectOption('#diff', 'relabel'));
  assert.match(await page.textContent('#legend'), /-1 deleted in relabel/);
  await page.evaluate(() => { const r = window.__viz.grids[0].root; r.scrollTop = r.scrollHeight; });
  await page.waitForSelector(`.cell[data-row="${info.length - 1}"].deleted`);
  assert.equal(await page.$$eval('.cell.deleted', (cs) => cs.length), 1);
  await shot(page, 'rich-diff-deleted');
  // Back on the branch; its diff against itself is off.
  await settle(page, () => page.selectOption('#ref', 'relabel'));
  assert.equal(await page.inputValue('#diff'), '');
  // Time travel: the branch's log offers the commit it started from, which shows
  // main's rows and labels.
  const log = await api(`datasets/${RICH}/log?ref=relabel`);
  const base = log.find((c) => c.message === 'demo rows');
  assert.ok(base, JSON.stringify(log));
  await settle(page, () => page.selectOption('#ref', base.commit_id));
  assert.equal(await page.evaluate(() => window.__viz.grids[0].count), info.length);
  assert.match(await page.getAttribute('.cell[data-row="0"] canvas', 'aria-label'), new RegExp(`^row 0: .*${label0}`));
  await settle(page, () => page.selectOption('#ref', 'relabel'));

  // Compare two refs side by side, scrolling together.
  await settle(page, () => page.selectOption('#compare', 'ref:main'), 2);
  assert.equal(await page.evaluate(() => window.__viz.grids.length), 2);
  await page.evaluate(() => { window.__viz.grids[0].root.scrollTop = 400; });
  await page.waitForFunction(() => window.__viz.grids[1].root.scrollTop === window.__viz.grids[0].root.scrollTop);
  await shot(page, 'rich-compare');
  await settle(page, () => page.selectOption('#compare', ''));
  // Compare two image tensors: the second grid shows the grey depth images (overlays
  // off: without them its pixels are grey, the first grid's are not).
  await settle(page, () => page.selectOption('#compare', 'tensor:depth'), 2);
  await setOverlays(page, false);
  const spread = (g) => page.evaluate((k) => {
    const cell = [...window.__viz.grids[k].root.querySelectorAll('.cell')].find((c) => c.dataset.row === '0');
    const c = cell.querySelector('canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let opaque = 0, most = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (!d[i + 3]) continue;
      opaque++;
      most = Math.max(most, Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]));
    }
    return { opaque, most, total: d.length / 4 };
  }, g);
  const [camera, depth] = [await spread(0), await spread(1)];
  assert.ok(depth.opaque > depth.total * 0.9, 'the depth image fills its canvas');
  assert.ok(depth.most <= 8, `depth is grey (channel spread ${depth.most})`);
  assert.ok(camera.most > 40, `the camera image is coloured (channel spread ${camera.most})`);
  await setOverlays(page, true);
  await shot(page, 'rich-compare-depth');
  await settle(page, () => page.selectOption('#compare', ''));
  assert.equal(await page.evaluate(() => window.__viz.grids.length), 1);

  // Keyboard: arrows move the focused cell, Enter opens its row, Escape closes it.
  await page.focus('.grid');
  await page.keyboard.press('Home');
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('ArrowDown');
  const cols = await page.evaluate(() => window.__viz.grids[0].cols);
  assert.equal(await page.evaluate(() => window.__viz.grids[0].focus), 1 + cols);
  assert.ok(await page.$(`.cell.focused[data-row="${1 + cols}"]`));
  await page.keyboard.press('Enter');
  await page.waitForSelector(`.sample[aria-label="row ${1 + cols}"]`);
  await page.keyboard.press('Escape');
  assert.equal(await page.isHidden('#sample'), true);

  // The sample view and its sequence scrubber: one frame request per step.
  await page.click('.cell[data-row="1"]');
  await page.waitForSelector('section[data-tensor="clip"][data-frame="0"]');
  const frameReqs = () => requests.filter((u) => /\/tensors\/clip\/samples\/1\?.*frame=/.test(u)).length;
  assert.equal(frameReqs(), 1);
  for (const k of [1, 2, 0]) {
    await page.$eval('.scrubber', (s, v) => { s.value = String(v); s.dispatchEvent(new Event('input')); }, k);
    await page.waitForSelector(`section[data-tensor="clip"][data-frame="${k}"]`);
  }
  assert.equal(frameReqs(), 4, 'one request per frame shown');
  await page.click('.play');
  await page.waitForSelector('section[data-tensor="clip"][data-frame="2"]');
  await page.click('.play');
  await page.waitForTimeout(500);
  const steps = Number(await page.getAttribute('section[data-tensor="clip"]', 'data-steps'));
  assert.ok(steps >= 6, `played ${steps - 4} frames`);
  assert.equal(frameReqs(), steps, 'playing fetches one request per frame shown');
  await shot(page, 'rich-sample');
  await page.keyboard.press('Escape');
  assert.equal(await page.isHidden('#sample'), true);

  // The one error the browser logs is the bad query's 400, which the test caused.
  const expected = errors.filter((e) => /status of 400/.test(e) && e.includes(`/datasets/${RICH}/query`));
  assert.equal(expected.length, 1, `${errors}`);
  assert.deepEqual(errors.filter((e) => !expected.includes(e)), [], 'no other console errors');
  await context.close();
});

test('10k images: the first screen of thumbnails in under 1 s', async () => {
  // Three cold loads (a fresh browser context each, so nothing is cached); the median
  // is judged, since one load on a shared 2-core machine can catch a busy moment.
  const loads = [];
  let last = null;
  for (let i = 0; i < 3; i++) {
    if (last) await last.context.close();
    last = await openPage();
    await last.page.goto(`${BASE}/#/d/${TEN_K}`);
    await last.page.waitForFunction(() => window.__viz.firstScreenMs !== null, null, { timeout: 15000 });
    loads.push(await last.page.evaluate(() => window.__viz.firstScreenMs));
  }
  const { context, page, errors } = last;
  const ms = [...loads].sort((a, b) => a - b)[1];
  const cells = await page.evaluate(() => window.__viz.grids[0].firstScreenCells);
  console.log(`first screen of ${cells} thumbnails (10k images): median ${ms.toFixed(0)} ms after navigation (cold loads: ${loads.map((x) => x.toFixed(0)).join(', ')} ms)`);
  writeFileSync(join(OUT, 'first-screen-ms.txt'), `median ${ms.toFixed(1)} loads ${loads.map((x) => x.toFixed(1)).join(' ')}\n`);
  await waitScreen(page, 1);
  await shot(page, 'images10k');
  // The first screen is every cell on screen: 7 columns by 4 lines at 1280 x 800, each
  // showing its image.
  assert.ok(cells >= 28, `${cells} thumbnails`);
  for (let row = 0; row < cells; row++) {
    const px = await cellPixels(page, row, false);
    assert.ok(px && px.opaque > px.total * 0.9, `row ${row} is drawn`);
  }
  assert.ok(ms < 1000, `first screen took ${ms} ms (median of ${loads.join(', ')})`);
  assert.deepEqual(errors, []);
  await context.close();
});

/**
 * Scrolling the grid of `name` (`rows` rows): a fling from top to bottom and 40 stops
 * fetch only the rows on screen, the last row's thumbnail shows its image (tensor
 * `primary`); heap, DOM and caches stay bounded. Figures go to scroll-`tag`.txt.
 */
async function scrollCheck(name, rows, tag, primary) {
  const { context, page, errors, requests } = await openPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Performance.enable');
  await page.goto(`${BASE}/#/d/${name}`);
  await waitScreen(page, 1);
  assert.equal(await page.evaluate(() => window.__viz.grids[0].count), rows);
  const pool = await page.evaluate(() => window.__viz.grids[0].poolSize);
  const images = () => requests.filter((u) => /\/samples\/\d+\?.*format=raw/.test(u)).length;
  const slices = () => requests.filter((u) => /\/samples\?/.test(u)).length;
  assert.ok(images() <= pool, `first screen: ${images()} image requests for ${pool} cells`);

  // A fling from top to bottom, faster than the grid's settle delay: only the rows
  // where it stops are fetched.
  // Under load the page's timers can stall: a gap between two scroll steps longer than
  // the grid's settle delay is a stop, where the cells on screen may fetch. The bound is
  // one pool of images per stop, the end included.
  const before = images();
  const stalls = await page.evaluate(async () => {
    const root = window.__viz.grids[0].root;
    const max = root.scrollHeight - root.clientHeight;
    let last = performance.now(), stalls = 0;
    for (let i = 1; i <= 100; i++) {
      root.scrollTop = (max * i) / 100;
      await new Promise((r) => setTimeout(r, 10));
      const now = performance.now();
      if (now - last >= window.__viz.settleMs) stalls++;
      last = now;
    }
    return stalls;
  });
  await waitLoadedHere(page);
  const fling = images() - before;
  console.log(`fling over ${tag} rows: ${fling} image requests (${stalls} stalls of the page's timers), ${slices()} slice requests in all, pool ${pool} cells`);
  assert.ok(fling <= pool * (1 + stalls), `fling fetched ${fling} images (pool ${pool}, ${stalls} stalls)`);
  const last = await page.$$eval('.cell:not([hidden])[data-row]', (cs) => Math.max(...cs.map((c) => Number(c.dataset.row))));
  assert.equal(last, rows - 1);
  const px = await cellPixels(page, rows - 1, false);
  const want = await imageMean(page, `${BASE}/datasets/${name}/tensors/${primary}/samples/${rows - 1}?format=raw`);
  assert.ok(px.opaque > px.total * 0.9, `row ${rows - 1} is drawn (${px.opaque}/${px.total})`);
  for (let k = 0; k < 3; k++) {
    assert.ok(Math.abs(px.mean[k] - want[k]) < 12, `row ${rows - 1} channel ${k}: canvas ${px.mean[k]} vs image ${want[k]}`);
  }

  // Stops at 40 places: each fetches at most one pool of images, and at least the rows
  // fully on screen (after the first, the stops are far from any cached row); the
  // DOM keeps its pool.
  const heap = async () => {
    await cdp.send('HeapProfiler.collectGarbage');
    const { metrics } = await cdp.send('Performance.getMetrics');
    return metrics.find((m) => m.name === 'JSHeapUsedSize').value;
  };
  const domNodes = async () => (await cdp.send('Memory.getDOMCounters')).nodes;
  const heapStart = await heap();
  const nodesStart = await domNodes();
  const onScreen = await page.evaluate(() => {
    const g = window.__viz.grids[0];
    return g.cols * Math.floor(g.root.clientHeight / g.cellH);
  });
  const stops = [];
  for (let k = 0; k < 40; k++) {
    const n = images();
    await page.evaluate((f) => {
      const root = window.__viz.grids[0].root;
      root.scrollTop = (root.scrollHeight - root.clientHeight) * f;
    }, (k * 0.6180339) % 1);
    await waitLoadedHere(page);
    const fetched = images() - n;
    stops.push(fetched);
    assert.ok(fetched <= pool, `stop ${k}: ${fetched} image requests`);
    if (k > 0) assert.ok(fetched >= onScreen, `stop ${k}: ${fetched} image requests for ${onScreen} rows on screen`);
    const top = await page.evaluate(() => {
      const g = window.__viz.grids[0];
      return Math.floor(g.root.scrollTop / g.cellH) * g.cols;
    });
    const px = await cellPixels(page, top, false);
    assert.ok(px && px.opaque > px.total * 0.9, `stop ${k}: row ${top} is drawn`);
  }
  const heapEnd = await heap();
  const nodesEnd = await domNodes();
  const domCells = await page.$$eval('.cell', (cs) => cs.length);
  const cached = await page.evaluate(() => window.__viz.loaders[0].images.size);
  console.log(`JS heap: ${(heapStart / 1e6).toFixed(1)} MB -> ${(heapEnd / 1e6).toFixed(1)} MB after 40 stops; DOM nodes ${nodesStart} -> ${nodesEnd}; ${domCells} cells in the DOM, ${cached} images cached`);
  writeFileSync(join(OUT, `scroll-${tag}.txt`), `pool ${pool}\nfling_image_requests ${fling}\nfling_stalls ${stalls}\nstop_image_requests ${stops.join(',')}\nheap_start ${heapStart}\nheap_end ${heapEnd}\ndom_nodes_start ${nodesStart}\ndom_nodes_end ${nodesEnd}\n`);
  assert.equal(domCells, pool);
  assert.ok(nodesEnd <= nodesStart + 50, `DOM nodes grew from ${nodesStart} to ${nodesEnd}`);
  assert.ok(cached <= 400);
  assert.ok(heapEnd < 64e6, `heap ${heapEnd}`);
  assert.ok(heapEnd < heapStart + 24e6, `heap grew from ${heapStart} to ${heapEnd}`);
  await shot(page, name);
  assert.deepEqual(errors, []);
  await context.close();
}

test('100k rows: scrolling fetches only visible rows and keeps memory bounded', () => scrollCheck(HUNDRED_K, 100000, '100k', 'images'));

// Thumbnails of a link[image] tensor: every one is fetched through the daemon's linker.
test('1M rows: scrolling fetches only visible rows and keeps memory bounded', () => scrollCheck(MILLION, 1000000, '1m', 'url'));

test('media: link[image] thumbnails through the daemon; video and audio with native controls', async () => {
  assert.ok(MEDIA_FILES, 'DEEPLAKE_VIZ_MEDIA_FILES names the media files');
  const colours = JSON.parse(readFileSync(join(MEDIA_FILES, 'colours.json'), 'utf8'));
  const { context, page, errors, requests } = await openPage();
  const info = await api(`datasets/${MEDIA}`);
  assert.equal(info.length, colours.length);
  const htypes = Object.fromEntries(info.tensors.map((t) => [t.name, t.htype]));
  assert.deepEqual(htypes, { linked: 'link[image]', audio: 'audio', video: 'video' });
  // The link tensor stores absolute paths to the files beside the dataset.
  const stored = await api(`datasets/${MEDIA}/tensors/linked/samples/1?format=link`);
  assert.ok(JSON.stringify(stored).includes(join(MEDIA_FILES, 'image1.png')), JSON.stringify(stored));

  // The grid's thumbnails are the linked files, fetched through the daemon: each
  // canvas shows its file's colour.
  await page.goto(`${BASE}/#/d/${MEDIA}`);
  await waitScreen(page, 1);
  await page.waitForFunction(() => window.__viz.grids[0].cells.every((c) => c.index < 0 || c.loaded), null, { timeout: 15000 });
  await shot(page, 'media-grid');
  for (let row = 0; row < colours.length; row++) {
    const px = await cellPixels(page, row, false);
    assert.ok(px && px.opaque > px.total * 0.5, `row ${row} is drawn (${px && px.opaque}/${px && px.total})`);
    for (let k = 0; k < 3; k++) {
      assert.ok(Math.abs(px.mean[k] - colours[row][k]) < 8, `row ${row} channel ${k}: canvas ${px.mean[k]} vs file ${colours[row][k]}`);
    }
  }
  const linkReqs = requests.filter((u) => /\/tensors\/linked\/samples\/\d+\?.*format=raw/.test(u));
  assert.equal(linkReqs.length, colours.length, `${linkReqs}`);

  // The sample view: the linked image on a canvas, video and audio as native players
  // whose source is the daemon's raw sample URL, their metadata loaded by the browser.
  const row = 1;
  await page.click(`.cell[data-row="${row}"]`);
  await page.waitForSelector(`.sample[aria-label="row ${row}"] section[data-tensor="audio"] audio`);
  const linked = await page.$eval('section[data-tensor="linked"] canvas', (c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    const sum = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3]) { n++; sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2]; }
    }
    return { n, mean: sum.map((v) => v / Math.max(1, n)) };
  });
  assert.ok(linked.n > 0, 'the linked image is drawn in the sample view');
  for (let k = 0; k < 3; k++) {
    assert.ok(Math.abs(linked.mean[k] - colours[row][k]) < 8, `sample view channel ${k}: ${linked.mean[k]} vs ${colours[row][k]}`);
  }
  const media = async (kind) => {
    await page.waitForFunction((sel) => {
      const m = document.querySelector(sel);
      return m && (m.readyState >= 1 || m.error);
    }, `section[data-tensor="${kind}"] ${kind}`, { timeout: 15000 });
    return page.$eval(`section[data-tensor="${kind}"] ${kind}`, (m) => ({
      controls: m.controls, src: m.src, readyState: m.readyState, duration: m.duration,
      error: m.error && m.error.message, width: m.videoWidth, height: m.videoHeight,
    }));
  };
  const video = await media('video');
  const audio = await media('audio');
  console.log(`sample view: video ${JSON.stringify(video)}; audio ${JSON.stringify(audio)}`);
  for (const [kind, m, seconds] of [['video', video, 12 / 8], ['audio', audio, 0.5 + 0.25 * row]]) {
    assert.equal(m.error, null, `${kind} played without an error`);
    assert.equal(m.controls, true, `${kind} has native controls`);
    const url = new URL(m.src);
    assert.equal(url.origin + url.pathname, `${new URL(BASE).origin}/datasets/${MEDIA}/tensors/${kind}/samples/${row}`);
    assert.equal(url.searchParams.get('format'), 'raw');
    assert.ok(m.readyState >= 1, `${kind} metadata loaded (readyState ${m.readyState})`);
    assert.ok(Math.abs(m.duration - seconds) < 0.1, `${kind} lasts ${m.duration} s, its file ${seconds} s`);
    // The daemon answers the stored bytes: the very file that was appended.
    const res = await fetch(m.src);
    assert.equal(res.headers.get('content-type'), kind === 'video' ? 'video/mp4' : 'audio/wav');
    const file = readFileSync(join(MEDIA_FILES, `${kind}${row}.${kind === 'video' ? 'mp4' : 'wav'}`));
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(file), `${kind} bytes are the file's`);
  }
  assert.deepEqual([video.width, video.height], [32, 32]);
  // The browser decodes and plays the video (muted, as autoplay rules want).
  await page.$eval('section[data-tensor="video"] video', (v) => { v.muted = true; return v.play(); });
  await page.waitForFunction(() => document.querySelector('section[data-tensor="video"] video').currentTime > 0.2, null, { timeout: 15000 });
  await shot(page, 'media-sample');
  await page.keyboard.press('Escape');
  assert.equal(await page.isHidden('#sample'), true);
  assert.deepEqual(errors, []);
  await context.close();
});

test('a server with tokens: the page takes one from #token= or asks for it', async () => {
  assert.ok(TOKEN_URL && TOKEN, 'DEEPLAKE_VIZ_TOKEN_URL and DEEPLAKE_VIZ_TOKEN name the tokened server');
  const res = await fetch(new URL('datasets', TOKEN_URL));
  assert.equal(res.status, 401, 'the API needs the token');

  // From the address: the token leaves the address bar and every API call carries it.
  let { context, page, errors } = await openPage();
  await page.goto(`${TOKEN_URL}/#token=${TOKEN}`);
  await page.waitForSelector('.list li a');
  const listed = await page.$$eval('.list li a', (as) => as.map((a) => a.textContent).sort());
  assert.deepEqual(listed, [TEN_K, RICH, HUNDRED_K, MILLION, MEDIA].sort());
  assert.ok(!page.url().includes(TOKEN), page.url());
  await settle(page, () => page.click(`.list a[href="#/d/${RICH}"]`));
  assert.ok((await cellPixels(page, 0, false)).opaque > 0, 'thumbnails load with the token');
  // A media element cannot send the token: the page fetches the bytes with it and
  // plays them from a blob.
  await page.goto(`${TOKEN_URL}/#/d/${MEDIA}`);
  await page.waitForSelector('.cell[data-row="0"]');
  await page.click('.cell[data-row="0"]');
  await page.waitForFunction(() => {
    const a = document.querySelector('section[data-tensor="audio"] audio');
    return a && a.readyState >= 1;
  }, null, { timeout: 15000 });
  const tokened = await page.$eval('section[data-tensor="audio"] audio', (a) => ({ src: a.src, duration: a.duration, controls: a.controls }));
  assert.match(tokened.src, /^blob:/);
  assert.equal(tokened.controls, true);
  assert.ok(Math.abs(tokened.duration - 0.5) < 0.1, `audio lasts ${tokened.duration} s`);
  assert.deepEqual(errors, []);
  await context.close();

  // Without it: a 401 brings up the prompt, and the typed token is used.
  ({ context, page, errors } = await openPage());
  let asked = 0;
  page.on('dialog', (d) => { asked++; d.accept(TOKEN); });
  await page.goto(`${TOKEN_URL}/`);
  await page.waitForSelector('.list li a');
  assert.equal(asked, 1);
  assert.equal(errors.length, 1, `${errors}`);
  assert.match(errors[0], /status of 401/);
  await context.close();
});
