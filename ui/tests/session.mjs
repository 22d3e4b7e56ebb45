// The acceptance walk-through against a real session, driven by
// crates/corral-cli/tests/ui_browser.rs. The test runs a session that
// reads a file its policy forbids each time it is told to; this script
// and the test take turns over stdin/stdout:
//
//   argv: URL  TARGET  FORBID_LINE  ALLOWED_POLICY_FILE  TYPO
//   -> {"step":"ready"}        test: make the session read TARGET (denied)
//   <- "go"
//   -> {"step":"live", ...}    the denied event arrived; latency measured
//   -> {"step":"detail", ...}  its detail shows the forbid at FORBID_LINE
//   -> {"step":"apply", ...}   the editor holds ALLOWED_POLICY_FILE, applied
//   -> {"step":"applied"}      test: make the session read TARGET again
//   <- "go"
//   -> {"step":"allowed", ...} the allowed event arrived
//   -> {"step":"typo", ...}    TYPO appended: error at its line, Apply off,
//                               and the API refuses it (422)
//   -> {"step":"started", ...} a session started from the sessions form
//   -> {"step":"hygiene", ...}
import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import { createInterface } from "node:readline";
import { Session, emit, stepLoad, stepDetail, stepEditorType, stepApply, stepFilter, hygiene } from "./lib.mjs";

const [url, target, forbidLine, allowedFile, typo] = process.argv.slice(2);
// Closed at the end: an open stdin would keep node running.
const rl = createInterface({ input: process.stdin });
const lines = rl[Symbol.asyncIterator]();
async function waitGo() {
  const l = await lines.next();
  if (l.done || l.value.trim() !== "go") throw new Error(`expected "go" on stdin, got ${JSON.stringify(l.value)}`);
}

/**
 * Waits (polling on every animation frame) for a row with `decision` whose
 * text contains `target`; reports when it appeared, against the event's
 * own wall-clock time (the decision's time as the pipeline stamped it).
 */
async function waitRow(s, decision, label) {
  const page = s.page;
  const t0 = Date.now();
  const handle = await page.waitForFunction(({ decision, target }) => {
    for (const r of document.querySelectorAll(`.vrow[data-decision=${decision}]:not([hidden])`)) {
      if (r.textContent.includes(target)) return { id: Number(r.dataset.id), seen_ms: Date.now() };
    }
    return null;
  }, { decision, target }, { timeout: 15000, polling: "raf" });
  const { id, seen_ms } = await handle.jsonValue();
  const ev = await page.evaluate(async (id) => (await (await fetch(`/api/events/${id}`)).json()).event, id);
  const latency = ev && ev.wall_ns ? seen_ms - ev.wall_ns / 1e6 : null;
  return { id, waited_ms: Date.now() - t0, latency_ms: latency === null ? null : Math.round(latency * 10) / 10, screenshot: await s.shot(label) };
}

const s = await Session.launch({ name: "session" });
// Each line also says how many CSP violations the page had by then.
const out = (o) => emit({ ...o, csp_so_far: s.cspViolations.length });
try {
  const load = await stepLoad(s, url, 0);
  out({ step: "load", ...load });
  out({ step: "ready" });
  await waitGo();
  out({ step: "live", ...(await waitRow(s, "deny", "live-denied")) });

  // Show denials only (the session keeps producing allowed events, and a
  // list that follows them would move the row away), open its detail.
  const page = s.page;
  const denials = await stepFilter(s, { decision: "deny" }, "denied");
  out({ step: "filter", shown: denials.shown, rows: denials.rows.length });
  const detail = await stepDetail(s, "deny", target);
  out({ step: "detail", want_line: Number(forbidLine), ...detail });

  // Edit: the whole text replaced by the allowed policy (as a paste).
  await page.click("[data-testid=tab-policy]");
  const before = await page.textContent("[data-testid=policy-info]");
  await page.locator("[data-testid=policy-editor] .cm-content").click();
  // Select all and delete (the editor's own commands), then paste: typing
  // over a selection would let Chrome's native editing keep the old
  // text's styles as inline style attributes, which the CSP refuses.
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Backspace");
  await page.keyboard.insertText(readFileSync(allowedFile, "utf8"));
  await page.waitForFunction(() => {
    const b = document.querySelector("[data-testid=apply]");
    return b && !b.disabled;
  }, null, { timeout: 15000 });
  await s.shot("edited");
  const apply = await stepApply(s);
  out({ step: "apply", policy_info: before, ...apply });
  // All decisions again, to see the next read allowed.
  await stepFilter(s, { decision: "" }, "all");
  out({ step: "applied" });
  await waitGo();
  out({ step: "allowed", ...(await waitRow(s, "allow", "live-allowed")) });

  const typoStep = await stepEditorType(s, typo);
  // What the editor holds now: the allowed text, a new line, the typo.
  const text = `${readFileSync(allowedFile, "utf8")}\n${typo}`;
  const api = await page.evaluate(async (text) => {
    const r = await fetch("/api/policy/apply", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text, sessions: [] }) });
    return { status: r.status, body: await r.json() };
  }, text);
  out({ step: "typo", ...typoStep, api_status: api.status, api_error_lines: (api.body.diagnostics || []).map((d) => d.line) });
  // Start a session from the form (the project is the test's directory,
  // the policy the allowed one).
  await page.click("[data-testid=sessions-new]");
  await page.fill("[data-testid=start-command]", "echo from-the-ui-form");
  await page.fill("[data-testid=start-project]", dirname(allowedFile));
  await page.fill("[data-testid=start-policy]", allowedFile);
  await page.click("[data-testid=start-submit]");
  await page.waitForFunction(() => /started|not started/.test(document.querySelector("[data-testid=session-msg]")?.textContent || ""),
    null, { timeout: 30000 });
  out({ step: "started", msg: await page.textContent("[data-testid=session-msg]"), screenshot: await s.shot("started") });
  out({ step: "hygiene", ...hygiene(s) });
} catch (e) {
  out({ step: "error", error: String(e && e.stack || e) });
  await s.shot("error").catch(() => {});
  process.exitCode = 1;
} finally {
  rl.close();
  await s.close();
}
