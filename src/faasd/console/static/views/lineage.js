// Snapshot lineage: an SVG graph (laid out here: columns by depth, rows by parent position) of snapshots,
// their parents, branches and merges, and the sandboxes, instances and functions using each; restore,
// branch N (with progress), merge (strategy picker) and the merge's per-path conflict report.
import { ago, api, bytes, can, clear, fail, field, follow, h, progressBar, s, short, toast } from "../lib.js";
import { invokeForm } from "./function.js";

const COL = 290, NODE_W = 240, HEAD_H = 48, CHIP_H = 19, GAP = 26, PAD = 20;
const STRATEGIES = ["union", "intersection", "latest", "ours", "theirs", "fail"];

export function layout(data) {
  const snaps = new Map(data.snapshots.map((x) => [x.id, x]));
  const ins = (id) => {
    const x = snaps.get(id);
    const p = [];
    if (x.parent && snaps.has(x.parent)) p.push({ from: x.parent, kind: "parent" });
    for (const b of (x.merge && x.merge.branches) || []) if (snaps.has(b) && b !== x.parent) p.push({ from: b, kind: "merge" });
    return p;
  };
  const depth = new Map();
  const depthOf = (id, seen = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const d = Math.max(-1, ...ins(id).map((e) => depthOf(e.from, seen))) + 1;
    depth.set(id, d);
    return d;
  };
  const users = new Map(data.snapshots.map((x) => [x.id, []]));
  for (const sb of data.sandboxes) users.get(sb.snapshot_id)?.push({ type: "sandbox", id: sb.id, label: `sandbox ${short(sb.id, 16)}`, alive: sb.alive });
  for (const i of data.instances) {
    for (const key of ["source_snapshot", "fs_snapshot"]) {
      if (i[key] && users.has(i[key])) users.get(i[key]).push({ type: "instance", id: i.id, label: `instance ${i.name || short(i.id, 14)} (${i.status})` });
    }
  }
  for (const f of data.functions) {
    if (f.branch_from && users.has(f.branch_from)) users.get(f.branch_from).push({ type: "function", id: f.name, label: `function ${f.name} (branched)` });
  }
  const cols = [];
  for (const x of data.snapshots) (cols[depthOf(x.id)] ||= []).push(x);
  const pos = new Map();
  let height = 0;
  cols.forEach((col, d) => {
    const bary = (x) => {
      const ys = ins(x.id).map((e) => pos.get(e.from)).filter(Boolean).map((p) => p.y);
      return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : 0;
    };
    col.sort((a, b) => bary(a) - bary(b) || a.created_at.localeCompare(b.created_at));
    let y = PAD;
    for (const x of col) {
      const hgt = HEAD_H + CHIP_H * users.get(x.id).length + (users.get(x.id).length ? 6 : 0);
      y = Math.max(y, bary(x) - 0);
      pos.set(x.id, { x: PAD + d * COL, y, h: hgt });
      y += hgt + GAP;
    }
    height = Math.max(height, y);
  });
  const edges = data.snapshots.flatMap((x) => ins(x.id).map((e) => ({ ...e, to: x.id })));
  return { pos, edges, users, width: PAD * 2 + Math.max(1, cols.length) * COL, height: Math.max(height + PAD, 160) };
}

function report(rep, failed) {
  const conflicts = rep.conflicts || [];
  return h("div", { class: "card report", id: "merge-report", "data-test": "merge-report" },
    h("h3", {}, failed ? "Merge refused: conflicts (nothing was created)" : `Merged into ${rep.result}`),
    h("p", { class: "muted" }, `strategy ${rep.strategy} · branches ${(rep.branches || []).join(", ")} · ${(rep.identical || []).length} identical change(s)`),
    Object.entries(rep.taken || {}).map(([label, paths]) => h("p", {}, h("strong", {}, `taken from ${label}: `), paths.length ? paths.join(", ") : "nothing")),
    conflicts.length ? h("table", { class: "grid", "data-test": "conflicts" },
      h("thead", {}, h("tr", {}, ["Path", "Kind", "Sides", "Resolution", "Kept copies"].map((c) => h("th", {}, c)))),
      h("tbody", {}, conflicts.map((c) => h("tr", {}, h("td", { class: "mono" }, c.path), h("td", {}, c.kind),
        h("td", {}, Object.entries(c.sides || {}).map(([k, v]) => h("div", {}, h("span", { class: "mono" }, short(k, 14)), `: ${v}`))),
        h("td", {}, c.resolution), h("td", {}, Object.entries(c.kept_copies || {}).map(([, v]) => h("div", { class: "mono" }, v)))))))
      : h("p", {}, "No conflicts."),
    Object.entries(rep.dropped || {}).filter(([, p]) => p.length).map(([label, paths]) => h("p", { class: "warn" }, `dropped from ${label}: ${paths.join(", ")}`)));
}

export function lineageView() {
  const svgBox = h("div", { class: "graphbox", id: "lineage-graph" });
  const side = h("div", { class: "side" });
  const mergeBox = h("div", {});
  const reportBox = h("div", {});
  const fnSel = h("select", { id: "snap-function" });
  const toolbar = h("div", { class: "row card" });
  const el = h("section", {}, h("h1", {}, "Snapshot lineage"), toolbar,
    h("div", { class: "cols graphcols" }, svgBox, h("div", {}, side, mergeBox, reportBox)));
  let data = null;
  let selected = null;
  let zoom = 1;
  const picks = new Map(); // "snapshot:id" | "sandbox:id" -> label
  let strategyValue = "fail";
  const progressOf = new Map(); // snapshot id -> its last branch progress bar (kept across re-renders)

  if (can("deploy")) {
    append2(toolbar, field("Function", fnSel), h("button", { id: "snap-function-btn", onclick: async () => {
      if (!fnSel.value) return fail(new Error("choose a function with a warm worker (invoke it once first)"));
      try {
        const snap = await api("POST", "/api/v1/snapshots", { function: fnSel.value });
        toast(`Snapshot ${snap.id} taken`);
        selected = { type: "snapshot", id: snap.id };
        load();
      } catch (ex) { fail(ex); }
    } }, "Snapshot function"));
    api("GET", "/api/v1/functions").then((d) => {
      for (const f of d.functions) fnSel.append(h("option", { value: f.name }, f.name));
    }).catch(fail);
  }
  append2(toolbar, h("button", { class: "ghost", onclick: () => { zoom = Math.min(2, zoom * 1.2); draw(); } }, "Zoom +"),
    h("button", { class: "ghost", onclick: () => { zoom = Math.max(0.4, zoom / 1.2); draw(); } }, "Zoom −"),
    h("button", { class: "ghost", onclick: () => load() }, "Refresh"));

  function pickKey(type, id) { return `${type}:${id}`; }
  function togglePick(type, id) {
    const k = pickKey(type, id);
    if (picks.has(k)) picks.delete(k); else picks.set(k, id);
    draw(); drawMerge();
  }

  function draw() {
    if (!data) return;
    const { pos, edges, users, width, height } = layout(data);
    const svg = s("svg", { width: width * zoom, height: height * zoom, viewBox: `0 0 ${width} ${height}`, class: "lineage", "data-test": "lineage-svg" },
      s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));
    for (const e of edges) {
      const a = pos.get(e.from), b = pos.get(e.to);
      const x1 = a.x + NODE_W, y1 = a.y + HEAD_H / 2, x2 = b.x, y2 = b.y + HEAD_H / 2, mx = (x1 + x2) / 2;
      svg.append(s("path", { d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2 - 2} ${y2}`, class: `edge ${e.kind}`, "marker-end": "url(#arrow)" },
        s("title", {}, e.kind === "merge" ? `${e.from} merged into ${e.to}` : `${e.to} is layered on ${e.from}`)));
    }
    for (const x of data.snapshots) {
      const p = pos.get(x.id);
      const sel = selected && selected.type === "snapshot" && selected.id === x.id;
      const picked = picks.has(pickKey("snapshot", x.id));
      const g = s("g", { class: `node ${x.kind} ${sel ? "selected" : ""} ${picked ? "picked" : ""} ${x.merge ? "merged" : ""}`,
        transform: `translate(${p.x},${p.y})`, "data-snapshot": x.id });
      g.append(s("rect", { width: NODE_W, height: p.h, rx: 8, class: "box", onclick: () => { selected = { type: "snapshot", id: x.id }; draw(); panel(); } }));
      g.append(s("text", { x: 10, y: 19, class: "title", onclick: () => { selected = { type: "snapshot", id: x.id }; draw(); panel(); } }, short(x.id, 22)));
      g.append(s("text", { x: 10, y: 37, class: "sub" },
        `${x.merge ? "merge · " : ""}${x.function || "–"} · ${x.kind} · ${bytes(x.sizes.new_bytes)} new`));
      users.get(x.id).forEach((u, i) => {
        const uy = HEAD_H + i * CHIP_H;
        const usel = selected && selected.type === u.type && selected.id === u.id;
        const upicked = picks.has(pickKey(u.type, u.id));
        const chip = s("g", { class: `chip ${u.type} ${usel ? "selected" : ""} ${upicked ? "picked" : ""}`, "data-user": u.id,
          transform: `translate(8,${uy})`, onclick: (ev) => { ev.stopPropagation(); selected = { type: u.type, id: u.id, snapshot: x.id }; draw(); panel(); } },
        s("rect", { width: NODE_W - 16, height: CHIP_H - 3, rx: 4 }),
        s("text", { x: 6, y: 12 }, `${u.type === "sandbox" && !u.alive ? "✕ " : "● "}${u.label}`));
        g.append(chip);
      });
      svg.append(g);
    }
    if (!data.snapshots.length) {
      svg.append(s("text", { x: PAD, y: 60, class: "sub" }, data.available ? "No snapshots yet: snapshot a function with a warm worker." : "Snapshots are not available on this daemon."));
    }
    clear(svgBox, svg);
  }

  function drawMerge() {
    if (!picks.size || !can("deploy")) return clear(mergeBox);
    const strategy = h("select", { id: "merge-strategy", onchange: () => { strategyValue = strategy.value; } },
      STRATEGIES.map((x) => h("option", { value: x, selected: x === strategyValue }, x)));
    clear(mergeBox, h("div", { class: "card", id: "merge-panel" }, h("h2", {}, "Merge"),
      h("ul", {}, [...picks.entries()].map(([k, id]) => h("li", {}, `${k.split(":")[0]} `, h("span", { class: "mono" }, short(id, 22)),
        " ", h("button", { class: "small ghost", onclick: () => togglePick(k.split(":")[0], id) }, "remove")))),
      field("On conflict", strategy, "fail: refuse and report · ours/theirs: first/last wins · latest: newest file · union: keep both · intersection: only identical changes"),
      h("button", { id: "merge-submit", disabled: picks.size < 2, onclick: async () => {
        const body = { snapshot_ids: [], sandbox_ids: [], strategy: strategy.value };
        for (const [k, id] of picks) (k.startsWith("snapshot:") ? body.snapshot_ids : body.sandbox_ids).push(id);
        clear(reportBox, h("p", { class: "muted" }, "Merging…"));
        try {
          const r = await api("POST", "/api/v1/merges", body);
          clear(reportBox, report(r.report, false));
          picks.clear();
          selected = { type: "snapshot", id: r.snapshot.id };
          toast(`Merged into ${r.snapshot.id}`);
          load();
        } catch (ex) {
          const rep = ex.data && ex.data.details && ex.data.details.report;
          if (ex.status === 409 && rep) { clear(reportBox, report(rep, true)); load(); }
          else { clear(reportBox); fail(ex); }
        }
      } }, `Merge ${picks.size} branch(es)`)));
  }

  function panel() {
    if (!selected || !data) return clear(side, h("div", { class: "card muted" }, "Select a snapshot or a sandbox in the graph."));
    if (selected.type === "snapshot") return snapshotPanel(data.snapshots.find((x) => x.id === selected.id));
    if (selected.type === "sandbox") return sandboxPanel(data.sandboxes.find((x) => x.id === selected.id));
    const target = selected.type === "instance" ? `#/instances/${selected.id}` : `#/functions/${selected.id}`;
    clear(side, h("div", { class: "card" }, h("h2", {}, `${selected.type} ${selected.id}`), h("a", { href: target }, "Open")));
  }

  function snapshotPanel(x) {
    if (!x) return clear(side);
    const count = h("input", { type: "number", min: 1, max: 64, value: 2, class: "num", id: "branch-count" });
    const progress = h("div", {}, progressOf.get(x.id) || null);
    const actions = can("deploy") ? h("div", { class: "actions" },
      h("button", { id: "restore-btn", disabled: !x.restorable, onclick: async () => {
        try { const sb = await api("POST", `/api/v1/snapshots/${x.id}/restore`); toast(`Restored as ${sb.id}`); load(); } catch (ex) { fail(ex); }
      } }, "Restore"),
      h("span", { class: "inline" }, count, h("button", { id: "branch-btn", disabled: !x.restorable, onclick: async () => {
        const bar = progressBar(`branch ×${count.value}`);
        progressOf.set(x.id, bar.el);
        clear(progress, bar.el);
        try {
          const op = await api("POST", `/ui/api/snapshots/${x.id}/branch`, { count: +count.value });
          bar.update(op);
          const res = await follow(op, bar);
          toast(`${res.sandboxes.length} copies running`);
          load();
        } catch (ex) { fail(ex); }
      } }, "Branch")),
      h("button", { id: "pick-snapshot", onclick: () => togglePick("snapshot", x.id) }, picks.has(pickKey("snapshot", x.id)) ? "Remove from merge" : "Add to merge"),
      h("button", { onclick: async () => {
        try { const i = await api("POST", "/api/v1/instances", { snapshot_id: x.id }); toast(`Instance ${i.id} started`); load(); } catch (ex) { fail(ex); }
      } }, "Start instance"),
      h("button", { class: "danger", onclick: async () => {
        if (!confirm(`Delete snapshot ${x.id}?`)) return;
        try { await api("DELETE", `/api/v1/snapshots/${x.id}`); selected = null; load(); } catch (ex) { fail(ex); }
      } }, "Delete")) : h("p", { class: "muted" }, "read-only key");
    clear(side, h("div", { class: "card", id: "snapshot-panel" }, h("h2", {}, "Snapshot ", h("span", { class: "mono" }, x.id)),
      h("div", { class: "kv" },
        h("span", {}, "created"), h("span", {}, ago(x.created_at)),
        h("span", {}, "parent"), h("span", { class: "mono" }, x.parent || "–"),
        h("span", {}, "function"), h("span", {}, x.function || "–"),
        h("span", {}, "kind"), h("span", {}, `${x.kind}${x.restorable ? " (restorable)" : " (not restorable: start an instance on it)"}`),
        h("span", {}, "size"), h("span", {}, `${bytes(x.sizes.logical_bytes)} logical · ${bytes(x.sizes.new_bytes)} new · ${x.sizes.files} files`),
        h("span", {}, "labels"), h("span", {}, Object.entries(x.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "–"),
        h("span", {}, "used by"), h("span", {}, x.in_use_by.join(", ") || "–"),
        x.merge ? [h("span", {}, "merge of"), h("span", { class: "mono" }, `${(x.merge.branches || []).join(", ")} (${x.merge.strategy})`)] : null),
      x.merge && Array.isArray(x.merge.conflicts) && x.merge.conflicts.length
        ? h("details", { open: true }, h("summary", {}, `${x.merge.conflicts.length} conflict(s) resolved`),
          h("ul", {}, x.merge.conflicts.map((c) => h("li", { class: "mono" }, typeof c === "string" ? c : `${c.path} — ${c.kind} → ${c.resolution}`))))
        : null,
      actions, progress));
  }

  function sandboxPanel(sb) {
    if (!sb) return clear(side);
    clear(side, h("div", { class: "card", id: "sandbox-panel" }, h("h2", {}, "Sandbox ", h("span", { class: "mono" }, sb.id)),
      h("div", { class: "kv" }, h("span", {}, "from"), h("span", { class: "mono" }, sb.snapshot_id), h("span", {}, "alive"), h("span", {}, String(sb.alive)),
        h("span", {}, "restore"), h("span", {}, `${sb.restore_ms.toFixed(1)} ms`), h("span", {}, "invocations"), h("span", {}, sb.invocations)),
      can("deploy") ? h("div", { class: "actions" },
        h("button", { id: "pick-sandbox", onclick: () => togglePick("sandbox", sb.id) }, picks.has(pickKey("sandbox", sb.id)) ? "Remove from merge" : "Add to merge"),
        h("button", { onclick: async () => {
          try { const snap = await api("POST", "/api/v1/snapshots", { sandbox_id: sb.id }); toast(`Snapshot ${snap.id}`); selected = { type: "snapshot", id: snap.id }; load(); } catch (ex) { fail(ex); }
        } }, "Snapshot it"),
        h("button", { class: "danger", onclick: async () => {
          try { await api("DELETE", `/api/v1/sandboxes/${sb.id}`); selected = null; picks.delete(pickKey("sandbox", sb.id)); load(); } catch (ex) { fail(ex); }
        } }, "Delete")) : null),
    invokeForm(`/ui/api/sandboxes/${sb.id}/invoke`));
  }

  async function load() {
    try {
      data = await api("GET", "/ui/api/lineage");
      for (const k of [...picks.keys()]) {
        const [t, id] = k.split(":");
        const ok = t === "snapshot" ? data.snapshots.some((x) => x.id === id) : data.sandboxes.some((x) => x.id === id);
        if (!ok) picks.delete(k);
      }
      draw(); drawMerge();
      if (!side.querySelector("form:focus-within, input:focus, textarea:focus")) panel();
    } catch (ex) { fail(ex); }
  }
  load();
  return { el, dispose: () => {} };
}

function append2(el, ...c) { for (const x of c) el.append(x); }
