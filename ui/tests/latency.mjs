// Decision-to-browser latency, for the benchmark (crates/corral-cli/benches/ui.rs).
//   node latency.mjs URL COUNT [TIMEOUT_MS]
// Opens the UI, prints {"step":"ready","offset_ns":...} (the caller then
// makes a session produce COUNT denied events), and notes, on every
// animation frame, the wall-clock time each new denied row appears. Each
// event's kernel timestamp (ts_ns, CLOCK_MONOTONIC) is turned into wall
// time with offset_ns (wall - monotonic, read here: node's hrtime is
// CLOCK_MONOTONIC). Prints {"step":"latency", n, latency:{p50,p99,...}, per_event:[...]}.
import { Session, emit, percentiles, stepLoad } from "./lib.mjs";

const [url, countArg, timeoutArg] = process.argv.slice(2);
const count = Number(countArg || 100);
const timeoutMs = Number(timeoutArg || 60000);
const s = await Session.launch({ name: "latency" });
try {
  await stepLoad(s, url, 0);
  const offsetNs = BigInt(Date.now()) * 1000000n - process.hrtime.bigint();
  await s.page.evaluate(() => {
    window.__seen = new Map();
    const tick = () => {
      const now = Date.now();
      for (const r of document.querySelectorAll(".vrow[data-decision=deny]:not([hidden])")) {
        const id = Number(r.dataset.id);
        if (!window.__seen.has(id)) window.__seen.set(id, now);
      }
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  emit({ step: "ready", offset_ns: offsetNs.toString() });
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    const n = await s.page.evaluate(() => window.__seen.size);
    if (n >= count) break;
    await s.page.waitForTimeout(100);
  }
  const seen = await s.page.evaluate(() => [...window.__seen.entries()]);
  const per = [];
  for (const [id, at] of seen) {
    const ev = await s.page.evaluate(async (id) => (await (await fetch(`/api/events/${id}`)).json()).event, id);
    if (!ev || ev.ts_ns === undefined) continue;
    const decidedMs = Number((BigInt(ev.ts_ns) + offsetNs) / 1000n) / 1000;
    per.push({ id, ms: Math.round((at - decidedMs) * 10) / 10 });
  }
  emit({ step: "latency", ok: true, n: per.length, latency: percentiles(per.map((p) => p.ms)), per_event: per });
} catch (e) {
  emit({ step: "latency", ok: false, error: String(e?.stack || e) });
  process.exitCode = 1;
} finally {
  await s.close();
}
