#!/usr/bin/env python3
"""Sends raw bytes to an MCP server, for the tests that try to get
malformed traffic past corral (duplicate keys, batches, odd unicode, wrong
content types, oversized messages). Standard library only.

stdio: spawn a command, do the initialize handshake, write the given lines
to its stdin, print every line it writes to stdout:

    raw.py stdio [--no-init] [--line TEXT]... [--hex HEX]... [--lines-file FILE]
                 [--expect N] [--wait SECS] -- CMD [ARGS...]

  The lines are written in the order given (--line, then --hex, then the
  file's lines), each followed by "\\n". Every line the server writes is
  printed to stdout as it arrives, byte for byte (the handshake's answer
  too). Reading stops after N lines following the handshake (--expect), or
  when nothing arrived for --wait seconds (default 2), or at EOF. Then stdin
  is closed and the command's exit status goes to stderr as
  `raw.py: exit status N` (or `killed`, when it had to be killed).

http: POST bodies to a streamable HTTP endpoint and print each answer:

    raw.py http [--init] [--header 'K: V']... [--body TEXT]... [--body-hex HEX]...
                [--body-file FILE]... [--method POST] [--timeout SECS] URL

  Without a body, a method other than POST sends one empty request.
  --init first sends `initialize` and `notifications/initialized` and then
  sends each body with the session's `Mcp-Session-Id` and
  `MCP-Protocol-Version`. Defaults, each replaced by a --header of the same
  name: `Content-Type: application/json`, `Accept: application/json,
  text/event-stream`. One JSON line per exchange:
  {"request": "initialize"|"initialized"|"raw", "status": 200,
   "content_type": "...", "session_id": ..., "body": "...", "timed_out": false}
  The body is read until the server ends it or --timeout (default 5)
  passes without data; it is decoded as UTF-8 with replacement characters.

Exit status: 0 when everything was sent; 1 when it could not be (cannot
spawn, cannot connect, handshake failed); 2 on bad usage.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import ssl
import subprocess
import sys
import time
import urllib.parse

PROTOCOL = "2025-11-25"
INIT = {
    "jsonrpc": "2.0",
    "id": "raw-init",
    "method": "initialize",
    "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "raw.py", "version": "0"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


class Failed(Exception):
    """Could not send: exit 1."""


class Usage(Exception):
    """Bad command line: exit 2."""


def jline(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def from_hex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError as e:
        raise Usage(f"{what} `{text[:40]}`: not hex: {e}") from e


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise Usage(f"{path}: {e.strerror}") from e


# ---- stdio ----------------------------------------------------------------


class LineReader:
    """Lines from a pipe, with a deadline on each read."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False

    def next(self, timeout: float) -> bytes | None:
        """The next line (without "\\n"), or None at EOF or when `timeout`
        passes without a complete line."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line


def drain(reader: LineReader, deadline: float) -> None:
    """Prints lines until EOF or the deadline."""
    while not reader.eof and (left := deadline - time.monotonic()) > 0:
        line = reader.next(min(left, 0.2))
        if line is not None:
            out(line + b"\n")
    if reader.eof:
        while (line := reader.next(0)) is not None:
            out(line + b"\n")


def run_stdio(ns: argparse.Namespace) -> int:
    lines = [t.encode() for t in ns.line] + [from_hex(h, "--hex") for h in ns.hex]
    if ns.lines_file:
        data = read_file(ns.lines_file)
        lines += data[:-1].split(b"\n") if data.endswith(b"\n") else data.split(b"\n")
    cmd = ns.cmd[1:] if ns.cmd and ns.cmd[0] == "--" else ns.cmd
    if not cmd:
        raise Usage("stdio needs the command: raw.py stdio [options] -- CMD [ARGS...]")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    except OSError as e:
        raise Failed(f"cannot run `{cmd[0]}`: {e.strerror}") from e
    assert proc.stdin is not None and proc.stdout is not None
    reader = LineReader(proc.stdout.fileno())
    try:
        try:
            if not ns.no_init:
                proc.stdin.write(jline(INIT))
                proc.stdin.flush()
                deadline = time.monotonic() + ns.timeout
                while True:
                    line = reader.next(max(0.0, deadline - time.monotonic()))
                    if line is None:
                        raise Failed("no answer to `initialize`")
                    out(line + b"\n")
                    try:
                        if json.loads(line).get("id") == INIT["id"]:
                            break
                    except (ValueError, AttributeError):
                        pass
                proc.stdin.write(jline(INITIALIZED))
                proc.stdin.flush()
            for line in lines:
                proc.stdin.write(line + b"\n")
            proc.stdin.flush()
        except BrokenPipeError:
            print("raw.py: the command closed its stdin", file=sys.stderr)
        got = 0
        while ns.expect is None or got < ns.expect:
            line = reader.next(ns.wait)
            if line is None:
                break
            out(line + b"\n")
            got += 1
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        # What it writes until it exits (reading, so that it cannot block
        # on a full pipe), for at most 3 seconds.
        drain(reader, time.monotonic() + 3)
        try:
            status = str(proc.wait(timeout=0.5))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            status = "killed"
        drain(reader, time.monotonic() + 1)
        print(f"raw.py: exit status {status}", file=sys.stderr)
    return 0


# ---- http -----------------------------------------------------------------


def parse_headers(items: list[str]) -> list[tuple[str, str]]:
    headers = []
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise Usage(f"--header `{item}`: expected `Name: value`")
        headers.append((name.strip(), value.strip()))
    return headers


def exchange(ns, method: str, url: str, body: bytes, extra: list[tuple[str, str]], label: str) -> dict:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Usage(f"`{url}`: expected an http:// or https:// URL")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=ns.timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=ns.timeout)
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    given = {k.lower() for k, _ in extra}
    headers = {k: v for k, v in headers.items() if k.lower() not in given}
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in list(headers.items()) + extra:
            conn.putheader(k, v)
        if not any(k.lower() == "content-length" for k, _ in extra):
            conn.putheader("Content-Length", str(len(body)))
        try:
            conn.endheaders(body)
        except (BrokenPipeError, ConnectionResetError):
            # The server answered (and closed) before taking the whole
            # body, e.g. 413 for an oversized one: read that answer.
            pass
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException) as e:
        raise Failed(f"{label}: {method} {url}: {type(e).__name__}: {e}") from e
    data, timed_out = b"", False
    try:
        while chunk := resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536):
            data += chunk
    except TimeoutError:
        timed_out = True
    except (OSError, http.client.HTTPException) as e:
        data += f"\n[raw.py: reading the body failed: {type(e).__name__}: {e}]".encode()
    finally:
        conn.close()
    return {
        "request": label,
        "status": resp.status,
        "content_type": resp.getheader("Content-Type"),
        "session_id": resp.getheader("Mcp-Session-Id"),
        "body": data.decode("utf-8", errors="replace"),
        "timed_out": timed_out,
    }


def sse_or_json_id(answer: dict, want: str) -> bool:
    """Whether an answer carries the JSON-RPC response with id `want`."""
    body = answer["body"]
    texts = [body]
    if (answer["content_type"] or "").startswith("text/event-stream"):
        texts = [ln[5:].strip() for ln in body.splitlines() if ln.startswith("data:")]
    for text in texts:
        try:
            if json.loads(text).get("id") == want:
                return True
        except (ValueError, AttributeError):
            continue
    return False


def run_http(ns: argparse.Namespace) -> int:
    if len(ns.cmd) != 1:
        raise Usage("http needs exactly one URL")
    url = ns.cmd[0]
    bodies = [b.encode() for b in ns.body] + [from_hex(h, "--body-hex") for h in ns.body_hex]
    bodies += [read_file(p) for p in ns.body_file]
    if not bodies and ns.method != "POST":
        bodies = [b""]
    extra = parse_headers(ns.header)
    if ns.init:
        answer = exchange(ns, "POST", url, jline(INIT)[:-1], extra, "initialize")
        print(json.dumps(answer, ensure_ascii=False), flush=True)
        if answer["status"] != 200 or not sse_or_json_id(answer, INIT["id"]):
            raise Failed(f"`initialize` was answered with status {answer['status']}")
        session = [("MCP-Protocol-Version", PROTOCOL)]
        if answer["session_id"]:
            session.append(("Mcp-Session-Id", answer["session_id"]))
        given = {k.lower() for k, _ in extra}
        extra = [h for h in session if h[0].lower() not in given] + extra
        answer = exchange(ns, "POST", url, jline(INITIALIZED)[:-1], extra, "initialized")
        print(json.dumps(answer, ensure_ascii=False), flush=True)
    for body in bodies:
        print(json.dumps(exchange(ns, ns.method, url, body, extra, "raw"), ensure_ascii=False), flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="raw.py", description="Send raw bytes to an MCP server.")
    p.add_argument("transport", choices=("stdio", "http"))
    p.add_argument("--no-init", action="store_true")
    p.add_argument("--init", action="store_true")
    p.add_argument("--line", action="append", default=[])
    p.add_argument("--hex", action="append", default=[])
    p.add_argument("--lines-file")
    p.add_argument("--expect", type=int)
    p.add_argument("--wait", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--body", action="append", default=[])
    p.add_argument("--body-hex", action="append", default=[])
    p.add_argument("--body-file", action="append", default=[])
    p.add_argument("--method", default="POST")
    p.add_argument("cmd", nargs="*")
    ns = p.parse_intermixed_args()
    try:
        return run_stdio(ns) if ns.transport == "stdio" else run_http(ns)
    except Failed as e:
        print(f"raw.py: {e}", file=sys.stderr)
        return 1
    except Usage as e:
        print(f"raw.py: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
