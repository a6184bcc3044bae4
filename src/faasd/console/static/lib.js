// Small helpers shared by the views: DOM building (never innerHTML with data), the JSON API client
// (session cookie + CSRF header), SSE streams, a live-state bus and formatting.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

const SVG = "http://www.w3.org/2000/svg";
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// -- session ---------------------------------------------------------------------------------------
export const session = { signedIn: false, scopes: [], csrf: "", name: "", auth: true };
export const can = (scope) => session.scopes.includes(scope);

export class ApiError extends Error {
  constructor(status, data) {
    const msg = data && typeof data === "object" && data.message ? data.message
      : typeof data === "string" && data ? data : `HTTP ${status}`;
    super(msg);
    this.status = status;
    this.data = data;
  }
}

let unauthorized = () => {};
export function onUnauthorized(fn) { unauthorized = fn; }

export async function api(method, path, body, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (!["GET", "HEAD"].includes(method)) headers["X-CSRF-Token"] = session.csrf;
  let payload = body;
  const plain = body !== undefined && body !== null && !(body instanceof Blob) && !(body instanceof ArrayBuffer)
    && !(body instanceof FormData) && !(body instanceof Uint8Array) && typeof body !== "string";
  if (plain) { payload = JSON.stringify(body); headers["Content-Type"] = "application/json"; }
  const r = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  if (opts.raw && r.ok) return r;
  if (r.status === 204) return null;
  const text = await r.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!r.ok) {
    if (r.status === 401 && !opts.noRedirect) unauthorized();
    throw new ApiError(r.status, data);
  }
  return data;
}

export function sse(path, handlers, onError) {
  const es = new EventSource(path, { withCredentials: true });
  for (const [event, fn] of Object.entries(handlers)) {
    es.addEventListener(event, (e) => { let d = e.data; try { d = JSON.parse(e.data); } catch { /* text */ } fn(d); });
  }
  if (onError) es.onerror = onError;
  return es;
}

// -- live platform state (one SSE stream for the whole console) -------------------------------------
const listeners = {};
export const live = {};
let liveStream = null;
export function startLive() {
  if (liveStream) return;
  const kinds = ["pools", "executions", "instances", "queue"];
  liveStream = sse("/ui/api/events", Object.fromEntries(kinds.map((k) => [k, (d) => {
    live[k] = d;
    for (const fn of listeners[k] || []) fn(d);
  }])));
}
export function stopLive() { if (liveStream) liveStream.close(); liveStream = null; }
export function onLive(kind, fn) {
  (listeners[kind] ||= new Set()).add(fn);
  if (live[kind] !== undefined) fn(live[kind]);
  return () => listeners[kind].delete(fn);
}

// -- operations with progress (image import, branch of N) -------------------------------------------
export function follow(op, bar) {
  return new Promise((resolve, reject) => {
    const es = sse(`/ui/api/operations/${op.id}/events`, {
      progress: (o) => {
        bar.update(o);
        if (o.status === "done") { es.close(); resolve(o.result); }
        if (o.status === "failed") { es.close(); reject(new ApiError(500, o.error)); }
      },
    });
  });
}

export function progressBar(label) {
  const fill = h("div", { class: "fill" });
  const text = h("span", { class: "ptext" }, label);
  const el = h("div", { class: "progress", "data-test": "progress" }, h("div", { class: "bar" }, fill), text);
  return {
    el,
    update(o) {
      fill.style.width = `${Math.round((o.fraction ?? 0) * 100)}%`;
      text.textContent = `${o.title || label}: ${o.message || o.status} (${Math.round((o.fraction ?? 0) * 100)}%)`;
      el.dataset.status = o.status;
    },
  };
}

// -- formatting ------------------------------------------------------------------------------------
export function toast(msg, kind = "info") {
  const t = h("div", { class: `toast ${kind}` }, msg);
  document.getElementById("toasts").append(t);
  setTimeout(() => t.remove(), kind === "error" ? 9000 : 4000);
}
export function fail(err) { toast(err.message || String(err), "error"); }

export function ago(iso) {
  if (!iso) return "–";
  const t = typeof iso === "number" ? iso * 1000 : Date.parse(iso);
  const d = (Date.now() - t) / 1000;
  if (d < 60) return `${Math.max(0, Math.round(d))}s ago`;
  if (d < 3600) return `${Math.round(d / 60)}m ago`;
  if (d < 86400) return `${Math.round(d / 3600)}h ago`;
  return new Date(t).toISOString().slice(0, 16).replace("T", " ");
}
export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}
export const ms = (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(1)} ms`);
export const short = (id, n = 12) => (id && id.length > n ? id.slice(0, n) + "…" : id || "–");

export function badge(status) { return h("span", { class: `badge st-${status}` }, status); }

export function table(columns, rows, opts = {}) {
  return h("table", { class: "grid", "data-test": opts.test },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, opts.empty || "Nothing yet."))));
}

export function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", {}, label), input, hint ? h("small", { class: "muted" }, hint) : null);
}

export function parseKV(text) {
  const out = {};
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (!t || t.startsWith("#")) continue;
    const i = t.indexOf("=");
    if (i < 1) throw new Error(`"${t}" is not KEY=VALUE`);
    out[t.slice(0, i).trim()] = t.slice(i + 1);
  }
  return out;
}
export const kvText = (obj) => Object.entries(obj || {}).map(([k, v]) => `${k}=${v}`).join("\n");

export function b64(buf) {
  const bytesArr = new Uint8Array(buf);
  let bin = "";
  for (let i = 0; i < bytesArr.length; i += 0x8000) bin += String.fromCharCode(...bytesArr.subarray(i, i + 0x8000));
  return btoa(bin);
}

export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
