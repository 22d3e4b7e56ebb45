// Counts per kind and decision, and drop counters, for the stream's
// session filter: `GET /api/stats` (and SSE `stats` messages when the
// server sends them). When this server has no /api/stats, the counts are
// computed over the loaded events and the drops summed from the sessions.

import { ApiError, Ev, Session, Stats, get, qs } from "./api";
import { el, fill } from "./dom";
import { kindOf } from "./format";

/** The counts bar. */
export class StatsBar {
  readonly root = el("div", { class: "stats", "data-testid": "stats", "aria-label": "event counts", role: "group" });
  private local = false;
  private last: Stats | null = null;

  /** Fetches the server's counts; false when the server has none (then use `fromLoaded`). */
  async refresh(session: string): Promise<boolean> {
    if (this.local) return false;
    try {
      this.show(await get<Stats>(`/api/stats${qs({ session })}`), false);
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404 && e.message.includes("no such route")) {
        this.local = true;
        return false;
      }
      fill(this.root, el("span", { class: "error" }, `counts unavailable: ${(e as Error).message}`));
      return true;
    }
  }

  /** True when counts come from the loaded events. */
  isLocal(): boolean {
    return this.local;
  }

  /** Counts over the loaded events (no /api/stats on this server). */
  fromLoaded(evs: readonly Ev[], sessions: Session[], session: string): void {
    const s: Stats = { by_kind: {}, by_decision: { allow: 0, deny: 0, would_deny: 0, none: 0 }, drops: {}, total: evs.length };
    for (const ev of evs) {
      const k = kindOf(ev);
      s.by_kind[k] = (s.by_kind[k] ?? 0) + 1;
      const d = ev.decision ?? "none";
      s.by_decision[d] = (s.by_decision[d] ?? 0) + 1;
    }
    const drops = sessions.filter((x) => !session || String(x.id) === session).reduce((a, x) => a + (x.drops ?? 0), 0);
    if (drops) s.drops["all reasons"] = drops;
    this.show(s, true);
  }

  /** A `stats` message from the live stream. */
  fromStream(s: Stats): void {
    this.show(s, false);
  }

  private show(s: Stats, local: boolean): void {
    this.last = s;
    const chip = (label: string, n: number, cls = "", id = "") =>
      el("span", { class: `chip ${cls}`, "data-testid": id || undefined, "data-count": n }, `${label} ${n.toLocaleString("en")}`);
    const drops = Object.entries(s.drops);
    const dropTotal = drops.reduce((a, [, n]) => a + n, 0);
    fill(this.root,
      chip("total", s.total, "", "count-total"),
      ...Object.entries(s.by_decision).map(([d, n]) => chip(d, n, `d-${d}`, `count-decision-${d}`)),
      el("span", { class: "sep", "aria-hidden": "true" }, "|"),
      ...Object.entries(s.by_kind).sort().map(([k, n]) => chip(k, n, "", `count-kind-${k}`)),
      el("span", { class: "sep", "aria-hidden": "true" }, "|"),
      el("span", { class: `chip ${dropTotal ? "d-deny" : ""}`, "data-testid": "count-drops", "data-count": dropTotal,
        title: drops.map(([r, n]) => `${r}: ${n}`).join("\n") || "no events dropped" },
        `dropped ${dropTotal.toLocaleString("en")}${drops.length > 1 ? ` (${drops.map(([r, n]) => `${r} ${n}`).join(", ")})` : ""}`),
      local ? el("span", { class: "muted", "data-testid": "stats-local" }, "(over loaded events: this corral has no /api/stats)") : null,
    );
  }

  /** The last counts shown. */
  current(): Stats | null {
    return this.last;
  }
}
