// The daemon's HTTP API as the page uses it. Every call carries the bearer token, if
// one was given (`#token=...` in the address, kept for the tab's session, or typed at
// the prompt after a 401). Paths are relative, so the page works under any prefix.

const TOKEN_KEY = 'deeplake-viz-token';

export class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

export function takeTokenFromHash() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!m) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
  const rest = location.hash.replace(/(^#|&)token=[^&]*/, '$1').replace(/^#&/, '#');
  history.replaceState(null, '', location.pathname + location.search + (rest === '#' ? '' : rest));
}

/** Whether requests carry a token (a media element's own fetches could not). */
export function hasToken() {
  return Boolean(sessionStorage.getItem(TOKEN_KEY));
}

function headers(extra) {
  const h = Object.assign({}, extra);
  const t = sessionStorage.getItem(TOKEN_KEY);
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

let prompted = false;

async function send(path, init = {}) {
  const res = await fetch(path, Object.assign({}, init, { headers: headers(init.headers) }));
  if (res.status === 401 && !prompted) {
    prompted = true;
    const t = window.prompt('This server needs a token:');
    if (t) {
      sessionStorage.setItem(TOKEN_KEY, t);
      return send(path, init);
    }
  }
  if (!res.ok) {
    let kind = 'http', message = `${res.status} ${res.statusText}`;
    try {
      const body = await res.json();
      kind = body.error.kind;
      message = body.error.message;
    } catch {
      // Not the API's error shape: keep the status line.
    }
    throw new ApiError(res.status, kind, message);
  }
  return res;
}

export async function getJson(path, signal) {
  return (await send(path, { signal })).json();
}

export async function postJson(path, body, signal) {
  const res = await send(path, {
    method: 'POST',
    signal,
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  return res.json();
}

/** The response itself (raw sample bytes: the caller reads blob and headers). */
export function getRaw(path, signal) {
  return send(path, { signal });
}

function q(params) {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') s.set(k, v);
  const text = s.toString();
  return text ? `?${text}` : '';
}

const enc = encodeURIComponent;

export const paths = {
  datasets: () => 'datasets',
  dataset: (ds, ref) => `datasets/${enc(ds)}${q({ ref })}`,
  branches: (ds) => `datasets/${enc(ds)}/branches`,
  log: (ds, ref) => `datasets/${enc(ds)}/log${q({ ref })}`,
  diff: (ds, from, to) => `datasets/${enc(ds)}/diff${q({ from, to })}`,
  slice: (ds, t, start, end, ref) => `datasets/${enc(ds)}/tensors/${enc(t)}/samples${q({ start, end, ref })}`,
  sample: (ds, t, row, ref, format, frame) =>
    `datasets/${enc(ds)}/tensors/${enc(t)}/samples/${row}${q({ ref, format, frame })}`,
  query: (ds) => `datasets/${enc(ds)}/query`,
  results: (ds, id, offset, limit) => `datasets/${enc(ds)}/results/${enc(id)}${q({ offset, limit, rows_only: true })}`,
  views: (ds) => `datasets/${enc(ds)}/views`,
};
