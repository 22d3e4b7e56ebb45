// The control UI: wires the panels. Layout: sessions | stream | side panel
// (event detail / policy editor); on a narrow window they stack.

import { ApiError, Ev, Session, Stats, get, post } from "./api";
import { el } from "./dom";
import { Stream } from "./stream";
import { DetailPanel } from "./detail";
import { PolicyEditor } from "./editor";
import { SessionsPanel } from "./sessions";
import { StatsBar } from "./stats";

function start(): void {
  const app = document.getElementById("app");
  if (!app) return;
  const stream = new Stream();
  const detail = new DetailPanel();
  const editor = new PolicyEditor();
  const sessions = new SessionsPanel();
  const stats = new StatsBar();
  const banner = el("p", { class: "banner error", role: "alert", "data-testid": "banner", hidden: true });

  // Side panel: two tabs, Detail and Policy.
  const tabDetail = el("button", { type: "button", role: "tab", id: "tab-detail", "aria-controls": "pane-detail", "data-testid": "tab-detail" }, "Detail");
  const tabPolicy = el("button", { type: "button", role: "tab", id: "tab-policy", "aria-controls": "pane-policy", "data-testid": "tab-policy" }, "Policy");
  const paneDetail = el("div", { role: "tabpanel", id: "pane-detail", "aria-labelledby": "tab-detail" }, detail.root);
  const panePolicy = el("div", { role: "tabpanel", id: "pane-policy", "aria-labelledby": "tab-policy" }, editor.root);
  const side = el("section", { class: "panel side", "aria-label": "detail and policy", "data-testid": "side" },
    el("div", { class: "tabs", role: "tablist", "aria-label": "side panel" }, tabDetail, tabPolicy), paneDetail, panePolicy);
  const show = (which: "detail" | "policy") => {
    const d = which === "detail";
    tabDetail.setAttribute("aria-selected", String(d));
    tabPolicy.setAttribute("aria-selected", String(!d));
    tabDetail.tabIndex = d ? 0 : -1;
    tabPolicy.tabIndex = d ? -1 : 0;
    paneDetail.hidden = !d;
    panePolicy.hidden = d;
    side.dataset.tab = which;
  };
  tabDetail.addEventListener("click", () => show("detail"));
  tabPolicy.addEventListener("click", () => show("policy"));
  for (const t of [tabDetail, tabPolicy]) {
    t.addEventListener("keydown", (e) => {
      if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
        const next = t === tabDetail ? tabPolicy : tabDetail;
        show(next === tabDetail ? "detail" : "policy");
        next.focus();
        e.preventDefault();
      }
    });
  }
  show("policy");

  const closeDetail = () => {
    if (!detail.event()) return;
    detail.clear();
    show("policy");
    stream.focus();
  };
  stream.onOpen = (ev: Ev) => {
    show("detail");
    void detail.show(ev);
  };
  detail.onClose = closeDetail;
  document.addEventListener("keydown", (e) => {
    // Esc closes the detail, except inside the editor (where it leaves the completion/search).
    if (e.key === "Escape" && !(e.target as HTMLElement | null)?.closest(".cm-editor")) closeDetail();
  });
  detail.onSuggest = async (ev, effect) => {
    try {
      const r = await post<{ text: string }>("/api/policy/suggest", { event: ev.id, effect });
      show("policy");
      editor.appendRule(r.text);
    } catch (e) {
      banner.textContent = `cannot draft a rule: ${(e as Error).message}`;
      banner.hidden = false;
    }
  };

  // Selecting a session filters the stream and loads its policy.
  sessions.onSelect = (id) => {
    stream.setFilter({ session: id === null ? "" : String(id) });
    void editor.load(id ?? "last");
    void refreshStats();
  };
  stream.onSessionFilter = (s) => {
    sessions.select(s ? Number(s) : null, false);
    if (s) void editor.load(Number(s));
    void refreshStats();
  };
  sessions.onLoad = (rows: Session[]) => {
    stream.setSessions(rows.map((r) => r.id));
    editor.setSessions(rows);
  };

  const refreshStats = async () => {
    const served = await stats.refresh(stream.filters.session);
    if (!served) stats.fromLoaded(stream.loaded(), sessions.all(), stream.filters.session);
  };
  let statsQueued = false;
  stream.onData = () => {
    // Local counts follow the data, at most every 500 ms.
    if (!stats.isLocal() || statsQueued) return;
    statsQueued = true;
    window.setTimeout(() => {
      statsQueued = false;
      void refreshStats();
    }, 500);
  };
  document.addEventListener("corral-stats", (e) => stats.fromStream((e as CustomEvent<Stats>).detail));

  const skip = el("a", { href: "#stream-main", class: "skip" }, "Skip to the activity stream");
  app.replaceChildren(
    skip,
    el("header", { class: "top" },
      el("h1", {}, "corral"),
      stats.root),
    banner,
    el("main", { class: "grid", id: "stream-main" }, sessions.root, stream.root, side),
  );
  skip.addEventListener("click", (e) => {
    e.preventDefault();
    stream.focus();
  });

  void (async () => {
    try {
      await get("/api/health");
    } catch (e) {
      banner.textContent = e instanceof ApiError && e.status === 401
        ? "No access token: open the URL corral printed (it ends in ?token=…)."
        : `corral is not answering: ${(e as Error).message}`;
      banner.hidden = false;
      return;
    }
    await sessions.refresh();
    await Promise.all([stream.reload(), editor.load("last")]);
    await refreshStats();
    window.setInterval(() => void sessions.refresh(), 3000);
    window.setInterval(() => {
      if (!stats.isLocal()) void refreshStats();
    }, 2000);
  })();
}

start();
