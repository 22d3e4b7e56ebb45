// The control API client: same-origin fetch with the cookie, errors as
// exceptions that carry the server's `{"error": ...}` message and status.

/** A process as the server reports it. */
export interface Proc {
  pid: number;
  ppid: number;
  comm: string;
  exe?: string | null;
  argv?: string[] | null;
}

/** One audit event (the `corral events --json` shape). */
export interface Ev {
  id: number;
  session: number;
  principal: string;
  ts_ns: number;
  wall_ns: number;
  proc: Proc;
  what: { kind: string; [k: string]: unknown };
  decision?: "allow" | "deny" | "would_deny";
  layer: string;
  policies?: string[];
  policy_at?: string[];
  mcp_call?: string | null;
}

/** A session summary from `GET /api/sessions`. */
export interface Session {
  id: number;
  principal: string;
  policy_label: string;
  policy_sha256: string;
  mode: string;
  started_ns: number;
  command: string[];
  ended_ns: number | null;
  exit: number | null;
  lost: boolean | null;
  allowed: number;
  denied: number;
  would_deny: number;
  drops: number;
  running?: boolean;
  live?: { mode: string; policy_label: string; policy_sha256: string } | null;
  layers?: string[];
}

/** A policy diagnostic (corral_policy::Diagnostic). */
export interface Diagnostic {
  severity: "error" | "warning" | string;
  code?: string;
  message: string;
  file?: string | null;
  line?: number | null;
  col?: number | null;
  end_line?: number | null;
  end_col?: number | null;
  help?: string | null;
  policy?: string | null;
}

/** The policy a session runs. */
export interface Policy {
  session: number;
  label: string;
  sha256: string;
  text: string;
}

/** `GET /api/events/{id}`. */
export interface Detail {
  event: Ev;
  process: Proc[];
  policy: { label: string; sha256: string; text: string; lines: number[] } | null;
}

/** `GET /api/stats`. */
export interface Stats {
  by_kind: Record<string, number>;
  by_decision: Record<string, number>;
  drops: Record<string, number>;
  total: number;
}

/** An API failure: HTTP status and the server's message. */
export class ApiError extends Error {
  constructor(public status: number, message: string, public body?: unknown) {
    super(message);
  }
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  let r: Response;
  try {
    r = await fetch(path, {
      method,
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch (e) {
    throw new ApiError(0, `cannot reach corral: ${String(e)}`);
  }
  const text = await r.text();
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!r.ok) {
    const msg =
      json && typeof json === "object" && "error" in json
        ? String((json as { error: unknown }).error)
        : `${r.status} ${r.statusText}`;
    const hint = r.status === 404 && path.startsWith("/api/") && msg === "no such route"
      ? ` (this corral has no ${method} ${path.split("?")[0]} yet)`
      : "";
    throw new ApiError(r.status, `${method} ${path.split("?")[0]}: ${msg}${hint}`, json);
  }
  return json as T;
}

/** `GET` a JSON path. */
export const get = <T>(path: string) => call<T>("GET", path);
/** `POST` a JSON body. */
export const post = <T>(path: string, body: unknown) => call<T>("POST", path, body);

/** Builds a query string from the non-empty values. */
export function qs(params: Record<string, string | number | undefined | null>): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") u.set(k, String(v));
  }
  const s = u.toString();
  return s ? `?${s}` : "";
}

/** The style nonce the server put in the page (CodeMirror adds `<style>`
 * elements; the page's CSP allows only those that carry it). */
export function cspNonce(): string {
  return document.querySelector<HTMLMetaElement>("meta[name=corral-csp-nonce]")?.content ?? "";
}
