// The single-sample view: every tensor of one row, laid out by htype. Images get the
// row's overlays; a `sequence[image]` gets a scrubber and a play button that fetch
// one frame per step (`?format=raw&frame=k`); video and audio play with the
// browser's controls, their `src` the raw sample URL itself so that the browser
// streams them (with a token, which a media element cannot send, the bytes are
// fetched first and played from a blob); text and JSON show as text; embeddings as a
// sparkline.

import { getJson, getRaw, hasToken, paths } from './api.js';
import { OVERLAY_HTYPES, drawSample, sampleText, sparkline } from './render.js';

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

const MEDIA = { video: 'video', audio: 'audio' };

export class SampleView {
  constructor(root, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.urls = [];
    this.onKey = (e) => {
      if (e.key === 'Escape') this.close();
      else if (e.key === 'ArrowRight' && e.altKey) this.step(1);
      else if (e.key === 'ArrowLeft' && e.altKey) this.step(-1);
    };
  }

  close() {
    this.stop();
    this.root.hidden = true;
    this.root.replaceChildren();
    for (const u of this.urls) URL.revokeObjectURL(u);
    this.urls = [];
    document.removeEventListener('keydown', this.onKey);
    if (this.ctx.onClose) this.ctx.onClose();
  }

  /** Opens the row `d` rows away, if the dataset has it. */
  step(d) {
    const row = this.row + d;
    const length = Math.max(0, ...this.tensors.map((t) => t.length));
    if (row >= 0 && row < length) this.open(row, this.tensors, this.enabled);
  }

  stop() {
    if (this.timer) clearInterval(this.timer);
    this.timer = 0;
  }

  /** Opens row `row` of the dataset at `ref`; `tensors` are the dataset route's infos. */
  async open(row, tensors, enabled) {
    this.close();
    Object.assign(this, { row, tensors, enabled });
    const { dataset, ref } = this.ctx;
    this.root.hidden = false;
    const body = el('div', { class: 'sample-body' });
    const closeBtn = el('button', { class: 'close', 'aria-label': 'close', onclick: () => this.close() }, '×');
    this.root.append(el('div', { class: 'sample', role: 'dialog', 'aria-label': `row ${row}` },
      el('h2', {}, `row ${row}`), closeBtn, body));
    document.addEventListener('keydown', this.onKey);
    closeBtn.focus();
    const visible = tensors.filter((t) => row < t.length);
    const samples = new Map();
    await Promise.all(visible
      .filter((t) => !(t.htype === 'image' && !t.is_sequence) && !t.is_sequence && !MEDIA[t.htype])
      .map(async (t) => samples.set(t.name, await getJson(paths.sample(dataset, t.name, row, ref)))));
    const overlays = visible
      .filter((t) => OVERLAY_HTYPES.has(t.htype) && !t.is_sequence && enabled.has(t.name))
      .map((t) => ({ tensor: t, sample: samples.get(t.name) }));
    const alt = overlays.map((o) => sampleText(o.sample, o.tensor)).filter(Boolean).join('; ');
    for (const t of visible) {
      const box = el('section', { class: 'tensor', 'data-tensor': t.name }, el('h3', {}, `${t.name} `, el('small', {}, t.htype_full || t.htype)));
      body.append(box);
      if (t.is_sequence && t.htype === 'image') {
        await this.sequence(box, t, row);
      } else if (t.htype === 'image') {
        // Stored images and link[image] alike: raw answers the bytes (links through
        // the daemon's linker).
        const res = await getRaw(paths.sample(dataset, t.name, row, ref, 'raw'));
        const blob = await res.blob();
        const bitmap = await createImageBitmap(blob);
        const canvas = el('canvas', { role: 'img', 'aria-label': `row ${row} ${t.name}${alt ? `: ${alt}` : ''}` });
        canvas.width = Math.min(512, bitmap.width * 4);
        canvas.height = Math.round((canvas.width * bitmap.height) / bitmap.width);
        drawSample(canvas, bitmap, overlays);
        bitmap.close();
        box.append(canvas);
      } else if (MEDIA[t.htype]) {
        let src = paths.sample(dataset, t.name, row, ref, 'raw');
        if (hasToken()) {
          src = URL.createObjectURL(await (await getRaw(src)).blob());
          this.urls.push(src);
        }
        box.append(el(MEDIA[t.htype], { controls: '', preload: 'metadata', src, 'aria-label': `row ${row} ${t.name}` }));
      } else if (t.htype === 'embedding') {
        const c = el('canvas', { class: 'spark', role: 'img', 'aria-label': `${t.name} sparkline` });
        c.width = 240;
        c.height = 40;
        sparkline(c, samples.get(t.name));
        box.append(c);
      } else {
        const v = samples.get(t.name);
        const text = t.htype === 'class_label' ? sampleText(v, t)
          : typeof v === 'string' ? v
            : v && typeof v === 'object' && 'data' in v ? `${v.dtype} ${JSON.stringify(v.shape)}\n${JSON.stringify(v.data)}`
              : JSON.stringify(v, null, 1);
        box.append(el('pre', {}, text.length > 4000 ? `${text.slice(0, 4000)}…` : text));
      }
    }
  }

  /** A sequence of images: one frame on a canvas, a scrubber and play/pause. */
  async sequence(box, t, row) {
    const { dataset, ref } = this.ctx;
    const canvas = el('canvas', { role: 'img', class: 'frame', 'aria-label': `row ${row} ${t.name} frame 0` });
    const scrub = el('input', { type: 'range', min: '0', value: '0', step: '1', class: 'scrubber', 'aria-label': `${t.name} frame` });
    const play = el('button', { class: 'play' }, 'play');
    const label = el('span', { class: 'frame-no' }, '');
    box.append(canvas, el('div', { class: 'seq-controls' }, play, scrub, label));
    let frames = 1;
    let seq = 0;
    const show = async (k) => {
      const mine = ++seq;
      box.dataset.steps = String(mine);
      const res = await getRaw(paths.sample(dataset, t.name, row, ref, 'raw', k));
      frames = Number(res.headers.get('x-deeplake-frames')) || frames;
      scrub.max = String(frames - 1);
      const bitmap = await createImageBitmap(await res.blob());
      if (mine !== seq) return bitmap.close();
      if (!canvas.dataset.sized) {
        canvas.dataset.sized = '1';
        canvas.width = Math.min(384, bitmap.width * 3);
        canvas.height = Math.round((canvas.width * bitmap.height) / bitmap.width);
      }
      drawSample(canvas, bitmap, []);
      bitmap.close();
      label.textContent = `frame ${k + 1} / ${frames}`;
      canvas.setAttribute('aria-label', `row ${row} ${t.name} frame ${k}`);
      box.dataset.frame = String(k);
    };
    scrub.addEventListener('input', () => show(Number(scrub.value)));
    play.addEventListener('click', () => {
      if (this.timer) {
        this.stop();
        play.textContent = 'play';
        return;
      }
      play.textContent = 'pause';
      this.timer = setInterval(() => {
        const next = (Number(scrub.value) + 1) % frames;
        scrub.value = String(next);
        show(next);
      }, 400);
    });
    await show(0);
  }
}
