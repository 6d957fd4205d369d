// The virtualized grid. Only a fixed pool of cells exists in the DOM: enough for the
// visible lines plus a margin, recycled as the view scrolls (each cell moved with a
// transform and given a new row). A cell starts its fetches once scrolling pauses, and
// a cell that scrolls away aborts them, so fetches follow what is on screen.
//
// `RowLoader` gets one row's primary image (raw bytes -> bitmap), drawn as soon as it
// arrives (the first screen of thumbnails does not wait for labels), and its overlay and
// caption samples (one slice request per tensor per page of rows, shared by the cells
// of that page); both caches are bounded LRUs.

import { getJson, getRaw, paths } from './api.js';
import { Lru, imageCache } from './cache.js';
import { drawSample, sampleText } from './render.js';

const PAGE = 50;
// How long scrolling must pause before the cells on screen fetch (a fling passes by).
export const SETTLE_MS = 100;

export class RowLoader {
  /**
   * @param {object} o dataset name, ref, primary image tensor (or null), overlay
   *   tensors, caption tensors (tensor infos from the dataset route), images: LRU size
   */
  constructor(o) {
    Object.assign(this, o);
    this.images = imageCache(o.imageCacheSize || 400);
    this.pages = new Lru(o.pageCacheSize || 64);
    this.inflight = new Map();
    this.enabled = new Set(o.overlays.map((t) => t.name));
  }

  dispose() {
    this.images.clear();
    this.pages.clear();
  }

  page(tensor, row) {
    const start = row - (row % PAGE);
    const key = `${tensor.name}:${start}`;
    let p = this.pages.get(key);
    if (!p) {
      const end = Math.min(start + PAGE, tensor.length);
      p = getJson(paths.slice(this.dataset, tensor.name, start, end, this.ref)).then((r) => r.samples);
      p.catch(() => this.pages.delete(key));
      this.pages.set(key, p);
    }
    return p.then((samples) => samples[row - start]);
  }

  async image(row, signal) {
    const key = `${this.primary.name}:${row}`;
    const hit = this.images.get(key);
    if (hit) return hit;
    let p = this.inflight.get(key);
    if (!p) {
      p = (async () => {
        const res = await getRaw(paths.sample(this.dataset, this.primary.name, row, this.ref, 'raw'), signal);
        const blob = await res.blob();
        const bitmap = await createImageBitmap(blob);
        const entry = { url: URL.createObjectURL(blob), bitmap };
        this.images.set(key, entry);
        return entry;
      })();
      this.inflight.set(key, p);
      p.finally(() => this.inflight.delete(key)).catch(() => {});
    }
    return p;
  }

  /** The row's overlay samples (enabled ones) and caption text. */
  async annotations(row) {
    const wanted = this.overlays.filter((t) => this.enabled.has(t.name) && row < t.length);
    const captions = this.captions.filter((t) => row < t.length);
    const [overlaySamples, captionSamples] = await Promise.all([
      Promise.all(wanted.map((t) => this.page(t, row))),
      Promise.all(captions.map((t) => this.page(t, row))),
    ]);
    const overlays = wanted.map((tensor, i) => ({ tensor, sample: overlaySamples[i] }));
    const caption = captions.map((t, i) => sampleText(captionSamples[i], t)).filter(Boolean).join(' · ');
    return { overlays, caption };
  }

  /** The row's primary image entry, or null when there is none. */
  thumbnail(row, signal) {
    return this.primary && row < this.primary.length ? this.image(row, signal) : Promise.resolve(null);
  }

  async load(row, signal) {
    const [img, ann] = await Promise.all([this.thumbnail(row, signal), this.annotations(row)]);
    return Object.assign({ bitmap: img && img.bitmap, url: img && img.url }, ann);
  }
}

export class Grid extends EventTarget {
  constructor(root, opts = {}) {
    super();
    this.root = root;
    this.size = opts.cell || 168;
    this.captionH = 20;
    this.overscan = 1;
    this.onOpen = opts.onOpen || (() => {});
    root.classList.add('grid');
    root.tabIndex = 0;
    root.setAttribute('role', 'grid');
    this.spacer = document.createElement('div');
    this.spacer.className = 'grid-spacer';
    root.append(this.spacer);
    this.cells = [];
    this.count = 0;
    this.focus = 0;
    this.generation = 0;
    this.settleTimer = 0;
    root.addEventListener('scroll', () => this.onScroll(), { passive: true });
    root.addEventListener('keydown', (e) => this.onKey(e));
    new ResizeObserver(() => this.layout()).observe(root);
  }

  /** New data: `source` maps view index -> source row, `loader` fetches a row. */
  setData(source, loader, decorate = () => {}) {
    performance.mark('viz:set-data');
    this.source = source;
    this.loader = loader;
    this.decorate = decorate;
    this.count = source.count;
    this.generation++;
    this.firstScreen = null;
    this.settled = false;
    this.root.scrollTop = 0;
    this.focus = 0;
    for (const c of this.cells) this.release(c);
    this.layout();
    clearTimeout(this.settleTimer);
    this.loadVisible();
  }

  get cellH() {
    return this.size + this.captionH;
  }

  layout() {
    const w = this.root.clientWidth || 800;
    this.cols = Math.max(1, Math.floor(w / this.size));
    const lines = Math.ceil(this.count / this.cols);
    this.spacer.style.height = `${lines * this.cellH}px`;
    const visibleLines = Math.ceil((this.root.clientHeight || 600) / this.cellH) + 1;
    const want = this.cols * (visibleLines + 2 * this.overscan);
    while (this.cells.length < want) this.cells.push(this.makeCell());
    while (this.cells.length > want) {
      const c = this.cells.pop();
      this.release(c);
      c.el.remove();
    }
    this.render();
  }

  makeCell() {
    const el = document.createElement('div');
    el.className = 'cell';
    el.setAttribute('role', 'gridcell');
    el.tabIndex = -1;
    const canvas = document.createElement('canvas');
    canvas.width = this.size - 8;
    canvas.height = this.size - 8;
    canvas.setAttribute('role', 'img');
    const cap = document.createElement('div');
    cap.className = 'caption';
    el.append(canvas, cap);
    const cell = { el, canvas, cap, index: -1, ctrl: null, loaded: false, data: null };
    el.addEventListener('click', () => {
      this.focus = cell.index;
      this.onOpen(cell.index, cell.row);
    });
    this.root.append(el);
    return cell;
  }

  release(cell) {
    if (cell.ctrl) cell.ctrl.abort();
    cell.ctrl = null;
    cell.index = -1;
    cell.loaded = false;
    cell.thumb = false;
    cell.data = null;
  }

  /** Indices of the lines on screen (plus the overscan margin). */
  window() {
    const first = Math.max(0, Math.floor(this.root.scrollTop / this.cellH) - this.overscan);
    return { start: first * this.cols, end: Math.min(this.count, first * this.cols + this.cells.length) };
  }

  render() {
    const { start, end } = this.window();
    const byIndex = new Map();
    const free = [];
    for (const c of this.cells) {
      if (c.index >= start && c.index < end) byIndex.set(c.index, c);
      else free.push(c);
    }
    for (let i = start; i < end; i++) {
      let c = byIndex.get(i);
      if (!c) {
        c = free.pop();
        if (!c) break;
        this.assign(c, i);
      }
      const line = Math.floor(i / this.cols), col = i % this.cols;
      c.el.style.transform = `translate(${col * this.size}px, ${line * this.cellH}px)`;
      c.el.hidden = false;
      c.el.classList.toggle('focused', i === this.focus);
    }
    for (const c of free) {
      this.release(c);
      c.el.hidden = true;
    }
  }

  assign(cell, index) {
    this.release(cell);
    cell.index = index;
    cell.row = undefined;
    cell.el.className = 'cell';
    cell.cap.textContent = '';
    cell.canvas.getContext('2d').clearRect(0, 0, cell.canvas.width, cell.canvas.height);
    cell.canvas.setAttribute('aria-label', `view row ${index}: loading`);
  }

  onScroll() {
    this.render();
    this.scheduleLoads(SETTLE_MS);
  }

  scheduleLoads(delay) {
    clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => this.loadVisible(), delay);
  }

  loadVisible() {
    performance.mark('viz:load-visible');
    const gen = this.generation;
    // Cells on screen first, in reading order, then the margin: the browser sends a
    // few requests per host at a time, in the order they were made.
    const top = Math.floor(this.root.scrollTop / this.cellH) * this.cols;
    const bottom = top + this.cols * Math.ceil(this.root.clientHeight / this.cellH);
    const onScreen = (c) => c.index >= top && c.index < bottom;
    const pending = this.cells
      .filter((c) => c.index >= 0 && !c.loaded && !c.ctrl)
      .sort((a, b) => a.index - b.index);
    // Thumbnails on screen go first; their labels and overlays (slice requests) start
    // once those are in, and the margin once the screen is done, so neither competes
    // with what is on screen for connections and CPU.
    let release;
    const gate = new Promise((r) => { release = r; });
    const first = pending.filter(onScreen).map((c) => this.loadCell(c, gen, gate));
    Promise.allSettled(first.map((f) => f.thumb)).then(release);
    Promise.allSettled(first.map((f) => f.done)).then(() => {
      if (gen !== this.generation) return;
      for (const c of pending) {
        if (!onScreen(c) && c.index >= 0 && !c.loaded && !c.ctrl) this.loadCell(c, gen, Promise.resolve());
      }
    });
  }

  /**
   * Loads one cell: its thumbnail at once (drawn when it arrives), its overlays and
   * caption after `gate`. Answers promises of the thumbnail's arrival and of the end.
   */
  loadCell(cell, gen, gate) {
    const index = cell.index;
    const ctrl = new AbortController();
    cell.ctrl = ctrl;
    const current = () => cell.index === index && gen === this.generation;
    let thumbDone;
    const thumbArrived = new Promise((r) => { thumbDone = r; });
    const done = (async () => {
      try {
        const row = await this.source.row(index, ctrl.signal);
        if (!current()) return;
        cell.row = row;
        const thumb = this.loader.thumbnail(row, ctrl.signal).then((img) => {
          if (current() && !cell.loaded) {
            cell.data = { bitmap: img && img.bitmap, url: img && img.url, overlays: [], caption: '' };
            cell.thumb = true;
            this.paint(cell);
            this.checkFirstScreen();
          }
          return img;
        });
        thumb.finally(thumbDone).catch(() => {});
        await gate;
        if (!current()) return;
        const [img, ann] = await Promise.all([thumb, this.loader.annotations(row)]);
        if (!current()) return;
        cell.data = Object.assign({ bitmap: img && img.bitmap, url: img && img.url }, ann);
        cell.thumb = true;
        cell.loaded = true;
        cell.ctrl = null;
        this.paint(cell);
        this.checkFirstScreen();
      } catch (e) {
        if (ctrl.signal.aborted || e.name === 'AbortError') return;
        if (cell.index === index) {
          cell.ctrl = null;
          cell.loaded = true;
          cell.thumb = true;
          cell.cap.textContent = `error: ${e.message}`;
          cell.el.classList.add('failed');
          this.checkFirstScreen();
        }
      } finally {
        thumbDone();
      }
    })();
    return { thumb: thumbArrived, done };
  }

  paint(cell) {
    const d = cell.data;
    drawSample(cell.canvas, d.bitmap, d.overlays);
    const label = this.source.label ? this.source.label(cell.index, cell.row) : `#${cell.row}`;
    cell.cap.textContent = d.caption ? `${label} ${d.caption}` : label;
    cell.canvas.setAttribute('aria-label', `row ${cell.row}${d.caption ? `: ${d.caption}` : ''}`);
    cell.el.dataset.row = cell.row;
    this.decorate(cell.el, cell.index, cell.row);
  }

  /** Draws every loaded cell again (overlay toggles changed), refetching slices only. */
  async redraw() {
    const gen = this.generation;
    await Promise.all(
      this.cells.filter((c) => c.loaded && c.data).map(async (c) => {
        const index = c.index;
        c.data = await this.loader.load(c.row, undefined);
        if (c.index === index && gen === this.generation) this.paint(c);
      }),
    );
    this.dispatchEvent(new Event('redrawn'));
  }

  /**
   * Fires `firstscreen` once every cell on screen shows its thumbnail and `settled`
   * once they also have their overlays and captions (each once per `setData`).
   */
  checkFirstScreen() {
    if (this.settled) return;
    const top = Math.floor(this.root.scrollTop / this.cellH) * this.cols;
    const visible = Math.min(this.count - top, this.cols * Math.ceil(this.root.clientHeight / this.cellH));
    const shown = this.cells.filter((c) => c.index >= top && c.index < top + visible);
    if (!this.firstScreen && shown.filter((c) => c.thumb).length >= visible) {
      this.firstScreen = performance.now();
      this.firstScreenCells = visible;
      this.dispatchEvent(new Event('firstscreen'));
    }
    if (shown.filter((c) => c.loaded).length >= visible) {
      this.settled = true;
      this.dispatchEvent(new Event('settled'));
    }
  }

  scrollToIndex(i) {
    const line = Math.floor(i / this.cols);
    const top = line * this.cellH;
    if (top < this.root.scrollTop) this.root.scrollTop = top;
    else if (top + this.cellH > this.root.scrollTop + this.root.clientHeight) {
      this.root.scrollTop = top + this.cellH - this.root.clientHeight;
    }
    this.render();
  }

  onKey(e) {
    const moves = {
      ArrowRight: 1, ArrowLeft: -1, ArrowDown: this.cols, ArrowUp: -this.cols,
      PageDown: this.cols * 3, PageUp: -this.cols * 3,
    };
    if (e.key in moves) {
      e.preventDefault();
      this.focus = Math.max(0, Math.min(this.count - 1, this.focus + moves[e.key]));
      this.scrollToIndex(this.focus);
      this.scheduleLoads(SETTLE_MS);
    } else if (e.key === 'Home' || e.key === 'End') {
      e.preventDefault();
      this.focus = e.key === 'Home' ? 0 : this.count - 1;
      this.scrollToIndex(this.focus);
      this.scheduleLoads(SETTLE_MS);
    } else if (e.key === 'Enter') {
      // The sample view focuses its close button; Enter's default action must not
      // press it.
      e.preventDefault();
      const c = this.cells.find((x) => x.index === this.focus);
      this.onOpen(this.focus, c && c.row);
    }
  }

  /** The number of cells in the DOM (the pool), for tests and diagnostics. */
  get poolSize() {
    return this.cells.length;
  }
}
