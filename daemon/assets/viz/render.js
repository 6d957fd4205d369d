// Drawing samples on a canvas by htype: the image first (the browser decoded the
// stored bytes), then each enabled overlay in the image's pixel space. Samples come
// as the API's JSON: arrays are {shape, dtype, data} with nested `data`.

export const OVERLAY_HTYPES = new Set([
  'bbox', 'class_label', 'binary_mask', 'segment_mask', 'keypoints_coco', 'polygon', 'point',
]);

const PALETTE = [
  [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
  [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
];

export function color(i, alpha = 1) {
  const [r, g, b] = PALETTE[((i % PALETTE.length) + PALETTE.length) % PALETTE.length];
  return `rgba(${r},${g},${b},${alpha})`;
}

/** A tensor's sample as a flat list of numbers and its shape. */
export function flat(sample) {
  if (!sample || typeof sample !== 'object' || !('data' in sample)) return null;
  return { shape: sample.shape, values: [sample.data].flat(Infinity) };
}

/** A class_label sample's names (or indices when the tensor has no names). */
export function labelNames(sample, tensor) {
  const f = flat(sample);
  if (!f) return [];
  const names = (tensor.info && tensor.info.class_names) || [];
  return f.values.map((v) => (names[v] !== undefined ? names[v] : String(v)));
}

/** The text of a non-image sample for captions and alt text. */
export function sampleText(sample, tensor) {
  if (sample === null || sample === undefined) return '';
  if (tensor.htype === 'class_label') return labelNames(sample, tensor).join(', ');
  if (typeof sample === 'string') return sample;
  if (typeof sample === 'number' || typeof sample === 'boolean') return String(sample);
  const f = flat(sample);
  if (f && f.values.length <= 8) return f.values.map((v) => (Number.isInteger(v) ? v : v.toFixed(3))).join(', ');
  return JSON.stringify(sample).slice(0, 200);
}

/** Where an image of `iw` x `ih` lands in a `w` x `h` box (contained, centred). */
export function fit(iw, ih, w, h) {
  const s = Math.min(w / iw, h / ih);
  return { s, x: (w - iw * s) / 2, y: (h - ih * s) / 2, iw, ih };
}

function boxes(ctx, sample, tensor, at, labels) {
  const f = flat(sample);
  if (!f || f.values.length < 4) return;
  const coords = (tensor.info && tensor.info.coords) || {};
  const mode = (coords.mode || 'LTWH').toUpperCase();
  const frac = coords.type === 'fractional';
  ctx.lineWidth = Math.max(1.5, 2 * Math.min(1, at.s));
  for (let i = 0; i + 3 < f.values.length; i += 4) {
    let [a, b, c, d] = f.values.slice(i, i + 4);
    if (frac) {
      a *= at.iw; c *= at.iw; b *= at.ih; d *= at.ih;
    }
    let l = a, t = b, w = c, h = d;
    if (mode === 'LTRB') { w = c - a; h = d - b; }
    if (mode === 'CCWH') { l = a - c / 2; t = b - d / 2; }
    const k = i / 4;
    ctx.strokeStyle = color(k);
    ctx.strokeRect(at.x + l * at.s, at.y + t * at.s, w * at.s, h * at.s);
    const name = labels && labels[k];
    if (name) {
      ctx.font = '11px system-ui, sans-serif';
      const tw = ctx.measureText(name).width + 6;
      ctx.fillStyle = color(k, 0.85);
      ctx.fillRect(at.x + l * at.s, at.y + t * at.s - 14, tw, 14);
      ctx.fillStyle = '#000';
      ctx.fillText(name, at.x + l * at.s + 3, at.y + t * at.s - 3);
    }
  }
}

function mask(ctx, sample, tensor, at, segment) {
  const f = flat(sample);
  if (!f || f.shape.length < 2) return;
  const [h, w] = f.shape;
  const layers = segment ? 1 : (f.shape[2] || 1);
  const img = new ImageData(w, h);
  for (let p = 0; p < w * h; p++) {
    for (let k = 0; k < layers; k++) {
      const v = f.values[p * layers + k];
      if (!v) continue;
      const [r, g, b] = PALETTE[(segment ? v : k) % PALETTE.length];
      img.data.set([r, g, b, 110], p * 4);
    }
  }
  const off = new OffscreenCanvas(w, h);
  off.getContext('2d').putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(off, at.x, at.y, at.iw * at.s, at.ih * at.s);
  ctx.imageSmoothingEnabled = true;
}

function keypoints(ctx, sample, tensor, at) {
  const f = flat(sample);
  if (!f || f.shape.length < 1) return;
  const n = f.shape[1] || 1;
  const k = Math.floor(f.shape[0] / 3);
  const conns = (tensor.info && tensor.info.connections) || [];
  for (let inst = 0; inst < n; inst++) {
    const pt = (j) => {
      const base = (3 * j) * n + inst;
      return [f.values[base], f.values[base + n], f.values[base + 2 * n]];
    };
    ctx.strokeStyle = color(inst + 3);
    ctx.lineWidth = 2;
    for (const [a, b] of conns) {
      const p = pt(a - 1), q = pt(b - 1);
      if (!p[2] || !q[2]) continue;
      ctx.beginPath();
      ctx.moveTo(at.x + p[0] * at.s, at.y + p[1] * at.s);
      ctx.lineTo(at.x + q[0] * at.s, at.y + q[1] * at.s);
      ctx.stroke();
    }
    ctx.fillStyle = color(inst + 3);
    for (let j = 0; j < k; j++) {
      const [x, y, v] = pt(j);
      if (!v) continue;
      ctx.beginPath();
      ctx.arc(at.x + x * at.s, at.y + y * at.s, 3, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
}

function polygons(ctx, sample, at) {
  if (!Array.isArray(sample)) return;
  sample.forEach((poly, i) => {
    // A polygon is a list of [x, y] (or an array sample of shape (n, 2)).
    const f = flat(poly);
    const list = f ? Array.from({ length: f.values.length / 2 }, (_, j) => [f.values[2 * j], f.values[2 * j + 1]]) : poly;
    if (!list.length) return;
    ctx.beginPath();
    list.forEach(([x, y], j) => (j ? ctx.lineTo : ctx.moveTo).call(ctx, at.x + x * at.s, at.y + y * at.s));
    ctx.closePath();
    ctx.fillStyle = color(i + 5, 0.25);
    ctx.strokeStyle = color(i + 5);
    ctx.lineWidth = 2;
    ctx.fill();
    ctx.stroke();
  });
}

function points(ctx, sample, at) {
  const f = flat(sample);
  if (!f) return;
  ctx.fillStyle = color(7);
  for (let i = 0; i + 1 < f.values.length; i += 2) {
    ctx.beginPath();
    ctx.arc(at.x + f.values[i] * at.s, at.y + f.values[i + 1] * at.s, 3.5, 0, 2 * Math.PI);
    ctx.fill();
  }
}

/**
 * Draws `bitmap` contained in the canvas, then each overlay `{tensor, sample}` of
 * `overlays` (already filtered by the toggles). Class labels name the boxes.
 */
export function drawSample(canvas, bitmap, overlays) {
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!bitmap) return;
  const at = fit(bitmap.width, bitmap.height, canvas.width, canvas.height);
  ctx.drawImage(bitmap, at.x, at.y, bitmap.width * at.s, bitmap.height * at.s);
  const labelOverlay = overlays.find((o) => o.tensor.htype === 'class_label');
  const labels = labelOverlay ? labelNames(labelOverlay.sample, labelOverlay.tensor) : null;
  for (const { tensor, sample } of overlays) {
    if (sample === null || sample === undefined) continue;
    switch (tensor.htype) {
      case 'binary_mask': mask(ctx, sample, tensor, at, false); break;
      case 'segment_mask': mask(ctx, sample, tensor, at, true); break;
      default: break;
    }
  }
  for (const { tensor, sample } of overlays) {
    if (sample === null || sample === undefined) continue;
    switch (tensor.htype) {
      case 'bbox': boxes(ctx, sample, tensor, at, labels); break;
      case 'keypoints_coco': keypoints(ctx, sample, tensor, at); break;
      case 'polygon': polygons(ctx, sample, at); break;
      case 'point': points(ctx, sample, at); break;
      default: break;
    }
  }
}

/** A small line chart of an embedding's values. */
export function sparkline(canvas, sample) {
  const f = flat(sample);
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!f || !f.values.length) return;
  const lo = Math.min(...f.values), hi = Math.max(...f.values);
  const span = hi - lo || 1;
  ctx.strokeStyle = '#4aa3ff';
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  f.values.forEach((v, i) => {
    const x = (i / Math.max(1, f.values.length - 1)) * (canvas.width - 2) + 1;
    const y = canvas.height - 1 - ((v - lo) / span) * (canvas.height - 2);
    (i ? ctx.lineTo : ctx.moveTo).call(ctx, x, y);
  });
  ctx.stroke();
}
