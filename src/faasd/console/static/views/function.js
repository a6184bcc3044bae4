// One function: spec, invoke form, live logs, recent executions, metrics charts, update/scale/delete.
import { ago, api, badge, can, clear, fail, field, h, kvText, ms, onLive, parseKV, sse, table, toast } from "../lib.js";
import { metricsCharts } from "./chart.js";
import { deleteFunction, scaleForm } from "./functions.js";

export function invokeForm(url, { onDone } = {}) {
  const method = h("select", { "data-test": "invoke-method" }, ["POST", "GET", "PUT", "PATCH", "DELETE"].map((m) => h("option", {}, m)));
  const path = h("input", { value: "/", "data-test": "invoke-path" });
  const headers = h("textarea", { rows: 2, placeholder: "Header-Name=value per line", "data-test": "invoke-headers" });
  const body = h("textarea", { rows: 4, placeholder: "request body", id: "invoke-body", "data-test": "invoke-body" });
  const out = h("div", { class: "invoke-result", id: "invoke-result" });
  const form = h("form", { class: "card", id: "invoke-form", onsubmit: async (e) => {
    e.preventDefault();
    let hdrs;
    try { hdrs = parseKV(headers.value); } catch (ex) { return fail(ex); }
    clear(out, h("p", { class: "muted" }, "Invoking…"));
    const started = performance.now();
    try {
      const r = await api("POST", url, { method: method.value, path: path.value, headers: hdrs, body: body.value });
      const rtt = performance.now() - started;
      const t = r.timings || {};
      clear(out,
        h("div", { class: "kv" },
          h("span", {}, "status"), h("strong", { "data-test": "invoke-status", class: r.status < 400 ? "ok" : "warn" }, r.status),
          r.execution_id ? [h("span", {}, "execution"), h("a", { href: `#/executions/${r.execution_id}`, class: "mono" }, r.execution_id)] : null,
          r.cold_start !== undefined ? [h("span", {}, "start"), h("span", {}, r.cold_start ? "cold" : "warm")] : null,
          t.total_ms !== undefined ? [h("span", {}, "timings"),
            h("span", {}, `init ${ms(t.init_ms)} · wait ${ms(t.wait_ms)} · run ${ms(t.run_ms)} · total ${ms(t.total_ms)} · round trip ${ms(rtt)}`)]
            : [h("span", {}, "round trip"), h("span", {}, ms(rtt))]),
        h("details", {}, h("summary", {}, "Response headers"),
          h("pre", { class: "small" }, Object.entries(r.headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n"))),
        h("pre", { class: "body", "data-test": "invoke-response" }, r.body_encoding === "base64" ? `(base64) ${r.body}` : r.body || "(empty body)"));
      onDone && onDone(r);
    } catch (ex) { clear(out, h("p", { class: "error" }, ex.message)); }
  } },
  h("h2", {}, "Invoke"),
  h("div", { class: "row" }, field("Method", method), field("Path", path)),
  field("Headers", headers), field("Body", body),
  h("button", { type: "submit", id: "invoke-submit" }, "Invoke"), out);
  return form;
}

function logsPanel(name) {
  const pre = h("pre", { class: "logs", id: "logs", "data-test": "logs" });
  const followBox = h("input", { type: "checkbox", checked: true, id: "logs-follow" });
  const state = h("span", { class: "muted", id: "logs-state" }, "connecting…");
  let es = null;
  function line(e) {
    const l = h("div", { class: `log ${e.stream}` }, h("span", { class: "muted" }, e.timestamp.slice(11, 23) + " "),
      e.execution_id ? h("span", { class: "muted" }, e.execution_id.slice(0, 10) + " ") : null, e.text);
    pre.append(l);
    while (pre.childElementCount > 2000) pre.firstElementChild.remove();
    pre.scrollTop = pre.scrollHeight;
  }
  function open() {
    pre.replaceChildren();
    es = sse(`/ui/api/functions/${encodeURIComponent(name)}/logs/stream?tail=200`, {
      log: line, live: () => { state.textContent = "live"; state.className = "ok"; },
    }, () => { state.textContent = "reconnecting…"; state.className = "muted"; });
  }
  function close() { if (es) es.close(); es = null; state.textContent = "paused"; state.className = "muted"; }
  followBox.addEventListener("change", () => (followBox.checked ? open() : close()));
  if (can("deploy")) open(); else state.textContent = "logs need the deploy scope";
  const el = h("div", { class: "card" }, h("h2", {}, "Logs ", state),
    h("label", { class: "check" }, followBox, " follow (stream new lines)"), pre);
  return { el, dispose: close };
}

function executionsPanel(name) {
  const box = h("div", {});
  async function load() {
    try {
      const d = await api("GET", `/api/v1/executions?function=${encodeURIComponent(name)}&limit=15`);
      clear(box, table(["Execution", "Status", "HTTP", "Start", "Run", "When"], d.executions.map((x) => h("tr", {},
        h("td", {}, h("a", { href: `#/executions/${x.id}`, class: "mono" }, x.id)), h("td", {}, badge(x.status)),
        h("td", {}, x.http_status ?? "–"), h("td", {}, x.cold_start === null ? "–" : x.cold_start ? "cold" : "warm"),
        h("td", {}, ms(x.run_ms)), h("td", {}, ago(x.created_at)))), { test: "fn-executions", empty: "No executions yet." }));
    } catch (ex) { fail(ex); }
  }
  load();
  const off = onLive("executions", load);
  return { el: h("div", { class: "card" }, h("h2", {}, "Recent executions"), box), dispose: off };
}

function updateForm(fn, reload) {
  const memory = h("input", { type: "number", value: fn.limits.memory_mb, class: "num" });
  const cpu = h("input", { type: "number", step: "0.05", value: fn.limits.cpu_cores, class: "num" });
  const timeout = h("input", { type: "number", step: "0.5", value: fn.limits.timeout_s, class: "num" });
  const env = h("textarea", { rows: 3 }, kvText(fn.env));
  return h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const spec = { ...fn };
      for (const k of ["created_at", "updated_at", "invocation_count", "status"]) delete spec[k];
      spec.limits = { ...fn.limits, memory_mb: +memory.value, cpu_cores: +cpu.value, timeout_s: +timeout.value };
      spec.env = parseKV(env.value);
      await api("PUT", `/api/v1/functions/${encodeURIComponent(fn.name)}`, spec);
      toast(`Updated ${fn.name}`);
      reload();
    } catch (ex) { fail(ex); }
  } }, h("h2", {}, "Update limits and environment"),
  h("div", { class: "row" }, field("Memory (MiB)", memory), field("CPU cores", cpu), field("Timeout (s)", timeout)),
  field("Environment", env), h("button", { type: "submit" }, "Update"));
}

export function functionView(name) {
  const head = h("div", {});
  const charts = h("div", { class: "card" }, h("h2", {}, "Metrics"), h("p", { class: "muted" }, "sampling…"));
  const manage = h("div", {});
  const logs = logsPanel(name);
  const execs = executionsPanel(name);
  const el = h("section", {}, head,
    h("div", { class: "cols" }, h("div", {}, invokeForm(`/ui/api/functions/${encodeURIComponent(name)}/invoke`), execs.el),
      h("div", {}, logs.el, manage)), charts);
  async function load() {
    try {
      const fn = await api("GET", `/api/v1/functions/${encodeURIComponent(name)}`);
      const st = fn.status;
      clear(head, h("h1", {}, h("a", { href: "#/functions", class: "muted" }, "Functions / "), fn.name),
        h("div", { class: "kv wide card" },
          h("span", {}, "image"), h("span", { class: "mono" }, fn.image), h("span", {}, "runtime / mode"), h("span", {}, `${fn.runtime} / ${fn.mode}`),
          h("span", {}, "replicas"), h("span", { "data-test": "fn-replicas" }, `${st.replicas} (${st.busy} busy, ${st.queued} queued, min ${st.min}, max ${st.max})`),
          h("span", {}, "invocations"), h("span", { "data-test": "fn-invocations" }, fn.invocation_count),
          h("span", {}, "limits"), h("span", {}, `${fn.limits.memory_mb} MiB · ${fn.limits.cpu_cores} CPU · ${fn.limits.timeout_s} s`)));
      if (can("deploy") && !manage.childElementCount) {
        clear(manage, h("div", { class: "card" }, h("h2", {}, "Scale"), scaleForm(fn, load),
          h("button", { class: "danger", onclick: () => deleteFunction(fn.name, () => { location.hash = "#/functions"; }) }, "Delete function")),
        updateForm(fn, load));
      }
    } catch (ex) { fail(ex); }
  }
  async function loadCharts() {
    try {
      const hist = await api("GET", `/ui/api/metrics/history?function=${encodeURIComponent(name)}`);
      clear(charts, h("h2", {}, "Metrics ", h("small", { class: "muted" }, `(from the daemon's counters, every ${hist.interval_s} s)`)), metricsCharts(hist));
    } catch (ex) { /* shown by the next try */ }
  }
  load();
  loadCharts();
  const timer = setInterval(loadCharts, 4000);
  const off = onLive("pools", (p) => { if (p[name]) load(); });
  return { el, dispose: () => { clearInterval(timer); off(); logs.dispose(); execs.dispose(); } };
}
