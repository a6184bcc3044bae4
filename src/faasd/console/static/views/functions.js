// Functions: the list (live replicas/busy/idle and invocations), deploy, scale, delete.
import { api, badge, can, clear, fail, field, h, kvText, onLive, parseKV, table, toast } from "../lib.js";

export function scaleForm(fn, done) {
  const min = h("input", { type: "number", min: 0, max: 100, value: fn.scale.min, class: "num", "data-test": "scale-min" });
  const max = h("input", { type: "number", min: 1, max: 100, value: fn.scale.max, class: "num", "data-test": "scale-max" });
  return h("form", { class: "inline", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api("POST", `/api/v1/functions/${encodeURIComponent(fn.name)}/scale`, { min: +min.value, max: +max.value });
      toast(`Scaled ${fn.name} to ${min.value}..${max.value}`);
      done && done();
    } catch (ex) { fail(ex); }
  } }, "min ", min, " max ", max, h("button", { type: "submit", class: "small" }, "Scale"));
}

export async function deleteFunction(name, done) {
  if (!confirm(`Delete function ${name}? Its warm workers stop and its logs are removed.`)) return;
  try { await api("DELETE", `/api/v1/functions/${encodeURIComponent(name)}`); toast(`Deleted ${name}`); done && done(); }
  catch (ex) { fail(ex); }
}

function deployForm(images, reload) {
  const name = h("input", { name: "name", required: true, placeholder: "hello" });
  const source = h("select", { name: "source" }, h("option", { value: "image" }, "an image in the store"),
    h("option", { value: "archive" }, "an uploaded source archive (.tar.gz)"));
  const image = h("select", { name: "image" }, images.flatMap((i) => i.refs).map((r) => h("option", { value: r }, r)));
  const archive = h("input", { type: "file", name: "archive", accept: ".tar.gz,.tgz,application/gzip" });
  const runtime = h("select", { name: "runtime" }, ["python", "node", "exec", "http"].map((r) => h("option", {}, r)));
  const mode = h("select", { name: "mode" }, ["cached", "ephemeral", "checkpointed", "branched"].map((r) => h("option", {}, r)));
  const handler = h("input", { name: "handler", placeholder: "handler.handle (optional)" });
  const min = h("input", { type: "number", name: "min", value: 0, min: 0, class: "num" });
  const max = h("input", { type: "number", name: "max", value: 2, min: 1, class: "num" });
  const memory = h("input", { type: "number", name: "memory", value: 256, min: 16, class: "num" });
  const env = h("textarea", { name: "env", rows: 2, placeholder: "KEY=value per line" });
  const imgRow = field("Image", image);
  const arcRow = field("Source archive", archive, "tar.gz of the function's directory; built on the runtime's base image");
  arcRow.hidden = true;
  source.addEventListener("change", () => { imgRow.hidden = source.value !== "image"; arcRow.hidden = source.value === "image"; });
  const status = h("p", { class: "muted" });
  return h("form", { class: "card", id: "deploy-form", onsubmit: async (e) => {
    e.preventDefault();
    let spec;
    try {
      spec = { name: name.value.trim(), runtime: runtime.value, mode: mode.value,
        scale: { min: +min.value, max: +max.value }, limits: { memory_mb: +memory.value }, env: parseKV(env.value) };
      if (handler.value.trim()) spec.handler = handler.value.trim();
    } catch (ex) { return fail(ex); }
    status.textContent = "Deploying…";
    try {
      if (source.value === "image") {
        spec.image = image.value;
        await api("POST", "/api/v1/functions", spec);
      } else {
        if (!archive.files.length) throw new Error("choose a .tar.gz source archive");
        const fd = new FormData();
        fd.append("function", new Blob([JSON.stringify(spec)], { type: "application/json" }), "function.json");
        fd.append("source", archive.files[0], archive.files[0].name);
        await api("POST", "/api/v1/functions", fd);
      }
      status.textContent = "";
      toast(`Deployed ${spec.name}`);
      e.target.reset();
      reload();
    } catch (ex) { status.textContent = ""; fail(ex); }
  } },
  h("h2", {}, "Deploy a function"),
  h("div", { class: "row" }, field("Name", name), field("From", source)),
  imgRow, arcRow,
  h("div", { class: "row" }, field("Runtime", runtime), field("Mode", mode), field("Handler", handler)),
  h("div", { class: "row" }, field("Min replicas", min), field("Max replicas", max), field("Memory (MiB)", memory)),
  field("Environment", env),
  h("button", { type: "submit", id: "deploy-submit" }, "Deploy"), status);
}

export function functionsView() {
  const list = h("div", {});
  const side = h("div", {});
  const el = h("section", {}, h("h1", {}, "Functions"), h("div", { class: "cols" }, list, side));
  let fns = [];
  let totals = {};
  function row(fn) {
    const st = fn.status || {};
    const t = totals[fn.name] || {};
    return h("tr", { "data-fn": fn.name },
      h("td", {}, h("a", { href: `#/functions/${encodeURIComponent(fn.name)}`, class: "strong" }, fn.name)),
      h("td", { class: "mono" }, fn.image), h("td", {}, fn.runtime), h("td", {}, fn.mode),
      h("td", { "data-test": "replicas" }, `${st.replicas ?? 0} (${st.busy ?? 0} busy / ${(st.replicas ?? 0) - (st.busy ?? 0)} idle)`),
      h("td", { "data-test": "invocations" }, fn.invocation_count ?? 0),
      h("td", { class: (t.errors || 0) > 0 ? "warn" : "" }, t.errors ?? 0),
      h("td", {}, can("deploy") ? [scaleForm(fn, load), h("button", { class: "small danger", "data-test": "delete",
        onclick: () => deleteFunction(fn.name, load) }, "Delete")] : h("span", { class: "muted" }, "read-only")));
  }
  function draw() {
    clear(list, table(["Name", "Image", "Runtime", "Mode", "Replicas", "Invocations", "Errors", ""],
      fns.map(row), { test: "functions", empty: "No functions deployed yet." }));
  }
  async function load() {
    try {
      const [f, m] = await Promise.all([api("GET", "/api/v1/functions"), api("GET", "/ui/api/metrics/history")]);
      fns = f.functions;
      totals = m.totals;
      draw();
    } catch (ex) { fail(ex); }
  }
  const off = onLive("pools", (pools) => {
    let changed = false;
    for (const fn of fns) {
      const p = pools[fn.name];
      if (p && (p.invocations !== fn.invocation_count || JSON.stringify(p) !== JSON.stringify(fn._live))) {
        fn._live = p; fn.invocation_count = p.invocations; fn.status = { ...fn.status, ...p }; changed = true;
      }
    }
    if (Object.keys(pools).length !== fns.length) return load();
    if (changed) draw();
  });
  load();
  if (can("deploy")) {
    api("GET", "/ui/api/images").then((d) => clear(side, deployForm(d.images, load))).catch(fail);
  } else {
    clear(side, h("div", { class: "card muted", id: "readonly-note" }, "Your key has the invoke scope only: you can look and invoke, not change."));
  }
  return { el, dispose: off };
}

export { kvText, badge };
