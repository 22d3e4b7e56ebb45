// The live activity stream: the initial page (`GET /api/events`), then the
// SSE stream (`/api/events/stream`) from the page's last id; filters
// (applied here at once, then asked of the server); pause (incoming events
// are buffered and counted); a memory cap of the newest MAX_EVENTS.

import { ApiError, Ev, get, qs } from "./api";
import { el, fill, debounce } from "./dom";
import { clock, decisionLabel, haystack, kindOf, KINDS, target } from "./format";
import { VList } from "./vlist";

/** How many events the UI keeps (the newest); older ones are dropped. */
export const MAX_EVENTS = 200_000;
/** Row height in px (fixed: the list is virtualised by division). */
const ROW = 24;

/** The stream's filters. */
export interface Filters {
  session: string;
  kind: string;
  decision: string;
  text: string;
}

/** The activity stream panel. */
export class Stream {
  readonly root: HTMLElement;
  readonly filters: Filters = { session: "", kind: "", decision: "", text: "" };
  /** Every loaded event (server-filtered), oldest first, at most MAX_EVENTS. */
  private all: Ev[] = [];
  /** The events the list shows (`all` through the client-side filter). */
  private view: Ev[] = [];
  private paused = false;
  private buffer: Ev[] = [];
  /** Stream events not yet in the list (flushed every 50 ms). */
  private pending: Ev[] = [];
  private flushTimer = 0;
  private dropped = 0;
  private source: EventSource | null = null;
  private generation = 0;
  private readonly list: VList<Ev>;
  private readonly status = el("span", { class: "status", "data-testid": "stream-status", role: "status" });
  private readonly pauseBtn: HTMLButtonElement;
  private readonly countEl = el("span", { class: "muted", "data-testid": "stream-count" });
  private readonly sessionSel: HTMLSelectElement;
  private readonly kindSel: HTMLSelectElement;
  private readonly decisionSel: HTMLSelectElement;
  private readonly textIn: HTMLInputElement;
  /** Called with each event the list opens (Enter, Space, click). */
  onOpen: (ev: Ev) => void = () => {};
  /** Called when the session filter changes (from the select). */
  onSessionFilter: (session: string) => void = () => {};
  /** Called when new events were loaded (for counts computed here). */
  onData: () => void = () => {};

  constructor() {
    this.list = new VList<Ev>(
      {
        length: () => this.view.length,
        at: (i) => this.view[i],
        key: (ev) => `ev-${ev.id}`,
        render: (node, ev) => renderRow(node, ev),
        open: (ev) => this.onOpen(ev),
      },
      ROW,
      "activity stream: arrow keys move, Enter opens the event's detail",
    );
    this.sessionSel = el("select", { "aria-label": "filter by session", "data-testid": "filter-session" },
      el("option", { value: "" }, "all sessions"));
    this.kindSel = el("select", { "aria-label": "filter by kind", "data-testid": "filter-kind" },
      el("option", { value: "" }, "all kinds"), ...KINDS.map((k) => el("option", { value: k }, k)));
    this.decisionSel = el("select", { "aria-label": "filter by decision", "data-testid": "filter-decision" },
      el("option", { value: "" }, "all decisions"),
      ...["allow", "deny", "would_deny"].map((d) => el("option", { value: d }, d)));
    this.textIn = el("input", {
      type: "search", placeholder: "text (path, exe, comm, policy)",
      "aria-label": "filter by text", "data-testid": "filter-text",
    });
    this.sessionSel.addEventListener("change", () => {
      this.onSessionFilter(this.sessionSel.value);
      this.setFilter({ session: this.sessionSel.value });
    });
    this.kindSel.addEventListener("change", () => this.setFilter({ kind: this.kindSel.value }));
    this.decisionSel.addEventListener("change", () => this.setFilter({ decision: this.decisionSel.value }));
    const textChanged = debounce(250, () => this.setFilter({ text: this.textIn.value }));
    this.textIn.addEventListener("input", () => {
      // The list narrows at once; the server query follows the typing.
      this.filters.text = this.textIn.value;
      this.refilter();
      textChanged();
    });
    this.pauseBtn = el("button", {
      type: "button", "data-testid": "pause", "aria-pressed": "false",
      onclick: () => this.togglePause(),
    }, "Pause");
    this.root = el("section", { class: "panel stream", "aria-label": "activity stream", "data-testid": "stream" },
      el("div", { class: "toolbar", role: "toolbar", "aria-label": "stream filters" },
        this.sessionSel, this.kindSel, this.decisionSel, this.textIn, this.pauseBtn),
      el("div", { class: "listhead", "aria-hidden": "true" },
        el("span", { class: "c-time" }, "time"), el("span", { class: "c-sess" }, "session"),
        el("span", { class: "c-kind" }, "kind"), el("span", { class: "c-dec" }, "decision"),
        el("span", { class: "c-proc" }, "process"), el("span", { class: "c-target" }, "target")),
      this.list.scroller,
      el("div", { class: "streamfoot" }, this.status, this.countEl,
        el("span", { class: "muted" }, `keeps the newest ${MAX_EVENTS.toLocaleString("en")} events`)),
    );
  }

  /** The loaded events (for counts when the server has no /api/stats). */
  loaded(): readonly Ev[] {
    return this.all;
  }

  /** The session ids the session filter offers. */
  setSessions(ids: number[]): void {
    const cur = this.sessionSel.value;
    fill(this.sessionSel, el("option", { value: "" }, "all sessions"),
      ...ids.map((id) => el("option", { value: String(id) }, `s${id}`)));
    if (cur && !ids.includes(Number(cur))) this.sessionSel.append(el("option", { value: cur }, `s${cur}`));
    this.sessionSel.value = cur;
  }

  /** Changes filters; the list narrows at once, then reloads from the server. */
  setFilter(f: Partial<Filters>): void {
    Object.assign(this.filters, f);
    this.sessionSel.value = this.filters.session;
    this.kindSel.value = this.filters.kind;
    this.decisionSel.value = this.filters.decision;
    if (this.textIn.value !== this.filters.text) this.textIn.value = this.filters.text;
    this.refilter();
    void this.reload();
  }

  /** The server's filter parameters. */
  params(): Record<string, string> {
    const f = this.filters;
    return { session: f.session, kind: f.kind, decision: f.decision, grep: f.text };
  }

  /** Loads the newest page for the filters, then follows the live stream. */
  async reload(): Promise<void> {
    const gen = ++this.generation;
    this.source?.close();
    this.source = null;
    this.setStatus("loading…", "busy");
    const t0 = performance.now();
    let page: { events: Ev[]; last_id: number | null };
    try {
      page = await get(`/api/events${qs({ ...this.params(), limit: MAX_EVENTS })}`);
    } catch (e) {
      if (gen === this.generation) this.setStatus(`cannot load events: ${(e as Error).message}`, "error");
      return;
    }
    if (gen !== this.generation) return;
    this.all = page.events;
    this.buffer = [];
    this.pending = [];
    this.refilter();
    this.list.following = true;
    this.list.refresh();
    this.root.dataset.loadMs = String(Math.round(performance.now() - t0));
    this.onData();
    this.follow(gen, page.last_id ?? undefined);
  }

  private follow(gen: number, after?: number): void {
    const url = `/api/events/stream${qs({ ...this.params(), after_id: after })}`;
    const src = new EventSource(url);
    this.source = src;
    src.addEventListener("open", () => {
      if (gen === this.generation) this.setStatus(this.paused ? "paused" : "live", this.paused ? "paused" : "live");
    });
    src.addEventListener("event", (m) => {
      if (gen !== this.generation) return;
      let ev: Ev;
      try {
        ev = JSON.parse((m as MessageEvent<string>).data) as Ev;
      } catch {
        return;
      }
      if (this.paused) {
        this.buffer.push(ev);
        if (this.buffer.length > MAX_EVENTS) this.dropped += this.buffer.splice(0, this.buffer.length - MAX_EVENTS).length;
      } else this.pending.push(ev);
      // A burst (thousands of messages per poll) becomes one update.
      if (!this.flushTimer) this.flushTimer = window.setTimeout(() => this.flush(), 50);
    });
    src.addEventListener("stats", (m) => {
      if (gen !== this.generation) return;
      try {
        const detail = JSON.parse((m as MessageEvent<string>).data) as unknown;
        document.dispatchEvent(new CustomEvent("corral-stats", { detail }));
      } catch {
        // A malformed stats message changes nothing.
      }
    });
    src.addEventListener("error", (e) => {
      if (gen !== this.generation) return;
      // An `event: error` message from the server (a store failure) carries
      // its message; a connection problem carries none.
      const data = (e as MessageEvent<unknown>).data;
      if (typeof data === "string" && data) {
        this.setStatus(`live stream: ${data}`, "error");
        return;
      }
      // EventSource reconnects by itself (with Last-Event-ID); a 401 closes it.
      if (src.readyState === EventSource.CLOSED) {
        this.setStatus("live stream closed (is the token still valid? reload the page)", "error");
      } else this.setStatus("live stream interrupted: reconnecting…", "error");
    });
  }

  private flush(): void {
    this.flushTimer = 0;
    if (this.pending.length) {
      const evs = this.pending;
      this.pending = [];
      this.append(evs);
    }
    if (this.paused) this.updatePause();
  }

  /** New events from the stream. */
  append(evs: Ev[]): void {
    for (const ev of evs) this.all.push(ev);
    const over = this.all.length - MAX_EVENTS;
    let droppedView = 0;
    if (over > 0) {
      // Drop in chunks, not one by one (each splice moves the array).
      const n = Math.max(over, 1000);
      const gone = this.all.splice(0, n);
      this.dropped += gone.length;
      const lastGone = gone[gone.length - 1].id;
      while (droppedView < this.view.length && this.view[droppedView].id <= lastGone) droppedView++;
      this.view.splice(0, droppedView);
      this.list.droppedFront(droppedView);
    }
    for (const ev of evs) if (this.matches(ev)) this.view.push(ev);
    this.list.refresh();
    this.updateCount();
    this.onData();
  }

  private matches(ev: Ev): boolean {
    const f = this.filters;
    if (f.session && String(ev.session) !== f.session.replace(/^s/, "")) return false;
    if (f.kind && kindOf(ev) !== f.kind) return false;
    if (f.decision && ev.decision !== f.decision) return false;
    if (f.text && !haystack(ev).includes(f.text)) return false;
    return true;
  }

  private refilter(): void {
    this.view = this.all.filter((ev) => this.matches(ev));
    this.list.setActive(-1);
    this.list.refresh();
    this.updateCount();
  }

  private togglePause(): void {
    this.flush();
    this.paused = !this.paused;
    if (!this.paused && this.buffer.length) {
      const b = this.buffer;
      this.buffer = [];
      this.append(b);
    }
    this.updatePause();
    if (this.source) this.setStatus(this.paused ? "paused" : "live", this.paused ? "paused" : "live");
  }

  private updatePause(): void {
    this.pauseBtn.setAttribute("aria-pressed", String(this.paused));
    this.pauseBtn.textContent = this.paused
      ? `Resume${this.buffer.length ? ` (${this.buffer.length} new)` : ""}`
      : "Pause";
    this.pauseBtn.dataset.buffered = String(this.buffer.length);
  }

  private updateCount(): void {
    const dropped = this.dropped ? `; ${this.dropped.toLocaleString("en")} older dropped from view` : "";
    this.countEl.textContent = `${this.view.length.toLocaleString("en")} shown of ${this.all.length.toLocaleString("en")} loaded${dropped}`;
    this.countEl.dataset.shown = String(this.view.length);
    this.countEl.dataset.loaded = String(this.all.length);
  }

  private setStatus(text: string, cls: string): void {
    this.status.textContent = text;
    this.status.className = `status ${cls}`;
  }

  /** Focuses the list. */
  focus(): void {
    this.list.scroller.focus();
  }

  /** The list's scroller (tests and the frame-time probe scroll it). */
  scroller(): HTMLElement {
    return this.list.scroller;
  }
}

/** Fills a list row for an event. */
function renderRow(node: HTMLElement, ev: Ev): void {
  const dec = decisionLabel(ev);
  node.dataset.decision = ev.decision ?? "none";
  node.dataset.id = String(ev.id);
  node.setAttribute("aria-label", `event ${ev.id}: ${kindOf(ev)} ${dec} ${target(ev)}`);
  let cells = node.children;
  if (cells.length !== 6) {
    node.replaceChildren(
      el("span", { class: "c-time" }), el("span", { class: "c-sess" }), el("span", { class: "c-kind" }),
      el("span", { class: "c-dec" }), el("span", { class: "c-proc" }), el("span", { class: "c-target" }),
    );
    cells = node.children;
  }
  cells[0].textContent = clock(ev.wall_ns);
  cells[1].textContent = `s${ev.session}`;
  cells[2].textContent = ev.what.kind;
  cells[3].textContent = dec;
  cells[3].className = `c-dec d-${ev.decision ?? "none"}`;
  cells[4].textContent = `${ev.proc.comm}[${ev.proc.pid}]`;
  cells[5].textContent = target(ev);
}

export { ApiError };
