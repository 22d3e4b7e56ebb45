// Frame times of the UI over a window, for the benchmark "UI frame time
// while N events/s stream in" (the caller feeds the events).
//   node frames.mjs URL [WINDOW_MS]
//   env: CORRAL_UI_EXPECT  events to wait for before measuring (default 0)
// Prints {"step":"frames", frames:{n,p50,p95,p99,max,mean}, received}.

import { Session, emit, measureFrames, stepLoad } from "./lib.mjs";

const url = process.argv[2];
const windowMs = Number(process.argv[3] || 10000);
if (!url) {
  console.error("usage: node frames.mjs URL [WINDOW_MS]");
  process.exit(2);
}
const s = await Session.launch({ name: "frames" });
try {
  emit({ step: "load", ok: true, ...(await stepLoad(s, url, Number(process.env.CORRAL_UI_EXPECT || 0))) });
  const loaded = () => s.page.evaluate(() => Number(document.querySelector("[data-testid=stream-count]").dataset.loaded));
  const before = await loaded();
  const frames = await measureFrames(s.page, windowMs);
  const after = await loaded();
  emit({ step: "frames", ok: true, window_ms: windowMs, frames, received: after - before, screenshot: await s.shot("frames") });
} catch (e) {
  emit({ step: "frames", ok: false, error: String(e?.message || e) });
} finally {
  await s.close();
}
