// Images: list, pull from a registry, import an archive (chunked upload under the payload limit, then import
// with progress), remove.
import { ago, api, bytes, can, clear, fail, field, follow, h, progressBar, table, toast } from "../lib.js";

async function uploadFile(file, bar) {
  const up = await api("POST", "/ui/api/uploads");
  let off = 0;
  while (off < file.size) {
    const chunk = file.slice(off, off + up.chunk_bytes);
    const r = await api("PUT", `/ui/api/uploads/${up.id}?offset=${off}`, await chunk.arrayBuffer(),
      { headers: { "Content-Type": "application/octet-stream" } });
    off = r.size;
    bar.update({ title: "upload", message: `${bytes(off)} of ${bytes(file.size)}`, fraction: off / file.size, status: "running" });
  }
  return up.id;
}

export function imagesView() {
  const list = h("div", {});
  const side = h("div", {});
  const el = h("section", {}, h("h1", {}, "Images"), h("div", { class: "cols" }, list, side));
  async function load() {
    try {
      const d = await api("GET", "/ui/api/images");
      clear(list, table(["Refs", "Id", "Size", "Layers", "Created", ""], d.images.map((i) => h("tr", { "data-image": i.refs[0] || i.id },
        h("td", { class: "mono" }, i.refs.join(", ") || "(untagged)"), h("td", { class: "mono" }, i.short_id),
        h("td", {}, bytes(i.size)), h("td", {}, (i.layers || []).length), h("td", {}, i.created ? ago(i.created) : "–"),
        h("td", {}, can("deploy") ? i.refs.map((r) => h("button", { class: "small danger", "data-action": "remove", onclick: async () => {
          if (!confirm(`Remove ${r}?`)) return;
          try { await api("DELETE", `/ui/api/images/${r}`); toast(`Removed ${r}`); load(); } catch (ex) { fail(ex); }
        } }, `remove ${r}`)) : ""))), { test: "images" }));
      if (can("deploy") && !side.childElementCount) clear(side, pullForm(d.registry, load), importForm(load));
    } catch (ex) { fail(ex); }
  }
  load();
  return { el, dispose: () => {} };
}

function pullForm(registry, done) {
  const ref = h("input", { id: "pull-ref", placeholder: "alpine:3.20, registry.example:5000/team/app:v1" });
  const status = h("div", { class: "muted", id: "pull-status" });
  return h("form", { class: "card", id: "pull-form", onsubmit: async (e) => {
    e.preventDefault();
    const name = ref.value.trim();
    if (!name) return fail(new Error("name the image to pull"));
    clear(status, `pulling ${name} …`);
    status.dataset.status = "running";
    try {
      const img = await api("POST", "/api/v1/images/pull", { ref: name });
      clear(status, `pulled ${img.refs.join(", ")}`);
      status.dataset.status = "done";
      toast(`Pulled ${img.refs.join(", ")}`);
      e.target.reset();
      done();
    } catch (ex) { clear(status, ex.message || String(ex)); status.dataset.status = "failed"; fail(ex); }
  } }, h("h2", {}, "Pull from a registry"), h("p", { class: "muted" }, registry),
  field("Image", ref, "names without a host mean docker.io, as with Docker"),
  h("button", { type: "submit", id: "pull-submit" }, "Pull"), status);
}

function importForm(done) {
  const file = h("input", { type: "file", id: "import-file", accept: ".tar,.tar.gz,application/x-tar" });
  const ref = h("input", { id: "import-ref", placeholder: "name:tag (optional: the archive's own name)" });
  const progress = h("div", {});
  return h("form", { class: "card", id: "import-form", onsubmit: async (e) => {
    e.preventDefault();
    if (!file.files.length) return fail(new Error("choose an image archive"));
    const bar = progressBar("import");
    clear(progress, bar.el);
    try {
      const uploadId = await uploadFile(file.files[0], bar);
      const op = await api("POST", "/ui/api/images/import", { upload_id: uploadId, ref: ref.value.trim() || null });
      bar.update(op);
      const img = await follow(op, bar);
      toast(`Imported ${img.refs.join(", ")}`);
      e.target.reset();
      done();
    } catch (ex) { fail(ex); }
  } }, h("h2", {}, "Import an image"), field("Archive", file, "docker-archive, OCI archive"), field("Name", ref),
  h("button", { type: "submit", id: "import-submit" }, "Import"), progress);
}
