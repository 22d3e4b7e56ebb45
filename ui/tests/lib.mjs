// Steps for driving corral's control UI in Debian's chromium with
// playwright-core. Scenario scripts (smoke.mjs, frames.mjs) compose them;
// every step reports what it observed as one JSON line on stdout, and the
// Rust test (crates/corral-server/tests/browser.rs) asserts on those lines.
//
// Environment:
//   CORRAL_UI_TEST_NODE  where playwright-core is installed
//                        (default /var/cache/corral/ui-test/node)
//   CORRAL_CHROMIUM      the browser (default /usr/bin/chromium)
//   CORRAL_UI_ARTIFACTS  screenshot folder (default ./ui-artifacts)

import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const nodeDir = process.env.CORRAL_UI_TEST_NODE || "/var/cache/corral/ui-test/node";
const require = createRequire(join(nodeDir, "package.json"));

/** Loads playwright-core from CORRAL_UI_TEST_NODE (throws a clear error if absent). */
export function playwright() {
  try {
    return require("playwright-core");
  } catch (e) {
    throw new Error(`playwright-core is not installed under ${nodeDir} (scripts/deps.sh corral_ui_browser_deps): ${e.message}`);
  }
}

/** Prints one result line. */
export function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** Percentiles (p50, p95, p99, max, mean) of a list of numbers, rounded to 0.1. */
export function percentiles(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const at = (p) => (s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : 0);
  const r = (x) => Math.round(x * 10) / 10;
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : 0;
  return { n: s.length, p50: r(at(0.5)), p95: r(at(0.95)), p99: r(at(0.99)), max: r(s.length ? s[s.length - 1] : 0), mean: r(mean) };
}

/**
 * A browser session: one chromium, one context (cookies), one page, plus
 * what the page did that it should not (CSP violations, console errors,
 * requests to other origins, failed requests).
 */
export class Session {
  static async launch({ width = 1280, height = 800, artifacts, name = "ui" } = {}) {
    const { chromium } = playwright();
    // Chromium's own background traffic (updates, sync, safe browsing) is
    // off: the machine's network is closed, and the page's requests are
    // what the tests watch.
    const args = [
      "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-quic",
    ];
    const browser = await chromium.launch({ executablePath: process.env.CORRAL_CHROMIUM || "/usr/bin/chromium", args });
    const s = new Session(browser, artifacts || process.env.CORRAL_UI_ARTIFACTS || "ui-artifacts", name);
    await s.newPage(width, height);
    return s;
  }

  constructor(browser, artifacts, name) {
    this.browser = browser;
    this.dir = artifacts;
    this.name = name;
    this.shots = 0;
    this.cspViolations = [];
    this.consoleErrors = [];
    this.foreignRequests = [];
    this.failedRequests = [];
    this.origin = null;
    mkdirSync(this.dir, { recursive: true });
  }

  /** A fresh context (no cookies) and page. */
  async newPage(width = 1280, height = 800) {
    if (this.context) await this.context.close();
    this.context = await this.browser.newContext({ viewport: { width, height } });
    const page = await this.context.newPage();
    await page.addInitScript(() => {
      document.addEventListener("securitypolicyviolation", (e) => {
        console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
      });
    });
    page.on("console", (m) => {
      if (m.type() !== "error") return;
      const t = m.text();
      if (t.startsWith("CSP violation")) this.cspViolations.push(t);
      // The no-token and 401 checks load error statuses on purpose.
      else if (!/status of 40[14]/.test(t)) this.consoleErrors.push(t);
    });
    page.on("pageerror", (e) => this.consoleErrors.push(`pageerror: ${e.message}`));
    // "Stop session sN?" and the like: a test that clicks means it.
    page.on("dialog", (d) => void d.accept());
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (this.origin && u.origin !== this.origin && u.protocol !== "data:") this.foreignRequests.push(r.url());
    });
    page.on("requestfailed", (r) => {
      // EventSource streams are aborted when a page closes or filters change.
      if (!r.url().includes("/api/events/stream")) this.failedRequests.push(`${r.url()}: ${r.failure()?.errorText}`);
    });
    this.page = page;
    return page;
  }

  /** Saves a screenshot `NN-step.png`; returns its path. */
  async shot(step) {
    this.shots += 1;
    const path = join(this.dir, `${String(this.shots).padStart(2, "0")}-${step}.png`);
    await this.page.screenshot({ path });
    return path;
  }

  async close() {
    await this.browser.close();
  }
}

/** Opens the UI without the token: what the page says and what the API answers. */
export async function stepNoToken(s, base) {
  const page = await s.newPage();
  const resp = await page.goto(base);
  const text = (await page.textContent("body")) || "";
  const api = await page.evaluate(async () => (await fetch("/api/health")).status);
  return { status: resp?.status() ?? 0, says_token: /access token/i.test(text), api_status: api, screenshot: await s.shot("no-token") };
}

/** Opens the banner URL (sets the cookie) and waits until `expect` events are loaded. */
export async function stepLoad(s, url, expect, timeoutMs = 60000) {
  const page = await s.newPage();
  s.origin = new URL(url).origin;
  const t0 = Date.now();
  await page.goto(url);
  await page.waitForFunction(
    (n) => Number(document.querySelector("[data-testid=stream-count]")?.dataset.loaded || 0) >= n,
    expect, { timeout: timeoutMs });
  const ms = Date.now() - t0;
  await page.waitForSelector(".vrow:not([hidden])");
  const info = await page.evaluate(() => ({
    loaded: Number(document.querySelector("[data-testid=stream-count]").dataset.loaded),
    fetch_ms: Number(document.querySelector("[data-testid=stream]").dataset.loadMs || 0),
    rows_in_dom: document.querySelectorAll(".vrow").length,
    status: document.querySelector("[data-testid=stream-status]")?.textContent,
    title: document.title,
  }));
  return { ...info, load_ms: ms, screenshot: await s.shot("load") };
}

/**
 * Frame intervals (ms between requestAnimationFrame callbacks) over
 * `windowMs`, while `during` (run in the page, optional) acts on each
 * frame with its progress 0..1.
 */
export async function measureFrames(page, windowMs, during = null) {
  const deltas = await page.evaluate(({ windowMs, during }) => new Promise((done) => {
    const act = during ? new Function("p", during) : null;
    const out = [];
    let start = 0;
    let last = 0;
    const tick = (t) => {
      if (!start) start = t;
      else out.push(t - last);
      last = t;
      const p = Math.min(1, (t - start) / windowMs);
      if (act) act(p);
      if (p < 1) requestAnimationFrame(tick);
      else done(out);
    };
    requestAnimationFrame(tick);
  }), { windowMs, during });
  return percentiles(deltas);
}

/** Scrolls the event list from top to bottom over `ms`, measuring frame times. */
export async function stepScroll(s, ms = 3000) {
  const page = s.page;
  await page.evaluate(() => {
    const l = document.querySelector("[data-testid=event-list]");
    l.scrollTop = 0;
  });
  await page.waitForTimeout(100);
  const frames = await measureFrames(page, ms,
    "const l = document.querySelector('[data-testid=event-list]'); l.scrollTop = p * (l.scrollHeight - l.clientHeight);");
  await page.waitForTimeout(100);
  const ids = await visibleIds(page);
  return { frames, last_visible_id: Math.max(...ids), visible_rows: ids.length, screenshot: await s.shot("scrolled-to-end") };
}

/** The ids of the rows in the list's visible area. */
export async function visibleIds(page) {
  return page.evaluate(() => {
    const l = document.querySelector("[data-testid=event-list]").getBoundingClientRect();
    return [...document.querySelectorAll(".vrow:not([hidden])")]
      .filter((r) => { const b = r.getBoundingClientRect(); return b.bottom > l.top && b.top < l.bottom; })
      .map((r) => Number(r.dataset.id));
  });
}

/** The visible rows' decisions and kinds. */
async function visibleRows(page) {
  return page.evaluate(() => {
    const l = document.querySelector("[data-testid=event-list]").getBoundingClientRect();
    return [...document.querySelectorAll(".vrow:not([hidden])")]
      .filter((r) => { const b = r.getBoundingClientRect(); return b.bottom > l.top && b.top < l.bottom; })
      .map((r) => ({ id: Number(r.dataset.id), decision: r.dataset.decision, kind: r.children[2]?.textContent, target: r.children[5]?.textContent }));
  });
}

/** Waits until the server reload for the current filters settles (stream live again). */
async function settle(page) {
  await page.waitForTimeout(400);
  await page.waitForFunction(() => /live|paused/.test(document.querySelector("[data-testid=stream-status]")?.className || ""), null, { timeout: 30000 });
}

/** Sets filters ({session, kind, decision, text}); returns counts and the visible rows. */
export async function stepFilter(s, f, label) {
  const page = s.page;
  if (f.session !== undefined) await page.selectOption("[data-testid=filter-session]", f.session);
  if (f.kind !== undefined) await page.selectOption("[data-testid=filter-kind]", f.kind);
  if (f.decision !== undefined) await page.selectOption("[data-testid=filter-decision]", f.decision);
  if (f.text !== undefined) await page.fill("[data-testid=filter-text]", f.text);
  await settle(page);
  const c = await page.evaluate(() => document.querySelector("[data-testid=stream-count]").dataset);
  return { filter: f, shown: Number(c.shown), loaded: Number(c.loaded), rows: (await visibleRows(page)).slice(0, 50), screenshot: await s.shot(`filter-${label}`) };
}

/**
 * Opens the detail of the first visible row with `decision` (and `text`,
 * when given, in the row) by a click; reports what it shows.
 */
export async function stepDetail(s, decision = "deny", text = null) {
  const page = s.page;
  let rows = page.locator(`.vrow[data-decision=${decision}]:not([hidden])`);
  if (text) rows = rows.filter({ hasText: text });
  const row = rows.first();
  const id = Number(await row.getAttribute("data-id"));
  await row.click();
  await page.waitForSelector("[data-testid=detail-id]", { timeout: 15000 });
  await page.waitForSelector("[data-testid=deciding-line]", { timeout: 15000 }).catch(() => null);
  const d = await page.evaluate(() => {
    const q = (t) => document.querySelector(`[data-testid=${t}]`);
    const line = q("deciding-line");
    let lineNo = null;
    if (line) {
      // The line number: count the lines before it in the editor's content.
      const lines = [...line.parentElement.querySelectorAll(".cm-line")];
      lineNo = lines.indexOf(line) + 1;
      const view = line.closest(".cm-editor");
      const gutter = view?.querySelectorAll(".cm-lineNumbers .cm-gutterElement");
      const top = line.getBoundingClientRect().top;
      for (const g of gutter || []) if (Math.abs(g.getBoundingClientRect().top - top) < 2) lineNo = Number(g.textContent);
    }
    const box = line?.closest(".cm-scroller")?.getBoundingClientRect();
    const lb = line?.getBoundingClientRect();
    return {
      detail_id: q("detail-id")?.textContent,
      target: q("detail-target")?.textContent,
      decision: q("detail-decision")?.textContent,
      layer: q("detail-layer")?.textContent,
      note: q("detail-note")?.textContent ?? null,
      process_rows: [...(q("detail-process")?.querySelectorAll("tbody tr") || [])].map((r) => [...r.children].map((c) => c.textContent)),
      policy_lines: q("detail-policy")?.dataset.lines ?? null,
      deciding_line: lineNo,
      deciding_text: line?.textContent ?? null,
      deciding_line_in_view: !!(box && lb && lb.top >= box.top && lb.bottom <= box.bottom),
      tab: document.querySelector("[data-testid=side]")?.dataset.tab,
    };
  });
  return { event_id: id, ...d, screenshot: await s.shot("detail") };
}

/** Shows the policy tab, appends `line` at the end of the editor by typing, waits for validation. */
export async function stepEditorType(s, line) {
  const page = s.page;
  await page.click("[data-testid=tab-policy]");
  const content = page.locator("[data-testid=policy-editor] .cm-content");
  await content.click();
  await page.keyboard.press("Control+End");
  const before = await page.evaluate(() => document.querySelectorAll("[data-testid=policy-editor] .cm-line").length);
  await page.keyboard.press("Enter");
  // Type without auto-indent surprises: insertText is one input, like a paste.
  await page.keyboard.insertText(line);
  const typedLine = await page.evaluate(() => {
    const sel = getSelection();
    const el = sel?.anchorNode?.parentElement?.closest(".cm-line");
    const lines = [...document.querySelectorAll("[data-testid=policy-editor] .cm-line")];
    return el ? lines.indexOf(el) + 1 : null;
  });
  await page.waitForFunction(() => !/validating/.test(document.querySelector("[data-testid=apply-reason]")?.textContent || "validating"), null, { timeout: 15000 });
  await page.waitForTimeout(200);
  const r = await page.evaluate(() => {
    const q = (t) => document.querySelector(`[data-testid=${t}]`);
    return {
      errors: [...q("policy-errors").querySelectorAll("li.error")].map((li) => ({ line: Number(li.dataset.line), text: li.textContent })),
      lint_marks: document.querySelectorAll("[data-testid=policy-editor] .cm-lintRange-error").length,
      apply_disabled: q("apply").disabled,
      apply_reason: q("apply-reason").textContent,
    };
  });
  return { lines_before: before, typed_line: typedLine, ...r, screenshot: await s.shot("editor-typo") };
}

/** Clicks Apply (if enabled) and reports the per-session result. */
export async function stepApply(s) {
  const page = s.page;
  const disabled = await page.locator("[data-testid=apply]").isDisabled();
  if (!disabled) {
    await page.click("[data-testid=apply]");
    await page.waitForFunction(() => !/applying/.test(document.querySelector("[data-testid=apply-result]")?.textContent || ""), null, { timeout: 30000 });
  }
  const result = await page.evaluate(() => [...document.querySelectorAll("[data-testid=apply-result] li")].map((li) => ({ ok: li.dataset.ok === "true", text: li.textContent })));
  const text = await page.textContent("[data-testid=apply-result]");
  return { clicked: !disabled, results: result, text, screenshot: await s.shot("apply") };
}

/** Resizes the window; reports whether the stream is visible and where panels are. */
export async function stepViewport(s, width, height, label) {
  const page = s.page;
  await page.setViewportSize({ width, height });
  await page.waitForTimeout(300);
  const r = await page.evaluate(() => {
    const box = (t) => {
      const b = document.querySelector(`[data-testid=${t}]`)?.getBoundingClientRect();
      return b ? { x: Math.round(b.x), y: Math.round(b.y), w: Math.round(b.width), h: Math.round(b.height) } : null;
    };
    return {
      stream: box("stream"), list: box("event-list"), side: box("side"), sessions: box("sessions"),
      page_width: document.documentElement.scrollWidth,
      rows_visible: [...document.querySelectorAll(".vrow:not([hidden])")].filter((r) => {
        const l = document.querySelector("[data-testid=event-list]").getBoundingClientRect();
        const b = r.getBoundingClientRect();
        return b.bottom > l.top && b.top < l.bottom;
      }).length,
    };
  });
  return { width, height, ...r, screenshot: await s.shot(label) };
}

/** Keyboard only: Tab until the list has focus, ArrowDown, Enter (detail), Esc (closed). */
export async function stepKeyboard(s) {
  const page = s.page;
  await page.evaluate(() => document.activeElement?.blur());
  await page.evaluate(() => window.scrollTo(0, 0));
  let tabs = 0;
  let onList = false;
  while (tabs < 40 && !onList) {
    await page.keyboard.press("Tab");
    tabs += 1;
    onList = await page.evaluate(() => document.activeElement?.dataset.testid === "event-list");
  }
  const focusVisible = await page.evaluate(() => {
    const a = document.activeElement;
    return a ? getComputedStyle(a).outlineStyle !== "none" : false;
  });
  await page.keyboard.press("Home");
  await page.keyboard.press("ArrowDown");
  const active = await page.evaluate(() => {
    const l = document.activeElement;
    const id = l?.getAttribute("aria-activedescendant");
    return id ? Number(document.getElementById(id)?.dataset.id) : null;
  });
  await page.keyboard.press("Enter");
  await page.waitForSelector("[data-testid=detail-id]", { timeout: 15000 }).catch(() => null);
  const opened = await page.evaluate(() => ({
    tab: document.querySelector("[data-testid=side]")?.dataset.tab,
    detail: document.querySelector("[data-testid=detail-id]")?.textContent ?? null,
  }));
  const shotOpen = await s.shot("keyboard-detail");
  await page.keyboard.press("Escape");
  await page.waitForTimeout(100);
  const closed = await page.evaluate(() => ({
    tab: document.querySelector("[data-testid=side]")?.dataset.tab,
    detail: document.querySelector("[data-testid=detail-id]")?.textContent ?? null,
    focus: document.activeElement?.dataset.testid ?? null,
  }));
  return { tabs, on_list: onList, focus_outline: focusVisible, active_id: active, opened, closed, screenshots: [shotOpen, await s.shot("keyboard-closed")] };
}

/** What the page did that it should not have. */
export function hygiene(s) {
  return { csp_violations: s.cspViolations, console_errors: s.consoleErrors, foreign_requests: s.foreignRequests, failed_requests: s.failedRequests };
}

/** The number of loaded events and of events buffered while paused. */
async function counts(page) {
  return page.evaluate(() => ({
    loaded: Number(document.querySelector("[data-testid=stream-count]")?.dataset.loaded || 0),
    buffered: Number(document.querySelector("[data-testid=pause]")?.dataset.buffered || 0),
  }));
}

/**
 * Live events: prints `{"step": signal}` (the caller then stores `n`
 * events), and reports how long until all `n` arrived in the list and
 * whether the list followed them to the end.
 */
export async function stepLive(s, n, signal, timeoutMs = 10000) {
  const page = s.page;
  const before = (await counts(page)).loaded;
  emit({ step: signal, ok: true, loaded: before });
  const t0 = Date.now();
  await page.waitForFunction((want) => Number(document.querySelector("[data-testid=stream-count]")?.dataset.loaded || 0) >= want,
    before + n, { timeout: timeoutMs });
  const ms = Date.now() - t0;
  await page.waitForTimeout(100);
  const ids = await visibleIds(page);
  return { before, after: (await counts(page)).loaded, arrived_ms: ms, last_visible_id: Math.max(...ids), screenshot: await s.shot("live") };
}

/**
 * Pause: clicks Pause, prints `{"step": signal}` (the caller stores `n`
 * events), waits until they are buffered, reports the button, resumes and
 * reports the list.
 */
export async function stepPause(s, n, signal, timeoutMs = 10000) {
  const page = s.page;
  await page.click("[data-testid=pause]");
  const before = await counts(page);
  emit({ step: signal, ok: true, loaded: before.loaded });
  await page.waitForFunction((want) => Number(document.querySelector("[data-testid=pause]")?.dataset.buffered || 0) >= want,
    n, { timeout: timeoutMs });
  const paused = { ...(await counts(page)), button: await page.textContent("[data-testid=pause]"), status: await page.textContent("[data-testid=stream-status]") };
  const shot = await s.shot("paused");
  await page.click("[data-testid=pause]");
  const resumed = { ...(await counts(page)), button: await page.textContent("[data-testid=pause]") };
  return { before, paused, resumed, screenshots: [shot, await s.shot("resumed")] };
}
