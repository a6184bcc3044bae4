// Secrets and API keys (admin), and the system page (health, versions, pools, queue depth).
import { ago, api, can, clear, fail, field, h, onLive, table, toast } from "../lib.js";

export function secretsView() {
  const list = h("div", {});
  const name = h("input", { id: "secret-name", required: true });
  const value = h("textarea", { id: "secret-value", rows: 2, required: true });
  const el = h("section", {}, h("h1", {}, "Secrets"), h("div", { class: "cols" }, list,
    h("form", { class: "card", onsubmit: async (e) => {
      e.preventDefault();
      try { await api("POST", "/api/v1/secrets", { name: name.value.trim(), value: value.value }); toast("Secret created"); e.target.reset(); load(); }
      catch (ex) { fail(ex); }
    } }, h("h2", {}, "New secret"), field("Name", name), field("Value", value, "write-only: the API never returns it"), h("button", { type: "submit" }, "Create"))));
  async function load() {
    try {
      const d = await api("GET", "/api/v1/secrets");
      clear(list, table(["Name", "Created", "Updated", ""], d.secrets.map((x) => h("tr", {}, h("td", { class: "mono" }, x.name),
        h("td", {}, ago(x.created_at)), h("td", {}, ago(x.updated_at)),
        h("td", {}, h("button", { class: "small", onclick: async () => {
          const v = prompt(`New value for ${x.name}`);
          if (v === null) return;
          try { await api("PUT", `/api/v1/secrets/${encodeURIComponent(x.name)}`, { value: v }); toast("Updated"); load(); } catch (ex) { fail(ex); }
        } }, "Set value"), h("button", { class: "small danger", onclick: async () => {
          if (!confirm(`Delete secret ${x.name}?`)) return;
          try { await api("DELETE", `/api/v1/secrets/${encodeURIComponent(x.name)}`); load(); } catch (ex) { fail(ex); }
        } }, "Delete")))), { test: "secrets", empty: "No secrets." }));
    } catch (ex) { clear(list, h("p", { class: "error" }, ex.message)); }
  }
  load();
  return { el, dispose: () => {} };
}

export function keysView() {
  const list = h("div", {});
  const shown = h("div", {});
  const name = h("input", { id: "key-name", required: true });
  const scope = h("select", { id: "key-scope" }, ["invoke", "deploy", "admin"].map((x) => h("option", {}, x)));
  const el = h("section", {}, h("h1", {}, "API keys"), h("div", { class: "cols" }, list,
    h("div", {}, h("form", { class: "card", onsubmit: async (e) => {
      e.preventDefault();
      try {
        const k = await api("POST", "/api/v1/keys", { name: name.value.trim(), scopes: [scope.value] });
        clear(shown, h("div", { class: "card" }, h("h3", {}, `Key ${k.name} (${k.scopes.join(", ")})`),
          h("p", {}, "Copy it now; it is not shown again:"), h("pre", { class: "body", id: "new-key" }, k.key)));
        e.target.reset();
        load();
      } catch (ex) { fail(ex); }
    } }, h("h2", {}, "New key"), field("Name", name), field("Scope", scope, "admin ⊇ deploy ⊇ invoke"), h("button", { type: "submit", id: "key-submit" }, "Create")), shown)));
  async function load() {
    try {
      const d = await api("GET", "/api/v1/keys");
      clear(list, table(["Id", "Name", "Scopes", "Created", "Last used", ""], d.keys.map((k) => h("tr", {},
        h("td", { class: "mono" }, k.id), h("td", {}, k.name), h("td", {}, k.scopes.join(", ")), h("td", {}, ago(k.created_at)),
        h("td", {}, ago(k.last_used_at)), h("td", {}, h("button", { class: "small danger", onclick: async () => {
          if (!confirm(`Delete key ${k.name}? Clients and console sessions using it stop working.`)) return;
          try { await api("DELETE", `/api/v1/keys/${k.id}`); load(); } catch (ex) { fail(ex); }
        } }, "Delete")))), { test: "keys" }));
    } catch (ex) { clear(list, h("p", { class: "error" }, ex.message)); }
  }
  load();
  return { el, dispose: () => {} };
}

export function systemView() {
  const box = h("div", {});
  const pools = h("div", {});
  const el = h("section", {}, h("h1", {}, "System"), box, h("div", { class: "card" }, h("h2", {}, "Pools ", h("small", { class: "muted" }, "(live)")), pools));
  function drawPools(p, queue) {
    clear(pools, table(["Function", "Mode", "Replicas", "Busy", "Idle", "Starting", "Queued", "Min / max", "Invocations"],
      Object.entries(p).map(([n, x]) => h("tr", {}, h("td", {}, h("a", { href: `#/functions/${encodeURIComponent(n)}` }, n)), h("td", {}, x.mode),
        h("td", {}, x.replicas), h("td", {}, x.busy), h("td", {}, x.replicas - x.busy), h("td", {}, x.starting ?? 0), h("td", {}, x.queued),
        h("td", {}, `${x.min} / ${x.max}`), h("td", {}, x.invocations))), { test: "pools", empty: "No functions." }),
    queue ? h("p", { "data-test": "queue" }, `Async executions queued: ${queue.async_queued}`) : null);
  }
  let queue = null;
  let lastPools = {};
  async function load() {
    try {
      const d = await api("GET", "/ui/api/system");
      const kv = (obj) => h("div", { class: "kv" }, Object.entries(obj).map(([k, v]) => [h("span", {}, k), h("span", { class: "mono" }, String(v))]));
      clear(box, h("div", { class: "cols3" },
        h("div", { class: "card" }, h("h2", {}, "Health ", h("span", { class: d.health.status === "ok" ? "ok" : "warn", "data-test": "health" }, d.health.status)), kv(d.health)),
        h("div", { class: "card", "data-test": "versions" }, h("h2", {}, "Versions"), kv(d.versions)),
        h("div", { class: "card" }, h("h2", {}, "Settings"), kv({ ...d.settings, ...Object.fromEntries(Object.entries(d.features).map(([k, v]) => [`feature ${k}`, v])), "console sessions": d.console_sessions }))),
      d.operations.length ? h("div", { class: "card" }, h("h2", {}, "Recent console operations"),
        table(["Operation", "Status", "Progress", "Started"], d.operations.map((o) => h("tr", {}, h("td", {}, o.title), h("td", {}, o.status),
          h("td", {}, o.message), h("td", {}, ago(o.started)))))) : null);
      queue = d.queue;
      lastPools = d.pools;
      drawPools(lastPools, queue);
    } catch (ex) { fail(ex); }
  }
  load();
  const off1 = onLive("pools", (p) => { lastPools = p; drawPools(p, queue); });
  const off2 = onLive("queue", (q) => { queue = q; drawPools(lastPools, q); });
  return { el, dispose: () => { off1(); off2(); } };
}

export { can };
