// The console shell: sign-in, navigation (hash routes) and view lifecycle.
import { api, can, clear, field, h, onUnauthorized, session, startLive, stopLive, toast } from "./lib.js";
import { functionsView } from "./views/functions.js";
import { functionView } from "./views/function.js";
import { executionsView } from "./views/executions.js";
import { lineageView } from "./views/lineage.js";
import { instancesView, instanceView } from "./views/instances.js";
import { imagesView } from "./views/images.js";
import { keysView, secretsView, systemView } from "./views/admin.js";

const main = document.getElementById("view");
let current = null;

const routes = [
  [/^\/functions$/, () => functionsView()],
  [/^\/functions\/([^/]+)$/, (m) => functionView(decodeURIComponent(m[1]))],
  [/^\/executions$/, () => executionsView()],
  [/^\/executions\/([^/]+)$/, (m) => executionsView(decodeURIComponent(m[1]))],
  [/^\/lineage$/, () => lineageView()],
  [/^\/instances$/, () => instancesView()],
  [/^\/instances\/([^/]+)$/, (m) => instanceView(decodeURIComponent(m[1]))],
  [/^\/images$/, () => imagesView()],
  [/^\/secrets$/, () => secretsView()],
  [/^\/keys$/, () => keysView()],
  [/^\/system$/, () => systemView()],
];

function dispose() {
  if (current && current.dispose) current.dispose();
  current = null;
}

async function render() {
  dispose();
  if (!session.signedIn) return showSignIn();
  const path = location.hash.replace(/^#/, "") || "/functions";
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", path.startsWith("/" + a.dataset.nav));
  }
  for (const [re, make] of routes) {
    const m = path.match(re);
    if (m) {
      const view = make(m);
      current = view;
      clear(main, view.el);
      main.dataset.view = path.split("/")[1];
      return;
    }
  }
  clear(main, h("p", {}, "No such page. ", h("a", { href: "#/functions" }, "Functions")));
}

function applySession(data) {
  Object.assign(session, {
    signedIn: !!data.signed_in, scopes: data.scopes || [], csrf: data.csrf || "",
    name: data.key_name || "", auth: data.auth !== false,
  });
  document.getElementById("nav").hidden = !session.signedIn;
  document.getElementById("who").hidden = !session.signedIn;
  document.getElementById("who-name").textContent = session.name;
  document.getElementById("who-scopes").textContent = session.scopes.join(" · ");
  document.getElementById("sign-out").hidden = !session.auth;
  for (const el of document.querySelectorAll("[data-scope]")) el.hidden = !can(el.dataset.scope);
  if (session.signedIn) startLive(); else stopLive();
}

function showSignIn(message) {
  dispose();
  main.dataset.view = "signin";
  const key = h("input", { type: "password", id: "signin-key", autocomplete: "off", placeholder: "fdk_…", required: true });
  const err = h("p", { class: "error", id: "signin-error", role: "alert" }, message || "");
  const form = h("form", { class: "card signin", id: "signin-form", onsubmit: async (e) => {
    e.preventDefault();
    err.textContent = "";
    try {
      const data = await api("POST", "/ui/api/session", { key: key.value }, { noRedirect: true });
      applySession(data);
      if (!location.hash || location.hash === "#/") location.hash = "#/functions";
      render();
    } catch (ex) {
      err.textContent = ex.message;
      key.select();
    }
  } },
  h("h1", {}, "Sign in"),
  h("p", { class: "muted" }, "Paste an API key. The bootstrap admin key is in <data_dir>/admin.key; create more with ",
    h("code", {}, "faas keys create"), "."),
  field("API key", key),
  h("button", { type: "submit", id: "signin-submit" }, "Sign in"),
  err);
  clear(main, form);
  key.focus();
}

async function signOut() {
  try { await api("DELETE", "/ui/api/session"); } catch { /* already gone */ }
  applySession({ signed_in: false });
  toast("Signed out");
  showSignIn();
}

onUnauthorized(() => {
  if (!session.signedIn) return;
  applySession({ signed_in: false });
  showSignIn("Your session ended; sign in again.");
});

document.getElementById("sign-out").addEventListener("click", signOut);
window.addEventListener("hashchange", render);

(async () => {
  try {
    applySession(await api("GET", "/ui/api/session"));
  } catch (e) {
    clear(main, h("p", { class: "error" }, `The daemon did not answer: ${e.message}`));
    return;
  }
  render();
})();
