// The UI scenario the Rust browser test runs: no token, load with the
// token, live events arriving (and held while paused), scroll to the end of many events, filters, detail with the policy
// line, a typo in the editor, a narrow window, keyboard only.
//   node smoke.mjs URL
//   env: CORRAL_UI_EXPECT  number of events the store holds (default 1)
//        CORRAL_UI_LIVE    events the caller stores after each of the
//                          `signal-live` and `signal-pause` lines (default 5)
//        CORRAL_UI_TYPO    a line to append that has an error
// One JSON line per step on stdout; exit 0 even when a step observed a
// failure (the caller asserts), 1 when the driver itself failed.

import { Session, emit, hygiene, stepDetail, stepLive, stepPause, stepEditorType, stepFilter, stepKeyboard, stepLoad, stepNoToken, stepScroll, stepViewport } from "./lib.mjs";

const url = process.argv[2];
if (!url || !url.includes("token=")) {
  console.error("usage: node smoke.mjs http://127.0.0.1:PORT/?token=TOKEN");
  process.exit(2);
}
const expect = Number(process.env.CORRAL_UI_EXPECT || 1);
const typo = process.env.CORRAL_UI_TYPO || 'permit (principal, action, resourse);';
const base = new URL(url).origin + "/";

let s;
const step = async (name, f) => {
  const t0 = Date.now();
  try {
    emit({ step: name, ok: true, ms: Date.now() - t0, ...(await f()) });
  } catch (e) {
    let screenshot = null;
    try { screenshot = await s.shot(`${name}-failed`); } catch { /* no page */ }
    emit({ step: name, ok: false, error: String(e?.message || e), screenshot });
  }
};

try {
  s = await Session.launch({ name: "smoke" });
  await step("no-token", () => stepNoToken(s, base));
  await step("load", () => stepLoad(s, url, expect));
  // The caller stores CORRAL_UI_LIVE events on each signal line.
  const live = Number(process.env.CORRAL_UI_LIVE || 5);
  await step("live", () => stepLive(s, live, "signal-live"));
  await step("pause", () => stepPause(s, live, "signal-pause"));
  await step("scroll", () => stepScroll(s, 3000));
  await step("filter-deny", () => stepFilter(s, { decision: "deny" }, "deny"));
  await step("filter-kind-text", () => stepFilter(s, { decision: "", kind: "exec", text: "git" }, "exec-git"));
  await step("filter-session", () => stepFilter(s, { kind: "", text: "", session: "2" }, "session-2"));
  await step("filter-clear", () => stepFilter(s, { session: "" }, "clear"));
  await step("detail", async () => {
    await stepFilter(s, { decision: "deny" }, "deny-for-detail");
    return stepDetail(s, "deny");
  });
  await step("editor-typo", () => stepEditorType(s, typo));
  await step("narrow", () => stepViewport(s, 400, 800, "narrow"));
  await step("wide", () => stepViewport(s, 1280, 800, "wide"));
  await step("keyboard", () => stepKeyboard(s));
  emit({ step: "hygiene", ok: true, ...hygiene(s), artifacts: s.dir });
  await s.close();
} catch (e) {
  emit({ step: "driver", ok: false, error: String(e?.stack || e) });
  try { await s?.close(); } catch { /* already gone */ }
  process.exit(1);
}
