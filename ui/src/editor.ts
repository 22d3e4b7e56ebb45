// The policy editor: CodeMirror 6 with Cedar highlighting, validation as
// you type (POST /api/policy/validate → lint diagnostics and an error
// list), a diff against the running policy (@codemirror/merge), and Apply
// (POST /api/policy/apply) to the running sessions that use the policy,
// refused while the text has errors.

import { Compartment, EditorState, Text } from "@codemirror/state";
import { EditorView, keymap, lineNumbers, highlightActiveLine, drawSelection } from "@codemirror/view";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { searchKeymap, highlightSelectionMatches } from "@codemirror/search";
import { syntaxHighlighting, defaultHighlightStyle, bracketMatching } from "@codemirror/language";
import { linter, lintGutter, Diagnostic as CmDiagnostic, forceLinting } from "@codemirror/lint";
import { unifiedMergeView } from "@codemirror/merge";
import { ApiError, Diagnostic, Policy, Session, cspNonce, get, post } from "./api";
import { el, fill } from "./dom";
import { cedar } from "./cedar";

/** The policy loaded into the editor, as the sessions run it. */
interface Running {
  session: number | null;
  label: string;
  sha256: string;
  text: string;
}

/** A position in `doc` for a 1-based line and column (clamped). */
function pos(doc: Text, line?: number | null, col?: number | null): number {
  const l = doc.line(Math.min(Math.max(line ?? 1, 1), doc.lines));
  return Math.min(l.from + Math.max((col ?? 1) - 1, 0), l.to);
}

/** The policy editor panel. */
export class PolicyEditor {
  readonly root: HTMLElement;
  private readonly view: EditorView;
  private readonly diffMode = new Compartment();
  private running: Running | null = null;
  private sessions: Session[] = [];
  private diagnostics: Diagnostic[] = [];
  private validating = false;
  private validated = "";
  private validateError: string | null = null;
  private diffOn = false;
  private readonly title = el("h2", { id: "policy-title" }, "Policy");
  private readonly info = el("p", { class: "muted", "data-testid": "policy-info" });
  private readonly errors = el("ul", { class: "errors", "data-testid": "policy-errors", "aria-label": "policy problems" });
  private readonly applyBtn: HTMLButtonElement;
  private readonly diffBtn: HTMLButtonElement;
  private readonly reason = el("span", { class: "muted", "data-testid": "apply-reason", role: "status" });
  private readonly result = el("div", { class: "apply-result", "data-testid": "apply-result", "aria-live": "polite" });

  constructor() {
    const box = el("div", { class: "editorbox", "data-testid": "policy-editor" });
    this.view = new EditorView({
      parent: box,
      state: EditorState.create({
        doc: "",
        extensions: [
          EditorView.cspNonce.of(cspNonce()),
          lineNumbers(),
          history(),
          drawSelection(),
          highlightActiveLine(),
          bracketMatching(),
          highlightSelectionMatches(),
          cedar,
          syntaxHighlighting(defaultHighlightStyle),
          linter((v) => this.lint(v), { delay: 400 }),
          lintGutter(),
          keymap.of([...defaultKeymap, ...historyKeymap, ...searchKeymap, indentWithTab]),
          this.diffMode.of([]),
          EditorView.contentAttributes.of({ "aria-label": "policy editor (Cedar); Esc then Tab leaves the editor" }),
          EditorView.updateListener.of((u) => {
            if (u.docChanged) {
              // Until the linter has checked this text, Apply waits.
              this.validating = true;
              this.updateApply();
            }
          }),
        ],
      }),
    });
    this.applyBtn = el("button", { type: "button", class: "primary", "data-testid": "apply", onclick: () => void this.apply() }, "Apply");
    this.diffBtn = el("button", { type: "button", "data-testid": "diff-toggle", "aria-pressed": "false",
      onclick: () => this.toggleDiff() }, "Diff vs running");
    this.root = el("section", { class: "editor", "aria-labelledby": "policy-title", "data-testid": "policy" },
      el("div", { class: "panelhead" }, this.title),
      this.info,
      el("div", { class: "toolbar" }, this.applyBtn, this.diffBtn,
        el("button", { type: "button", "data-testid": "revert", onclick: () => this.revert() }, "Revert"), this.reason),
      box,
      this.errors,
      this.result);
    this.updateApply();
  }

  /** The editor's text. */
  text(): string {
    return this.view.state.doc.toString();
  }

  /** Replaces the editor's text. */
  setText(text: string): void {
    this.view.dispatch({ changes: { from: 0, to: this.view.state.doc.length, insert: text } });
  }

  /** The sessions list changed (Apply's targets). */
  setSessions(s: Session[]): void {
    this.sessions = s;
    this.updateApply();
  }

  /** Loads the policy a session runs now (`last`: the newest session). */
  async load(session: number | "last"): Promise<void> {
    fill(this.result);
    try {
      const p = await get<Policy>(`/api/policy?session=${session}`);
      this.running = { session: p.session, label: p.label, sha256: p.sha256, text: p.text };
      this.title.textContent = `Policy: ${p.label}`;
      this.info.textContent = `running in s${p.session} (sha256 ${p.sha256.slice(0, 12)}…)`;
      this.setText(p.text);
      this.setDiff(this.diffOn);
    } catch (e) {
      this.info.textContent = `no policy loaded: ${(e as Error).message}`;
    }
    this.updateApply();
  }

  /** Appends a drafted rule and puts the cursor on it. */
  appendRule(rule: string): void {
    const doc = this.view.state.doc;
    const sep = doc.length === 0 || doc.toString().endsWith("\n\n") ? "" : doc.toString().endsWith("\n") ? "\n" : "\n\n";
    const insert = `${sep}${rule.endsWith("\n") ? rule : `${rule}\n`}`;
    this.view.dispatch({
      changes: { from: doc.length, insert },
      selection: { anchor: doc.length + sep.length },
      scrollIntoView: true,
    });
    this.view.focus();
  }

  /** Focuses the editor. */
  focus(): void {
    this.view.focus();
  }

  private async lint(v: EditorView): Promise<CmDiagnostic[]> {
    const text = v.state.doc.toString();
    this.validating = true;
    this.updateApply();
    let res: { ok: boolean; diagnostics: Diagnostic[] };
    try {
      res = await post("/api/policy/validate", { text, name: this.running?.label ?? "policy.cedar" });
      this.validateError = null;
    } catch (e) {
      this.validateError = (e as Error).message;
      res = { ok: false, diagnostics: [] };
    }
    if (v.state.doc.toString() !== text) return []; // stale: a newer run follows
    this.diagnostics = res.diagnostics;
    this.validated = text;
    this.validating = false;
    this.renderErrors();
    this.updateApply();
    const doc = v.state.doc;
    return res.diagnostics.map((d) => {
      const from = pos(doc, d.line, d.col);
      let to = d.end_line ? pos(doc, d.end_line, d.end_col) : doc.lineAt(from).to;
      if (to <= from) to = Math.min(from + 1, doc.length);
      return {
        from, to,
        severity: d.severity === "error" ? "error" : d.severity === "warning" ? "warning" : "info",
        message: d.help ? `${d.message} (${d.help})` : d.message,
        source: d.code,
      };
    });
  }

  private errorCount(): number {
    return this.diagnostics.filter((d) => d.severity === "error").length;
  }

  private renderErrors(): void {
    if (this.validateError) {
      fill(this.errors, el("li", { class: "error" }, `cannot validate: ${this.validateError}`));
      return;
    }
    fill(this.errors, ...this.diagnostics.map((d) => {
      const where = d.line ? `line ${d.line}${d.col ? `:${d.col}` : ""}` : "";
      return el("li", { class: d.severity === "error" ? "error" : "warning", "data-line": d.line ?? "" },
        el("button", { type: "button", class: "link", onclick: () => this.goto(d) },
          `${d.severity}${where ? ` at ${where}` : ""}: ${d.message}`));
    }));
    this.errors.dataset.errors = String(this.errorCount());
  }

  private goto(d: Diagnostic): void {
    const at = pos(this.view.state.doc, d.line, d.col);
    this.view.dispatch({ selection: { anchor: at }, scrollIntoView: true });
    this.view.focus();
  }

  /** The running sessions that use the loaded policy. */
  private targets(): Session[] {
    const sha = this.running?.sha256;
    if (!sha) return [];
    return this.sessions.filter((s) => s.running && (s.live?.policy_sha256 ?? s.policy_sha256) === sha);
  }

  private updateApply(): void {
    const errs = this.errorCount();
    const targets = this.targets();
    let why = "";
    if (this.validating || this.validated !== this.text()) why = "validating…";
    else if (this.validateError) why = "cannot validate, so cannot apply";
    else if (errs) why = `fix ${errs} error${errs > 1 ? "s" : ""} first`;
    else if (!this.running) why = "no policy loaded";
    else if (!targets.length) why = "no running session uses this policy";
    else if (this.text() === this.running.text) why = "no changes";
    else why = `applies to ${targets.map((s) => `s${s.id}`).join(", ")}`;
    const can = why.startsWith("applies");
    this.applyBtn.disabled = !can;
    this.applyBtn.setAttribute("aria-disabled", String(!can));
    this.reason.textContent = why;
  }

  private async apply(): Promise<void> {
    const targets = this.targets();
    if (this.applyBtn.disabled || !this.running) return;
    const text = this.text();
    this.applyBtn.disabled = true;
    fill(this.result, el("p", { role: "status" }, "applying…"));
    try {
      const r = await post<{ results: { session: number; ok: boolean; error?: string; policy_sha256?: string }[] }>(
        "/api/policy/apply", { text, label: this.running.label, sessions: targets.map((s) => s.id) });
      fill(this.result, el("ul", {}, ...r.results.map((x) => el("li", { class: x.ok ? "ok" : "error", "data-ok": String(x.ok) },
        x.ok ? `s${x.session}: applied${x.policy_sha256 ? ` (sha256 ${x.policy_sha256.slice(0, 12)}…)` : ""}` : `s${x.session}: refused: ${x.error ?? "no reason given"}`))));
      const ok = r.results.find((x) => x.ok && x.policy_sha256);
      if (ok?.policy_sha256) this.running = { ...this.running, sha256: ok.policy_sha256, text };
    } catch (e) {
      const body = e instanceof ApiError ? (e.body as { diagnostics?: Diagnostic[] } | null) : null;
      if (body?.diagnostics) {
        this.diagnostics = body.diagnostics;
        this.renderErrors();
      }
      fill(this.result, el("p", { class: "error", role: "alert" }, `not applied: ${(e as Error).message}`));
    }
    this.updateApply();
    forceLinting(this.view);
  }

  private revert(): void {
    if (this.running) this.setText(this.running.text);
  }

  private setDiff(on: boolean): void {
    this.diffOn = on;
    this.diffBtn.setAttribute("aria-pressed", String(on));
    this.view.dispatch({
      effects: this.diffMode.reconfigure(on && this.running
        ? unifiedMergeView({ original: this.running.text, mergeControls: false, gutter: true })
        : []),
    });
  }

  private toggleDiff(): void {
    if (!this.running) {
      fill(this.result, el("p", { class: "error" }, "no running policy to compare with"));
      return;
    }
    this.setDiff(!this.diffOn);
  }
}
