// The sessions view: running and past sessions with principal, mode (and
// the enforce/shadow switch), layers, counts and stop; a form that starts a
// session (POST /api/sessions), which "Run again" fills from a past one.
// Selecting a session filters the stream and loads its policy into the
// editor.

import { Session, get, post } from "./api";
import { el, fill } from "./dom";

/** The sessions panel. */
export class SessionsPanel {
  readonly root: HTMLElement;
  private readonly list = el("div", { class: "sessions-list", role: "list", "data-testid": "sessions-list" });
  private readonly msg = el("p", { class: "muted", "data-testid": "session-msg", role: "status" });
  private readonly cmd = el("input", { type: "text", id: "start-command", "data-testid": "start-command",
    placeholder: "command, e.g. make test", autocomplete: "off" });
  private readonly project = el("input", { type: "text", id: "start-project", "data-testid": "start-project",
    placeholder: "/absolute/project/dir", autocomplete: "off" });
  private readonly policy = el("input", { type: "text", id: "start-policy", "data-testid": "start-policy",
    placeholder: "policy file (optional)", autocomplete: "off" });
  private readonly shadow = el("input", { type: "checkbox", id: "start-shadow", "data-testid": "start-shadow" });
  private readonly form = el("form", { class: "start-form", "data-testid": "start-form", hidden: true,
    "aria-label": "Start a session" },
    el("label", { for: "start-command" }, "Command (run with sh -c)"), this.cmd,
    el("label", { for: "start-project" }, "Project directory"), this.project,
    el("label", { for: "start-policy" }, "Policy file"), this.policy,
    el("label", { class: "check" }, this.shadow, " shadow (block nothing)"),
    el("div", { class: "session-actions" },
      el("button", { type: "submit", "data-testid": "start-submit" }, "Start"),
      el("button", { type: "button", onclick: () => this.toggleForm(false) }, "Cancel")));
  private rows: Session[] = [];
  private selected: number | null = null;
  /** A session was selected (null: all sessions). */
  onSelect: (id: number | null) => void = () => {};
  /** The sessions were (re)loaded. */
  onLoad: (s: Session[]) => void = () => {};

  constructor() {
    this.root = el("section", { class: "panel sessions", "aria-labelledby": "sessions-title", "data-testid": "sessions" },
      el("div", { class: "panelhead" }, el("h2", { id: "sessions-title" }, "Sessions"),
        el("button", { type: "button", "data-testid": "sessions-all", onclick: () => this.select(null) }, "All"),
        el("button", { type: "button", "data-testid": "sessions-new", onclick: () => this.toggleForm(true) }, "New")),
      this.form, this.msg, this.list);
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      void this.start();
    });
  }

  /** The loaded sessions. */
  all(): Session[] {
    return this.rows;
  }

  /** Reloads the list. */
  async refresh(): Promise<void> {
    try {
      this.rows = await get<Session[]>("/api/sessions");
    } catch (e) {
      this.msg.textContent = `cannot list sessions: ${(e as Error).message}`;
      this.msg.className = "error";
      return;
    }
    if (this.msg.className === "error" && this.msg.textContent?.startsWith("cannot list")) {
      this.msg.textContent = "";
      this.msg.className = "muted";
    }
    this.render();
    this.onLoad(this.rows);
  }

  /** Marks a session selected (null: none) and tells the app. */
  select(id: number | null, notify = true): void {
    this.selected = id;
    this.render();
    if (notify) this.onSelect(id);
  }

  private render(): void {
    // Newest first; the focused row keeps its focus across refreshes.
    const focusedId = (document.activeElement as HTMLElement | null)?.closest<HTMLElement>(".session")?.dataset.session;
    const focusedCls = (document.activeElement as HTMLElement | null)?.dataset.role;
    const rows = [...this.rows].sort((a, b) => b.id - a.id);
    fill(this.list, ...(rows.length ? rows.map((s) => this.row(s)) : [el("p", { class: "muted" }, "no sessions recorded yet")]));
    if (focusedId) {
      const sel = `.session[data-session="${focusedId}"]${focusedCls ? ` [data-role="${focusedCls}"]` : ""}`;
      this.list.querySelector<HTMLElement>(sel)?.focus();
    }
  }

  private row(s: Session): HTMLElement {
    const running = s.running === true;
    const mode = s.live?.mode ?? s.mode;
    const status = running ? "running"
      : s.ended_ns !== null ? `ended${s.exit !== null ? `, exit ${s.exit}` : ""}`
      : s.lost ? "lost" : s.running === false ? "not running" : "state unknown";
    const sel = this.selected === s.id;
    const other = mode === "shadow" ? "enforce" : "shadow";
    const row = el("div", {
      class: `session${sel ? " selected" : ""}`, role: "listitem", "data-session": s.id, "data-testid": `session-${s.id}`,
    },
      el("button", {
        type: "button", class: "session-pick", "data-role": "pick", "aria-pressed": String(sel),
        "aria-label": `session s${s.id}, ${s.principal}, ${status}: show its events and policy`,
        onclick: () => this.select(sel ? null : s.id),
      },
        el("span", { class: "sid" }, `s${s.id}`), " ",
        el("span", { class: "principal" }, s.principal), " ",
        el("span", { class: `badge ${running ? "on" : ""}`, "data-testid": "session-status" }, status)),
      el("div", { class: "session-meta" },
        el("span", { class: `badge mode-${mode}`, "data-testid": "session-mode" }, mode), " ",
        el("span", { class: "muted" }, `allow ${s.allowed} · deny ${s.denied} · would ${s.would_deny}${s.drops ? ` · drops ${s.drops}` : ""}`),
        s.layers && s.layers.length ? el("div", { class: "muted", "data-testid": "session-layers" }, `layers: ${s.layers.join(", ")}`) : null,
        el("div", { class: "muted mono", title: s.command.join(" ") }, s.command.join(" ")),
      ),
      running ? el("div", { class: "session-actions" },
        el("button", { type: "button", "data-role": "mode", "data-testid": "session-mode-switch",
          onclick: () => void this.setMode(s, other) }, `Switch to ${other}`),
        el("button", { type: "button", "data-role": "stop", class: "danger", "data-testid": "session-stop",
          onclick: () => void this.stop(s) }, "Stop"))
        : el("div", { class: "session-actions" },
          el("button", { type: "button", "data-role": "again", "data-testid": "session-again",
            onclick: () => this.again(s) }, "Run again…")),
    );
    return row;
  }

  private async setMode(s: Session, mode: string): Promise<void> {
    this.say(`s${s.id}: switching to ${mode}…`, "muted");
    try {
      const r = await post<{ ok: boolean; error?: string; mode?: string }>(`/api/sessions/${s.id}/mode`, { mode });
      this.say(r.ok ? `s${s.id}: now ${r.mode ?? mode}` : `s${s.id}: refused: ${r.error ?? "no reason given"}`, r.ok ? "ok" : "error");
    } catch (e) {
      this.say(`s${s.id}: mode not switched: ${(e as Error).message}`, "error");
    }
    await this.refresh();
  }

  private async stop(s: Session): Promise<void> {
    if (!window.confirm(`Stop session s${s.id} (${s.command.join(" ")})?`)) return;
    this.say(`s${s.id}: stopping…`, "muted");
    try {
      const r = await post<{ ok: boolean; error?: string }>(`/api/sessions/${s.id}/stop`, {});
      this.say(r.ok ? `s${s.id}: stopped` : `s${s.id}: not stopped: ${r.error ?? "no reason given"}`, r.ok ? "ok" : "error");
    } catch (e) {
      this.say(`s${s.id}: not stopped: ${(e as Error).message}`, "error");
    }
    await this.refresh();
  }

  /** Shows (with focus in the command) or hides the start form. */
  private toggleForm(show: boolean): void {
    this.form.hidden = !show;
    if (show) this.cmd.focus();
  }

  /** Fills the start form from a past session (its project is not recorded: the user names it). */
  private again(s: Session): void {
    const c = s.command;
    this.cmd.value = c.length === 3 && c[0] === "sh" && c[1] === "-c" ? c[2] : c.map(quote).join(" ");
    this.toggleForm(true);
    if (!this.project.value) this.project.focus();
  }

  private async start(): Promise<void> {
    const command = this.cmd.value.trim();
    const project = this.project.value.trim();
    if (!command || !project) {
      this.say("a command and a project directory are needed", "error");
      return;
    }
    const policy = this.policy.value.trim();
    this.say("starting…", "muted");
    try {
      const r = await post<{ session: number; pid: number; log: string }>("/api/sessions", {
        command: ["sh", "-c", command], project, policy: policy || null, shadow: this.shadow.checked,
      });
      this.say(`s${r.session}: started (pid ${r.pid}; output in ${r.log})`, "ok");
      this.toggleForm(false);
    } catch (e) {
      this.say(`not started: ${(e as Error).message}`, "error");
    }
    await this.refresh();
  }

  private say(text: string, cls: string): void {
    this.msg.textContent = text;
    this.msg.className = cls;
  }
}

/** A word as sh reads it back. */
function quote(w: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, "'\\''")}'`;
}
