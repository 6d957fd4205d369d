// The visualizer's page: a dataset list, and a dataset view with a toolbar (ref
// picker for time travel, primary image tensor, overlay toggles, diff and compare
// modes), a TQL box and one or two virtualized grids. Rows open in the sample view.
// State lives here; grid.js, render.js and sample.js do the drawing.

import { getJson, paths, postJson, takeTokenFromHash } from './api.js';
import { Grid, RowLoader, SETTLE_MS } from './grid.js';
import { OVERLAY_HTYPES } from './render.js';
import { SampleView } from './sample.js';

// Figures the browser tests read (and anyone curious, from the console): the time of
// the first screen of thumbnails, and a count of grids that settled (every cell on
// screen drawn with its overlays).
const viz = (window.__viz = { firstScreenMs: null, screens: 0, grids: [], loaders: [], settleMs: SETTLE_MS });

const CAPTION_HTYPES = new Set(['class_label', 'text']);
const RESULT_PAGE = 1000;

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  e.append(...children.flat());
  return e;
}

function parseHtype(s) {
  let isLink = false, isSequence = false, m;
  while ((m = /^(link|sequence)\[(.*)\]$/.exec(s))) {
    if (m[1] === 'link') isLink = true;
    else isSequence = true;
    s = m[2];
  }
  return { base: s || 'generic', isLink, isSequence };
}

function normalize(t) {
  const p = parseHtype(t.htype);
  const info = Object.assign({}, t.info);
  if (t.class_names && t.class_names.length) info.class_names = t.class_names;
  return Object.assign({}, t, { htype_full: t.htype, htype: p.base, is_link: p.isLink, is_sequence: p.isSequence, info });
}

function setStatus(text) {
  document.getElementById('status').textContent = text;
}

async function listPage(main) {
  const crumbs = document.getElementById('crumbs');
  crumbs.replaceChildren();
  const { datasets } = await getJson(paths.datasets());
  main.replaceChildren(h('section', { class: 'list' },
    h('h1', {}, 'Datasets'),
    datasets.length
      ? h('ul', {}, datasets.map((d) => h('li', {}, h('a', { href: `#/d/${encodeURIComponent(d)}` }, d))))
      : h('p', {}, 'No datasets under this root.')));
}

/** The rows of a kept query result, fetched a page at a time as the grid asks. */
function resultSource(name, first) {
  const pages = new Map([[0, Promise.resolve(first.rows.map((r) => r.__row))]]);
  return {
    count: first.total,
    row(i) {
      const p = Math.floor(i / RESULT_PAGE);
      if (!pages.has(p)) {
        const req = getJson(paths.results(name, first.result_id, p * RESULT_PAGE, RESULT_PAGE)).then((r) => r.rows.map((x) => x.__row));
        req.catch(() => pages.delete(p));
        pages.set(p, req);
      }
      return pages.get(p).then((rows) => rows[i - p * RESULT_PAGE]);
    },
    label: (i, row) => `${i}→#${row}`,
  };
}

function fullSource(length) {
  return { count: length, row: (i) => i, label: (i, row) => `#${row}` };
}

/**
 * Marks of a 3.x diff dict between `from` (another ref) and `to` (the ref shown), by
 * row: added and updated on the shown side, and deleted on the other side (rows of
 * the common ancestor that are here but gone there). Only tensors in `rowTensors`
 * count (a sequence's diff counts items, not rows).
 */
function diffSets(d, rowTensors) {
  const two = Array.isArray(d.tensor[0]);
  const here = two ? d.tensor[1] : d.tensor;
  const there = two ? d.tensor[0] : [];
  const out = { added: new Set(), updated: new Set(), deleted: new Set() };
  const each = (commits, f) => {
    for (const c of commits) {
      for (const [name, ch] of Object.entries(c)) if (rowTensors.has(name) && ch && typeof ch === 'object') f(ch);
    }
  };
  each(here, (ch) => {
    const [s, e] = ch.data_added || [0, 0];
    for (let i = s; i < e; i++) out.added.add(i);
  });
  each(here, (ch) => {
    for (const i of ch.data_updated || []) if (!out.added.has(i)) out.updated.add(i);
  });
  each(there, (ch) => {
    for (const i of ch.data_deleted || []) out.deleted.add(i);
  });
  return out;
}

async function datasetPage(main, name) {
  const crumbs = document.getElementById('crumbs');
  crumbs.replaceChildren(h('span', {}, name));
  const st = { name, ref: 'main', enabled: new Set(), diff: '', compare: '', result: null };
  const sample = new SampleView(document.getElementById('sample'), {
    dataset: name,
    get ref() { return st.ref; },
    // Keyboard users land back on the grid they came from.
    onClose: () => { if (gridsState.length) gridsState[0].root.focus({ preventScroll: true }); },
  });

  let branches = [];

  const refSel = h('select', { id: 'ref', 'aria-label': 'branch or commit' });
  const primarySel = h('select', { id: 'primary', 'aria-label': 'image tensor' });
  const toggles = h('span', { class: 'toggles', role: 'group', 'aria-label': 'overlays' });
  const diffSel = h('select', { id: 'diff', 'aria-label': 'diff against' });
  const compareSel = h('select', { id: 'compare', 'aria-label': 'compare with' });
  const tqlInput = h('input', { id: 'tql', type: 'text', 'aria-label': 'TQL query', placeholder: 'SELECT * WHERE labels == \'circle\'', spellcheck: 'false' });
  const tqlMsg = h('span', { class: 'msg', id: 'tql-msg', role: 'status' });
  const legend = h('span', { class: 'legend', id: 'legend' });
  const panes = h('div', { class: 'panes' });
  main.replaceChildren(
    h('div', { class: 'toolbar' },
      h('label', {}, 'ref ', refSel),
      h('label', {}, 'image ', primarySel),
      toggles,
      h('label', {}, 'diff vs ', diffSel),
      h('label', {}, 'compare ', compareSel),
      legend),
    h('form', { class: 'tql', onsubmit: (e) => { e.preventDefault(); runQuery(); } },
      tqlInput,
      h('button', { type: 'submit', id: 'run' }, 'Run'),
      h('button', { type: 'button', id: 'clear', onclick: () => { tqlInput.value = ''; st.result = null; tqlMsg.textContent = ''; refresh(); } }, 'Clear'),
      h('button', { type: 'button', id: 'save-view', onclick: () => saveView() }, 'Save as view'),
      tqlMsg),
    panes);

  let info = null;
  let gridsState = [];

  async function loadInfo() {
    info = await getJson(paths.dataset(name, st.ref));
    info.tensors = info.tensors.map(normalize);
    return info;
  }

  async function fillRefs() {
    const [log, branchList] = await Promise.all([getJson(paths.log(name, st.ref)), getJson(paths.branches(name))]);
    branches = Object.keys(branchList.branches || {});
    refSel.replaceChildren(
      h('optgroup', { label: 'branches' }, branches.map((b) => h('option', { value: b, selected: b === st.ref }, b))),
      h('optgroup', { label: 'commits' }, log.map((c) => h('option', { value: c.commit_id, selected: c.commit_id === st.ref },
        `${c.commit_id.slice(0, 8)} ${c.message || ''}`.trim()))));
    diffSel.replaceChildren(h('option', { value: '' }, 'none'),
      ...branches.filter((b) => b !== st.ref).map((b) => h('option', { value: b, selected: b === st.diff }, b)));
  }

  function fillTensorPickers() {
    const images = info.tensors.filter((t) => t.htype === 'image' && !t.is_sequence);
    if (!images.some((t) => t.name === st.primary)) st.primary = images.length ? images[0].name : '';
    primarySel.replaceChildren(...images.map((t) => h('option', { value: t.name, selected: t.name === st.primary }, t.name)));
    const overlays = info.tensors.filter((t) => OVERLAY_HTYPES.has(t.htype) && !t.is_sequence);
    if (!st.togglesSet) {
      for (const t of overlays) st.enabled.add(t.name);
      st.togglesSet = true;
    }
    toggles.replaceChildren(...overlays.map((t) => h('label', {},
      h('input', { type: 'checkbox', id: `toggle-${t.name}`, checked: st.enabled.has(t.name), onchange: (e) => {
        if (e.target.checked) st.enabled.add(t.name);
        else st.enabled.delete(t.name);
        for (const g of gridsState) {
          g.loader.enabled = new Set(st.enabled);
          g.grid.redraw();
        }
      } }), ` ${t.name}`)));
    compareSel.replaceChildren(h('option', { value: '' }, 'none'),
      ...images.filter((t) => t.name !== st.primary).map((t) => h('option', { value: `tensor:${t.name}`, selected: st.compare === `tensor:${t.name}` }, `tensor ${t.name}`)),
      ...branches.filter((b) => b !== st.ref).map((b) => h('option', { value: `ref:${b}`, selected: st.compare === `ref:${b}` }, `ref ${b}`)));
  }

  async function makePane(ref, primary, tensors, title, source) {
    const root = h('div', { class: 'grid-root' });
    const pane = h('section', { class: 'pane', 'aria-label': title }, h('h2', {}, title), root);
    root.style.flex = '1';
    panes.append(pane);
    const grid = new Grid(root, {
      onOpen: (i, row) => { if (row !== undefined) sample.open(row, tensors, st.enabled); },
    });
    const byName = (f) => tensors.filter(f);
    const loader = new RowLoader({
      dataset: name,
      ref,
      primary: tensors.find((t) => t.name === primary) || null,
      overlays: byName((t) => OVERLAY_HTYPES.has(t.htype) && !t.is_sequence),
      captions: byName((t) => CAPTION_HTYPES.has(t.htype) && !t.is_sequence).slice(0, 2),
    });
    loader.enabled = new Set(st.enabled);
    return { grid, loader, source, root };
  }

  async function refresh() {
    for (const g of gridsState) g.loader.dispose();
    panes.replaceChildren();
    legend.replaceChildren();
    const source = st.result ? resultSource(name, st.result) : fullSource(info.length);
    let decorate = () => {};
    if (st.diff) {
      const rowTensors = new Set(info.tensors.filter((t) => !t.is_sequence).map((t) => t.name));
      const sets = diffSets(await getJson(paths.diff(name, st.diff, st.ref)), rowTensors);
      decorate = (el, i, row) => {
        el.classList.toggle('added', sets.added.has(row));
        el.classList.toggle('updated', sets.updated.has(row));
        el.classList.toggle('deleted', sets.deleted.has(row));
      };
      legend.append(h('span', {}, `+${sets.added.size} added`), h('span', {}, `~${sets.updated.size} changed`),
        h('span', {}, `-${sets.deleted.size} deleted in ${st.diff}`));
    }
    const left = await makePane(st.ref, st.primary, info.tensors, `${st.ref} · ${st.primary}`, source);
    gridsState = [left];
    if (st.compare.startsWith('tensor:')) {
      const other = st.compare.slice(7);
      gridsState.push(await makePane(st.ref, other, info.tensors, `${st.ref} · ${other}`, source));
    } else if (st.compare.startsWith('ref:')) {
      const ref = st.compare.slice(4);
      const otherInfo = await getJson(paths.dataset(name, ref));
      const tensors = otherInfo.tensors.map(normalize);
      gridsState.push(await makePane(ref, st.primary, tensors, `${ref} · ${st.primary}`, st.result ? source : fullSource(otherInfo.length)));
    }
    // Synced scrolling: a pane follows the other's scroll position.
    let syncing = false;
    for (const g of gridsState) {
      g.root.addEventListener('scroll', () => {
        if (syncing) return;
        syncing = true;
        for (const o of gridsState) if (o !== g) o.root.scrollTop = g.root.scrollTop;
        requestAnimationFrame(() => { syncing = false; });
      }, { passive: true });
    }
    viz.grids = gridsState.map((g) => g.grid);
    viz.loaders = gridsState.map((g) => g.loader);
    for (const g of gridsState) {
      g.grid.addEventListener('firstscreen', () => {
        if (viz.firstScreenMs === null) viz.firstScreenMs = g.grid.firstScreen;
      }, { once: true });
      g.grid.addEventListener('settled', () => {
        viz.screens++;
        setStatus(`${source.count} rows`);
      }, { once: true });
      g.grid.setData(g.source, g.loader, decorate);
    }
    gridsState[0].root.focus({ preventScroll: true });
  }

  async function runQuery() {
    const text = tqlInput.value.trim();
    if (!text) return;
    tqlMsg.className = 'msg';
    tqlMsg.textContent = 'running…';
    try {
      const t0 = performance.now();
      st.result = await postJson(paths.query(name), { query: text, ref: st.ref, limit: RESULT_PAGE, rows_only: true });
      st.resultQuery = text;
      tqlMsg.textContent = `${st.result.total} rows (${Math.round(performance.now() - t0)} ms)`;
      tqlMsg.dataset.count = String(st.result.total);
      await refresh();
    } catch (e) {
      tqlMsg.className = 'msg error';
      tqlMsg.textContent = `${e.kind || 'error'}: ${e.message}`;
      tqlMsg.dataset.count = '';
    }
  }

  async function saveView() {
    if (!st.result) {
      tqlMsg.textContent = 'run a query first';
      return;
    }
    // The daemon saves views from the last commit of main, as 3.x does.
    if (st.ref !== 'main') {
      tqlMsg.className = 'msg error';
      tqlMsg.textContent = 'views are saved from main: switch the ref to main first';
      return;
    }
    const id = window.prompt('view id:');
    if (!id) return;
    try {
      await postJson(paths.views(name), { id, query: st.resultQuery });
      // A write drops the daemon's kept results: the query runs again for its pages.
      tqlInput.value = st.resultQuery;
      await runQuery();
      tqlMsg.className = 'msg';
      tqlMsg.textContent = `saved view ${id} (${st.result.total} rows)`;
    } catch (e) {
      tqlMsg.className = 'msg error';
      tqlMsg.textContent = `${e.kind || 'error'}: ${e.message}`;
    }
  }

  refSel.addEventListener('change', async () => {
    st.ref = refSel.value;
    st.result = null;
    // A ref is not diffed or compared with itself.
    if (st.diff === st.ref) st.diff = '';
    if (st.compare === `ref:${st.ref}`) st.compare = '';
    tqlMsg.textContent = '';
    await loadInfo();
    await fillRefs();
    fillTensorPickers();
    await refresh();
  });
  primarySel.addEventListener('change', () => { st.primary = primarySel.value; fillTensorPickers(); refresh(); });
  diffSel.addEventListener('change', () => { st.diff = diffSel.value; refresh(); });
  compareSel.addEventListener('change', () => { st.compare = compareSel.value; refresh(); });

  // The grid needs only the dataset's tensors; the ref pickers follow.
  await loadInfo();
  performance.mark('viz:info');
  fillTensorPickers();
  const refs = fillRefs().then(fillTensorPickers);
  await refresh();
  await refs;
}

async function route() {
  const main = document.getElementById('main');
  const m = /^#\/d\/([^/?]+)/.exec(location.hash);
  try {
    if (m) await datasetPage(main, decodeURIComponent(m[1]));
    else await listPage(main);
  } catch (e) {
    main.replaceChildren(h('p', { class: 'error', role: 'alert' }, `${e.kind || 'error'}: ${e.message}`));
  }
}

performance.mark('viz:start');
takeTokenFromHash();
window.addEventListener('hashchange', route);
route();
