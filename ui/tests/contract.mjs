// The UI against the control API's newer routes, which a server may not
// have yet — sessions' live status and layers, suggest, apply, mode, stop:
// playwright's request interception answers them here with the API
// contract's shapes, so the UI's side is tested on its own. Everything
// else goes to the real server.
//   node contract.mjs URL
//   env: CORRAL_UI_EXPECT  events the store holds
// One JSON line per step on stdout (see lib.mjs).

import { Session, emit, hygiene, stepLoad, stepFilter, stepDetail, stepApply } from "./lib.mjs";

const url = process.argv[2];
if (!url) {
  console.error("usage: node contract.mjs http://127.0.0.1:PORT/?token=TOKEN");
  process.exit(2);
}
const expect = Number(process.env.CORRAL_UI_EXPECT || 1);
const RULE = '// drafted from event\n@id("allow-shadow")\npermit (principal, action == Action::"FileOpenReadOnly", resource == File::"/etc/shadow");';
const seen = { suggest: [], apply: [], mode: [], stop: [] };

let s;
const step = async (name, f) => {
  try {
    emit({ step: name, ok: true, ...(await f()) });
  } catch (e) {
    let screenshot = null;
    try { screenshot = await s.shot(`${name}-failed`); } catch { /* no page */ }
    emit({ step: name, ok: false, error: String(e?.message || e), screenshot });
  }
};

/** Routes the contract's newer endpoints; `sessions` marks s1 running with its policy. */
async function routeContract(page) {
  const json = (route, body, status = 200) => route.fulfill({ status, contentType: "application/json", body: JSON.stringify(body) });
  await page.route("**/api/sessions", async (route) => {
    const resp = await route.fetch();
    const rows = await resp.json();
    for (const r of rows) {
      r.running = r.id === 1;
      r.live = r.running ? { mode: r.mode, policy_label: r.policy_label, policy_sha256: r.policy_sha256 } : null;
      r.layers = ["fanotify", "cgroup_bpf", "proxy"];
    }
    await json(route, rows);
  });
  await page.route("**/api/policy/suggest", async (route) => {
    seen.suggest.push(route.request().postDataJSON());
    await json(route, { text: RULE });
  });
  await page.route("**/api/policy/apply", async (route) => {
    seen.apply.push(route.request().postDataJSON());
    await json(route, { results: [{ session: 1, ok: true, policy_sha256: "ab".repeat(32) }] });
  });
  await page.route("**/api/sessions/*/mode", async (route) => {
    seen.mode.push({ url: route.request().url(), body: route.request().postDataJSON() });
    await json(route, { ok: true, session: 1, principal: 'Agent::"a1"', mode: "shadow", policy_label: "policy.cedar", policy_sha256: "00" });
  });
  await page.route("**/api/sessions/*/stop", async (route) => {
    seen.stop.push({ url: route.request().url() });
    await json(route, { ok: false, error: "the session is already ending" });
  });
}

try {
  s = await Session.launch({ name: "contract" });
  // Every page the steps open gets the routes.
  const origNewPage = s.newPage.bind(s);
  s.newPage = async (...a) => {
    const p = await origNewPage(...a);
    await routeContract(p);
    return p;
  };
  await step("load", () => stepLoad(s, url, expect));
  await step("sessions", async () => {
    const page = s.page;
    await page.waitForSelector("[data-testid=session-1] [data-testid=session-mode-switch]", { timeout: 10000 });
    return page.evaluate(() => ({
      s1_status: document.querySelector("[data-testid=session-1] [data-testid=session-status]")?.textContent,
      s1_layers: document.querySelector("[data-testid=session-1] [data-testid=session-layers]")?.textContent,
      s2_actions: !!document.querySelector("[data-testid=session-2] [data-testid=session-stop]"),
    }));
  });
  await step("select-session", async () => {
    const page = s.page;
    await page.click("[data-testid=session-1] .session-pick");
    await page.waitForFunction(() => document.querySelector("[data-testid=policy-info]")?.textContent?.includes("s1"), null, { timeout: 10000 });
    await page.waitForTimeout(500);
    return page.evaluate(() => ({
      filter_session: document.querySelector("[data-testid=filter-session]").value,
      policy_info: document.querySelector("[data-testid=policy-info]").textContent,
      apply_reason: document.querySelector("[data-testid=apply-reason]").textContent,
    }));
  });
  await step("suggest", async () => {
    await stepFilter(s, { decision: "deny" }, "deny");
    const d = await stepDetail(s, "deny");
    await s.page.click("[data-testid=suggest-permit]");
    await s.page.waitForFunction(() => document.querySelector("[data-testid=side]")?.dataset.tab === "policy", null, { timeout: 10000 });
    await s.page.waitForFunction(() => !/validating/.test(document.querySelector("[data-testid=apply-reason]")?.textContent || "validating"), null, { timeout: 15000 });
    const r = await s.page.evaluate(() => ({
      editor_tail: [...document.querySelectorAll("[data-testid=policy-editor] .cm-line")].slice(-3).map((l) => l.textContent),
      apply_disabled: document.querySelector("[data-testid=apply]").disabled,
      apply_reason: document.querySelector("[data-testid=apply-reason]").textContent,
      errors: document.querySelector("[data-testid=policy-errors]").dataset.errors,
    }));
    return { event_id: d.event_id, requests: seen.suggest, ...r, screenshot: await s.shot("suggested") };
  });
  await step("diff", async () => {
    await s.page.click("[data-testid=diff-toggle]");
    await s.page.waitForTimeout(300);
    const r = await s.page.evaluate(() => ({
      inserted: document.querySelectorAll("[data-testid=policy-editor] .cm-insertedLine, [data-testid=policy-editor] .cm-changedLine").length,
      pressed: document.querySelector("[data-testid=diff-toggle]").getAttribute("aria-pressed"),
    }));
    const shot = await s.shot("diff");
    await s.page.click("[data-testid=diff-toggle]");
    return { ...r, screenshot: shot };
  });
  await step("apply", async () => ({ ...(await stepApply(s)), requests: seen.apply }));
  await step("mode", async () => {
    await s.page.click("[data-testid=session-1] [data-testid=session-mode-switch]");
    await s.page.waitForFunction(() => /now|refused|not switched/.test(document.querySelector("[data-testid=session-msg]")?.textContent || ""), null, { timeout: 10000 });
    return { msg: await s.page.textContent("[data-testid=session-msg]"), requests: seen.mode };
  });
  await step("stop", async () => {
    await s.page.click("[data-testid=session-1] [data-testid=session-stop]");
    await s.page.waitForFunction(() => /stopped|not stopped/.test(document.querySelector("[data-testid=session-msg]")?.textContent || ""), null, { timeout: 10000 });
    return { msg: await s.page.textContent("[data-testid=session-msg]"), requests: seen.stop, screenshot: await s.shot("stop") };
  });
  emit({ step: "hygiene", ok: true, ...hygiene(s), artifacts: s.dir });
  await s.close();
} catch (e) {
  emit({ step: "driver", ok: false, error: String(e?.stack || e) });
  try { await s?.close(); } catch { /* already gone */ }
  process.exit(1);
}
