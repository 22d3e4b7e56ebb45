// How events read in the list and the detail: kind groups (the same as
// `corral events --kind`), a one-line target, times.

import type { Ev } from "./api";

/** The `--kind` group of an event's `what.kind` (corral_audit::kind_of). */
export function kindOf(ev: Ev): string {
  switch (ev.what.kind) {
    case "file_open": return "file";
    case "exec": return "exec";
    case "connect": case "bind": return "net";
    case "http": return "http";
    case "mcp": return "mcp";
    case "fork": case "exit": case "exec_trace": return "process";
    case "session_start": case "session_end": case "mode_change": return "session";
    case "policy_load": return "policy";
    default: return "other";
  }
}

/** The kinds the filter offers. */
export const KINDS = ["file", "exec", "net", "http", "mcp", "process", "session", "policy"];

const s = (v: unknown): string => (v === undefined || v === null ? "" : String(v));

/** What the event is about, in one line. */
export function target(ev: Ev): string {
  const w = ev.what as Record<string, unknown>;
  switch (ev.what.kind) {
    case "file_open": return `${s(w.access)} ${s(w.path)}`;
    case "exec": case "exec_trace":
      return Array.isArray(w.argv) && w.argv.length ? `${s(w.path)} [${(w.argv as unknown[]).map(s).join(" ")}]` : s(w.path);
    case "connect": {
      const ip = s(w.ip);
      return `${s(w.transport)} ${ip.includes(":") ? `[${ip}]` : ip}:${s(w.port)}`;
    }
    case "http": {
      const port = w.port === 443 || w.port === 80 ? "" : `:${s(w.port)}`;
      const st = w.status ? ` → ${s(w.status)}` : w.error ? ` ✗ ${s(w.error)}` : "";
      return `${s(w.method)} ${s(w.scheme)}://${s(w.host)}${port}${s(w.path)}${st}`;
    }
    case "mcp": return `${s(w.server)} ${s(w.method)}${w.tool ? ` ${s(w.tool)}` : ""}`;
    case "fork": return `child ${s(w.child)}`;
    case "exit": return `code ${s(w.code)}`;
    case "session_start": return `${s(w.mode)} ${Array.isArray(w.command) ? (w.command as unknown[]).map(s).join(" ") : ""}`;
    case "session_end": return s(w.exit);
    case "mode_change": return s(w.mode);
    case "policy_load": return `${s(w.label)}${w.error ? ` refused: ${s(w.error)}` : ""}`;
    case "lost": return `${s(w.count)} events lost`;
    default: return JSON.stringify(w);
  }
}

/** The text the text filter matches: what `corral events --grep` looks in
 * (target, exe, comm, policies), case-sensitive like it. */
export function haystack(ev: Ev): string {
  return `${target(ev)}\n${ev.proc.exe ?? ""}\n${ev.proc.comm}\n${(ev.policies ?? []).join(",")}`;
}

/** A wall-clock time as HH:MM:SS.mmm (local). */
export function clock(wallNs: number): string {
  const d = new Date(wallNs / 1e6);
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** A decision's label (`—` for observations). */
export function decisionLabel(ev: Ev): string {
  return ev.decision ?? "—";
}
