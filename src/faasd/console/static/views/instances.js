// Instances: list with lifecycle buttons, start one; one instance: terminal (WebSocket), files, ports.
import { ago, api, b64, badge, bytes, can, clear, fail, field, h, onLive, saveBlob, table, toast } from "../lib.js";

const ACTIONS = { running: ["pause", "stop"], paused: ["resume", "stop"], stopped: ["start"], error: ["start"] };

async function act(id, action, done) {
  try {
    if (action === "delete") {
      if (!confirm(`Delete instance ${id} and its files?`)) return;
      await api("DELETE", `/api/v1/instances/${id}`);
    } else {
      await api("POST", `/api/v1/instances/${id}/${action}`);
    }
    toast(`${action}: ${id}`);
    done && done();
  } catch (ex) { fail(ex); }
}

function buttons(inst, done) {
  if (!can("deploy")) return h("span", { class: "muted" }, "read-only");
  return h("span", { class: "actions" }, (ACTIONS[inst.status] || []).concat(["delete"]).map((a) =>
    h("button", { class: `small ${a === "delete" ? "danger" : ""}`, "data-action": a, onclick: () => act(inst.id, a, done) }, a)));
}

function portLinks(inst) {
  return (inst.ports || []).map((p) => h("a", { href: `/api/v1/instances/${inst.id}/ports/${p.internal_port}/`, target: "_blank", rel: "noopener", class: "port" },
    `:${p.internal_port}`));
}

function startForm(images, done) {
  const image = h("select", { id: "instance-image" }, images.flatMap((i) => i.refs).map((r) => h("option", { value: r, selected: r === "faasd/python:latest" }, r)));
  const name = h("input", { id: "instance-name", placeholder: "optional" });
  const cpu = h("input", { type: "number", step: "0.25", value: 1, class: "num" });
  const mem = h("input", { type: "number", value: 512, class: "num" });
  const status = h("span", { class: "muted" });
  return h("form", { class: "card", id: "instance-form", onsubmit: async (e) => {
    e.preventDefault();
    status.textContent = "starting…";
    try {
      const body = { image: image.value, cpu_cores: +cpu.value, memory_mb: +mem.value };
      if (name.value.trim()) body.name = name.value.trim();
      const inst = await api("POST", "/api/v1/instances", body);
      status.textContent = "";
      toast(`Instance ${inst.id} running`);
      done();
    } catch (ex) { status.textContent = ""; fail(ex); }
  } }, h("h2", {}, "Start an instance"), field("Image", image), field("Name", name),
  h("div", { class: "row" }, field("CPU cores", cpu), field("Memory (MiB)", mem)), h("button", { type: "submit", id: "instance-submit" }, "Start"), status);
}

export function instancesView() {
  const list = h("div", {});
  const side = h("div", {});
  const el = h("section", {}, h("h1", {}, "Instances"), h("div", { class: "cols" }, list, side));
  function draw(instances) {
    clear(list, table(["Instance", "Name", "Image / snapshot", "Status", "Ports", "Last active", ""], instances.map((i) => h("tr", { "data-instance": i.id },
      h("td", {}, h("a", { href: `#/instances/${i.id}`, class: "mono" }, i.id)), h("td", {}, i.name || "–"),
      h("td", { class: "mono" }, i.source_snapshot || i.image), h("td", {}, badge(i.status)), h("td", {}, portLinks(i)),
      h("td", {}, ago(i.last_active_at)), h("td", {}, buttons(i, load)))), { test: "instances", empty: "No instances." }));
  }
  async function load() { try { draw((await api("GET", "/api/v1/instances")).instances); } catch (ex) { fail(ex); } }
  load();
  const off = onLive("instances", draw);
  if (can("deploy")) api("GET", "/ui/api/images").then((d) => clear(side, startForm(d.images, load))).catch(fail);
  return { el, dispose: off };
}

// -- terminal over the WebSocket -------------------------------------------------------------------
function terminal(id) {
  const screen = h("div", { class: "term-screen", id: "term-screen", "data-test": "terminal" });
  const prompt = h("span", { class: "prompt" }, "$ ");
  const input = h("input", { class: "term-input", id: "term-input", autocomplete: "off", spellcheck: "false", disabled: true });
  const state = h("span", { class: "muted", id: "term-state" }, "connecting…");
  const hist = [];
  let hi = 0;
  let cwd = "/";
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ui/api/instances/${encodeURIComponent(id)}/terminal`);
  const print = (text, cls) => { if (text) screen.append(h("span", { class: cls }, text)); screen.scrollTop = screen.scrollHeight; };
  ws.onopen = () => { state.textContent = "connected"; state.className = "ok"; };
  ws.onclose = (e) => { state.textContent = `closed${e.reason ? ": " + e.reason : ""}`; state.className = "warn"; input.disabled = true; };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "ready") { cwd = m.cwd; input.disabled = false; input.focus(); }
    if (m.type === "exit") {
      print(m.stdout, "out");
      print(m.stderr, "err");
      if (m.code !== 0) print(`[exit ${m.code}${m.timed_out ? ", timed out" : ""}]\n`, "muted");
      cwd = m.cwd;
      input.disabled = false;
      input.focus();
    }
    if (m.type === "error") { print(m.message + "\n", "err"); input.disabled = false; }
    prompt.textContent = `${cwd} $ `;
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      const line = input.value;
      input.value = "";
      print(`${cwd} $ ${line}\n`, "cmd");
      if (line === "clear") { screen.replaceChildren(); return; }
      if (!line.trim()) return;
      hist.push(line); hi = hist.length;
      input.disabled = true;
      ws.send(JSON.stringify({ type: "run", line }));
    } else if (e.key === "ArrowUp" && hi > 0) { input.value = hist[--hi]; e.preventDefault(); }
    else if (e.key === "ArrowDown" && hi < hist.length) { input.value = hist[++hi] || ""; e.preventDefault(); }
    else if (e.key === "l" && e.ctrlKey) { screen.replaceChildren(); e.preventDefault(); }
  });
  const el = h("div", { class: "card" }, h("h2", {}, "Terminal ", state),
    h("div", { class: "term", onclick: () => input.focus() }, screen, h("div", { class: "term-line" }, prompt, input)),
    h("small", { class: "muted" }, "Each line runs with /bin/sh -c inside the instance; cd persists. ↑/↓ history, Ctrl-L clears."));
  return { el, dispose: () => ws.close() };
}

// -- file browser --------------------------------------------------------------------------------
function untarFirst(buf) {
  // The download is a tar of one path: return its first regular file (name, bytes) if it is a file.
  const u8 = new Uint8Array(buf);
  const str = (o, n) => new TextDecoder().decode(u8.subarray(o, o + n)).replace(/\0.*$/s, "");
  let off = 0;
  while (off + 512 <= u8.length) {
    const name = str(off, 100);
    if (!name) break;
    const size = parseInt(str(off + 124, 12).trim() || "0", 8);
    const type = String.fromCharCode(u8[off + 156] || 48);
    if (type === "0" || type === "\0") return { name: name.split("/").pop(), data: u8.slice(off + 512, off + 512 + size) };
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return null;
}

function files(id) {
  const path = h("input", { id: "files-path", value: "/tmp" });
  const list = h("div", {});
  const upload = h("input", { type: "file", id: "files-upload", multiple: true });
  async function load() {
    try {
      const d = await api("GET", `/ui/api/instances/${id}/ls?path=${encodeURIComponent(path.value)}`);
      const up = path.value.replace(/\/[^/]*\/?$/, "") || "/";
      clear(list, table(["Name", "Size", "Modified", ""], [
        path.value !== "/" ? h("tr", {}, h("td", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); path.value = up; load(); } }, "..")), h("td"), h("td"), h("td")) : null,
        ...d.entries.map((f) => h("tr", { "data-file": f.name },
          h("td", {}, f.kind === "dir" ? h("a", { href: "#", onclick: (e) => { e.preventDefault(); path.value = f.path; load(); } }, f.name + "/") : f.name),
          h("td", {}, f.kind === "dir" ? "–" : bytes(f.size)), h("td", {}, ago(f.mtime)),
          h("td", {}, h("button", { class: "small", "data-action": "download", onclick: () => download(f) }, "Download")))),
      ].filter(Boolean), { test: "files", empty: "Empty directory." }));
    } catch (ex) { clear(list, h("p", { class: "error" }, ex.message)); }
  }
  async function download(f) {
    try {
      const r = await api("GET", `/api/v1/instances/${id}/files?path=${encodeURIComponent(f.path)}`, undefined, { raw: true });
      const buf = await r.arrayBuffer();
      const one = f.kind === "file" ? untarFirst(buf) : null;
      if (one) saveBlob(new Blob([one.data]), one.name);
      else saveBlob(new Blob([buf], { type: "application/x-tar" }), `${f.name}.tar`);
    } catch (ex) { fail(ex); }
  }
  upload.addEventListener("change", async () => {
    try {
      const items = [];
      for (const file of upload.files) items.push({ path: file.name, content: b64(await file.arrayBuffer()), mode: 420 });
      const r = await api("PUT", `/api/v1/instances/${id}/files`, { target_path: path.value, files: items });
      toast(`Uploaded ${r.files} file(s) to ${r.target_path}`);
      upload.value = "";
      load();
    } catch (ex) { fail(ex); }
  });
  load();
  return h("div", { class: "card" }, h("h2", {}, "Files"),
    h("div", { class: "row" }, field("Directory", path), h("button", { class: "small", id: "files-go", onclick: load }, "List"),
      field("Upload here", upload)), list);
}

export function instanceView(id) {
  const head = h("div", {});
  const ports = h("div", {});
  let term = null;
  const body = h("div", {});
  const el = h("section", {}, head, body);
  let shown = null;
  async function load() {
    try {
      const i = await api("GET", `/api/v1/instances/${id}`);
      clear(head, h("h1", {}, h("a", { href: "#/instances", class: "muted" }, "Instances / "), i.name || i.id, " ", badge(i.status)),
        h("div", { class: "card kv wide" }, h("span", {}, "id"), h("span", { class: "mono" }, i.id),
          h("span", {}, "image / snapshot"), h("span", { class: "mono" }, i.source_snapshot || i.image),
          h("span", {}, "limits"), h("span", {}, `${i.cpu_cores} CPU · ${i.memory_mb} MiB · ${i.disk_gb} GB disk`),
          h("span", {}, "actions"), buttons(i, load), i.error ? [h("span", {}, "error"), h("span", { class: "error" }, i.error)] : null));
      const exposeInput = h("input", { type: "number", min: 1, max: 65535, placeholder: "8000", class: "num", id: "expose-port" });
      clear(ports, h("div", { class: "card" }, h("h2", {}, "Ports"),
        h("p", {}, i.ports.length ? portLinks(i) : h("span", { class: "muted" }, "No exposed ports.")),
        can("deploy") ? h("form", { class: "inline", onsubmit: async (e) => {
          e.preventDefault();
          try { await api("POST", `/api/v1/instances/${id}/ports`, { internal_port: +exposeInput.value }); load(); } catch (ex) { fail(ex); }
        } }, exposeInput, h("button", { class: "small" }, "Expose")) : null));
      const running = i.status === "running" || i.status === "paused";
      if (shown !== running) {
        shown = running;
        if (term) term.dispose();
        term = null;
        if (running && can("deploy")) {
          term = terminal(id);
          clear(body, h("div", { class: "cols" }, h("div", {}, term.el), h("div", {}, files(id), ports)));
        } else {
          clear(body, h("div", { class: "cols" }, h("div", { class: "card muted" }, running ? "The terminal and files need the deploy scope." : "Start the instance to use its terminal and files."), ports));
        }
      }
    } catch (ex) { fail(ex); }
  }
  load();
  const off = onLive("instances", (all) => {
    const mine = all.find((x) => x.id === id);
    if (mine) load();
  });
  return { el, dispose: () => { off(); if (term) term.dispose(); } };
}
