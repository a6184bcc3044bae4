// Executions: filter by function and status, open one (result, stdout/stderr, timings, attempts).
import { ago, api, badge, clear, fail, field, h, ms, onLive, table } from "../lib.js";

const STATUSES = ["", "queued", "running", "succeeded", "failed", "timeout", "cancelled"];

async function detail(id, box) {
  try {
    const [x, logs] = await Promise.all([api("GET", `/api/v1/executions/${id}`), api("GET", `/api/v1/executions/${id}/logs`)]);
    clear(box, h("div", { class: "card", id: "execution-detail" },
      h("h2", {}, "Execution ", h("span", { class: "mono" }, x.id), " ", badge(x.status)),
      h("div", { class: "kv" },
        h("span", {}, "function"), h("a", { href: `#/functions/${encodeURIComponent(x.function)}` }, x.function),
        h("span", {}, "kind"), h("span", {}, x.kind),
        h("span", {}, "HTTP status"), h("span", {}, x.http_status ?? "–"),
        h("span", {}, "start"), h("span", {}, x.cold_start === null ? "–" : x.cold_start ? "cold" : "warm"),
        h("span", {}, "timings"), h("span", {}, `init ${ms(x.init_ms)} · wait ${ms(x.wait_ms)} · run ${ms(x.run_ms)}`),
        h("span", {}, "attempts"), h("span", {}, x.attempts),
        h("span", {}, "created / finished"), h("span", {}, `${x.created_at || "–"} / ${x.finished_at || "–"}`),
        x.exit_code !== null ? [h("span", {}, "exit code"), h("span", {}, x.exit_code)] : null,
        x.error ? [h("span", {}, "error"), h("span", { class: "error" }, x.error)] : null),
      h("h3", {}, "Result", x.result_truncated ? " (truncated)" : ""),
      h("pre", { class: "body", "data-test": "execution-result" }, x.result ?? "(none)"),
      h("h3", {}, "stdout"), h("pre", { class: "logs" }, logs.stdout || ""),
      h("h3", {}, "stderr"), h("pre", { class: "logs" }, logs.stderr || "")));
  } catch (ex) { fail(ex); }
}

export function executionsView(openId) {
  const fnSel = h("select", { id: "exec-function" }, h("option", { value: "" }, "all functions"));
  const stSel = h("select", { id: "exec-status" }, STATUSES.map((s) => h("option", { value: s }, s || "any status")));
  const list = h("div", {});
  const detailBox = h("div", {});
  const el = h("section", {}, h("h1", {}, "Executions"),
    h("div", { class: "row card" }, field("Function", fnSel), field("Status", stSel)),
    h("div", { class: "cols" }, list, detailBox));
  api("GET", "/api/v1/functions").then((d) => {
    for (const fn of d.functions) fnSel.append(h("option", { value: fn.name }, fn.name));
  }).catch(fail);
  async function load() {
    const q = new URLSearchParams({ limit: "100" });
    if (fnSel.value) q.set("function", fnSel.value);
    if (stSel.value) q.set("status", stSel.value);
    try {
      const d = await api("GET", `/api/v1/executions?${q}`);
      clear(list, table(["Execution", "Function", "Kind", "Status", "Run", "When"], d.executions.map((x) => h("tr", {
        class: "clickable", onclick: () => { history.replaceState(null, "", `#/executions/${x.id}`); detail(x.id, detailBox); } },
      h("td", { class: "mono" }, x.id), h("td", {}, x.function), h("td", {}, x.kind), h("td", {}, badge(x.status)),
      h("td", {}, ms(x.run_ms)), h("td", {}, ago(x.created_at)))), { test: "executions", empty: "No executions match." }));
    } catch (ex) { fail(ex); }
  }
  fnSel.addEventListener("change", load);
  stSel.addEventListener("change", load);
  load();
  if (openId) detail(openId, detailBox);
  const off = onLive("executions", load);
  return { el, dispose: off };
}
