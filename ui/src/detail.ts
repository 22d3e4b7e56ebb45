// The event detail panel: the event, its process chain (pid, exe, argv,
// parents), target, decision, layer, and the deciding policy at its
// source line; "allow this" / "forbid this".
//
// Source: `GET /api/events/{id}`. When this server has no such route
// (an older corral), the panel says so and falls back to the event it
// has and the session's current policy (`GET /api/policy`).

import { ApiError, Detail, Ev, Policy, Proc, get } from "./api";
import { el, fill } from "./dom";
import { clock, decisionLabel, kindOf, target } from "./format";
import { policyView } from "./readonly";
import type { EditorView } from "@codemirror/view";

/** The detail panel. */
export class DetailPanel {
  readonly root: HTMLElement;
  private readonly body = el("div", { class: "detail-body" });
  private view: EditorView | null = null;
  private current: Ev | null = null;
  private seq = 0;
  /** "allow this" / "forbid this". */
  onSuggest: (ev: Ev, effect: "permit" | "forbid") => void = () => {};
  /** The close button or Esc. */
  onClose: () => void = () => {};

  constructor() {
    this.root = el("section", { class: "detail", "aria-label": "event detail", "data-testid": "detail" },
      el("div", { class: "panelhead" },
        el("h2", { id: "detail-title" }, "Event detail"),
        el("button", { type: "button", "aria-label": "close the event detail (Esc)", "data-testid": "detail-close",
          onclick: () => this.onClose() }, "✕")),
      this.body);
    this.clear();
  }

  /** The event shown, if any. */
  event(): Ev | null {
    return this.current;
  }

  /** Shows nothing. */
  clear(): void {
    this.current = null;
    this.view?.destroy();
    this.view = null;
    fill(this.body, el("p", { class: "muted" }, "Select an event (click, or Enter on a row) to see its process, target, decision and the policy line that decided it."));
  }

  /** Loads and shows an event's detail. */
  async show(ev: Ev): Promise<void> {
    const seq = ++this.seq;
    this.current = ev;
    fill(this.body, el("p", { class: "muted", role: "status" }, `loading event ${ev.id}…`));
    let detail: Detail;
    let note: string | null = null;
    try {
      detail = await get<Detail>(`/api/events/${ev.id}`);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 404 || !e.message.includes("no such route")) {
        if (seq === this.seq) this.renderError(ev, e as Error);
        return;
      }
      note = "This corral has no GET /api/events/{id}: the process chain is the event's own process, " +
        "and the policy is the session's current one (it may differ from the one that decided).";
      detail = { event: ev, process: [ev.proc], policy: await this.fallbackPolicy(ev) };
    }
    if (seq !== this.seq) return;
    this.render(detail, note);
  }

  private async fallbackPolicy(ev: Ev): Promise<Detail["policy"]> {
    try {
      const p = await get<Policy>(`/api/policy?session=${ev.session}`);
      const lines = (ev.policy_at ?? [])
        .map((at) => at.match(/^(.*):(\d+)$/))
        .filter((m): m is RegExpMatchArray => m !== null && m[1] === p.label)
        .map((m) => Number(m[2]));
      return { label: p.label, sha256: p.sha256, text: p.text, lines };
    } catch {
      return null;
    }
  }

  private renderError(ev: Ev, e: Error): void {
    fill(this.body, el("p", { class: "error", role: "alert", "data-testid": "detail-error" },
      `cannot load event ${ev.id}: ${e.message}`));
  }

  private render(d: Detail, note: string | null): void {
    const ev = d.event;
    this.view?.destroy();
    this.view = null;
    const policyBox = el("div", { class: "policybox", "data-testid": "detail-policy" });
    const decision = decisionLabel(ev);
    fill(this.body,
      note ? el("p", { class: "note", "data-testid": "detail-note" }, note) : null,
      el("dl", { class: "kv" },
        el("dt", {}, "event"), el("dd", { "data-testid": "detail-id" }, `${ev.id} · ${clock(ev.wall_ns)} · s${ev.session} · ${ev.principal}`),
        el("dt", {}, "kind"), el("dd", {}, `${kindOf(ev)} (${ev.what.kind})`),
        el("dt", {}, "target"), el("dd", { "data-testid": "detail-target", class: "mono" }, target(ev)),
        el("dt", {}, "decision"), el("dd", { "data-testid": "detail-decision", class: `d-${ev.decision ?? "none"}` }, decision),
        el("dt", {}, "layer"), el("dd", { "data-testid": "detail-layer" }, ev.layer),
        el("dt", {}, "policies"), el("dd", { class: "mono" }, (ev.policies ?? []).join(", ") || "—"),
        el("dt", {}, "at"), el("dd", { class: "mono" }, (ev.policy_at ?? []).join(", ") || "—"),
      ),
      el("h3", {}, "Process chain"),
      procTable(d.process),
      ev.decision ? el("div", { class: "actions" },
        el("button", { type: "button", "data-testid": "suggest-permit", onclick: () => this.onSuggest(ev, "permit") }, "Allow this"),
        el("button", { type: "button", "data-testid": "suggest-forbid", onclick: () => this.onSuggest(ev, "forbid") }, "Forbid this"),
      ) : null,
      el("h3", {}, d.policy ? `Deciding policy: ${d.policy.label}` : "Deciding policy"),
      policyBox,
    );
    if (!d.policy) {
      fill(policyBox, el("p", { class: "muted" }, ev.decision ? "the policy text is not in the store" : "an observation: no policy decided it"));
      return;
    }
    policyBox.dataset.lines = d.policy.lines.join(",");
    this.view = policyView(policyBox, d.policy.text, d.policy.lines);
  }
}

function procTable(procs: Proc[]): HTMLElement {
  return el("table", { class: "procs", "data-testid": "detail-process" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "pid"), el("th", { scope: "col" }, "ppid"),
      el("th", { scope: "col" }, "exe"), el("th", { scope: "col" }, "argv"))),
    el("tbody", {}, ...procs.map((p, i) => el("tr", {},
      el("td", {}, `${"↳ ".repeat(i ? 1 : 0)}${p.pid}`), el("td", {}, String(p.ppid)),
      el("td", { class: "mono" }, p.exe ?? p.comm),
      el("td", { class: "mono" }, p.argv ? p.argv.join(" ") : "—")))));
}
