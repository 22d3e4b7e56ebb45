#!/usr/bin/env python3
"""Drives an MCP server with the official Python SDK (`mcp` from PyPI) and
prints one JSON line per scenario step.

Run it with the test venv's python (scripts/deps.sh, corral_mcp_deps):

    PY=/var/cache/corral/mcp-test/venv/bin/python
    $PY client.py [options] stdio -- CMD [ARGS...]
    $PY client.py [options] http URL      # streamable HTTP, e.g. http://127.0.0.1:3001/mcp
    $PY client.py [options] sse URL       # legacy HTTP+SSE, e.g. http://127.0.0.1:3001/sse

Options (before the transport):
    --script FILE      the scenario, a JSON list of steps (`-` reads stdin)
    --steps JSON       the scenario inline
    --timeout SECS     per-request read timeout (default 30)
    --mode MODE        the SDK's connect mode: `auto` (its default: probes
                       `server/discover`, falls back to `initialize`), `legacy`
                       (`initialize` only) or a modern protocol version
    --header 'K: V'    an extra HTTP header (http, sse; repeatable)
    --env K=V          an extra variable for the stdio server (repeatable)
    --sdk-env          give the stdio server only the SDK's default variables
                       (HOME, LOGNAME, PATH, SHELL, TERM, USER) instead of this
                       process's whole environment
    --cwd DIR          the stdio server's working directory

Steps (one key names the operation; `label` is optional on any step):
    {"list_tools": {}}                      result: the tool names, in order
    {"list_tools": {"full": true}}          result: the tool objects
    {"call": "echo", "args": {"message": "hi"}, "timeout": 5}
                                            result: the CallToolResult, plus
                                            "text": its text blocks joined
    {"list_resources": {}}                  result: the resource URIs
    {"read_resource": "demo://resource/static/document/architecture.md"}
    {"list_prompts": {}}                    result: the prompt names
    {"get_prompt": "simple-prompt", "args": {}}
    {"sleep": 0.5}

Output, one line per step, in order:
    {"step": 0, "op": "call", "label": ..., "ok": true, "result": {...}}
    {"step": 1, "op": "call", "ok": false, "error": {"code": -32600, "message": "...", "data": ...}}
A JSON-RPC error answering a step is reported there and the scenario goes
on. A tool that fails inside (`isError: true`) is a result, not an error.

Exit status: 0 when every step ran (whatever they answered); 1 when the
connection or handshake failed; 2 on bad usage or a bad scenario; 3 when a
step failed other than with a JSON-RPC error (the scenario stops there).
The reason goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any

import anyio
import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

OPS = ("list_tools", "call", "list_resources", "read_resource", "list_prompts", "get_prompt", "sleep")


class Usage(Exception):
    """Bad command line or scenario: exit 2."""


class Crash(Exception):
    """A step failed other than with a JSON-RPC error: exit 3."""


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def parse_steps(text: str, origin: str) -> list[dict[str, Any]]:
    try:
        steps = json.loads(text)
    except json.JSONDecodeError as e:
        raise Usage(f"{origin}: not JSON: {e}") from e
    if not isinstance(steps, list):
        raise Usage(f"{origin}: the scenario must be a JSON list of steps")
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise Usage(f"{origin}: step {i} is not an object")
        ops = [k for k in step if k in OPS]
        if len(ops) != 1:
            raise Usage(f"{origin}: step {i} must name exactly one of {', '.join(OPS)}")
        unknown = [k for k in step if k not in OPS and k not in ("args", "timeout", "label")]
        if unknown:
            raise Usage(f"{origin}: step {i}: unknown key `{unknown[0]}`")
        if "args" in step and not isinstance(step["args"], dict):
            raise Usage(f"{origin}: step {i}: `args` must be an object")
    return steps


def op_of(step: dict[str, Any]) -> str:
    return next(k for k in step if k in OPS)


async def run_step(client: Client, step: dict[str, Any], timeout: float) -> Any:
    op = op_of(step)
    arg = step[op]
    args = step.get("args")
    if op == "list_tools":
        full = isinstance(arg, dict) and arg.get("full") is True
        names, cursor, pages = [], None, 0
        while True:
            page = await client.list_tools(cursor=cursor, cache_mode="bypass")
            names.extend(dump(t) if full else t.name for t in page.tools)
            cursor, pages = page.next_cursor, pages + 1
            if cursor is None or pages >= 100:
                return names
    if op == "call":
        if not isinstance(arg, str):
            raise Usage("`call` takes the tool's name")
        result = await client.call_tool(arg, args, read_timeout_seconds=step.get("timeout", timeout))
        out = dump(result)
        out["text"] = "".join(getattr(block, "text", "") for block in result.content)
        return out
    if op == "list_resources":
        page = await client.list_resources(cache_mode="bypass")
        return [str(r.uri) for r in page.resources]
    if op == "read_resource":
        return dump(await client.read_resource(str(arg), cache_mode="bypass"))
    if op == "list_prompts":
        page = await client.list_prompts(cache_mode="bypass")
        return [p.name for p in page.prompts]
    if op == "get_prompt":
        return dump(await client.get_prompt(str(arg), args))
    if op == "sleep":
        await anyio.sleep(float(arg))
        return None
    raise Usage(f"unknown step `{op}`")


async def run_scenario(client: Client, steps: list[dict[str, Any]], timeout: float) -> Exception | None:
    """Runs the steps; returns the `Usage` or `Crash` that stopped them, if any
    (returned, not raised: the transports' task groups would wrap it)."""
    info = client.server_info
    server = f"{info.name} {info.version}" if info else "an anonymous server"
    print(f"client.py: connected to {server}, protocol {client.protocol_version}", file=sys.stderr)
    for i, step in enumerate(steps):
        line: dict[str, Any] = {"step": i, "op": op_of(step)}
        if "label" in step:
            line["label"] = step["label"]
        try:
            result = await run_step(client, step, timeout)
            line["ok"] = True
            line["result"] = result
        except MCPError as e:
            line["ok"] = False
            line["error"] = {"code": e.code, "message": e.message}
            if e.data is not None:
                line["error"]["data"] = e.data
        except Usage as e:
            return Usage(f"step {i}: {e}")
        except Exception as e:
            line["ok"] = False
            line["error"] = {"code": None, "message": f"{type(e).__name__}: {e}"}
            emit(line)
            if os.environ.get("CLIENT_PY_TRACE"):
                traceback.print_exc()
            return Crash(f"step {i} ({op_of(step)}) failed: {type(e).__name__}: {e}")
        emit(line)
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="client.py", description="Drive an MCP server with the official SDK.")
    p.add_argument("--script")
    p.add_argument("--steps")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--mode", default="auto")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--sdk-env", action="store_true")
    p.add_argument("--cwd")
    p.add_argument("transport", choices=("stdio", "http", "sse"))
    p.add_argument("target", nargs="*")
    return p


def load_steps(ns: argparse.Namespace) -> list[dict[str, Any]]:
    if (ns.script is None) == (ns.steps is None):
        raise Usage("give the scenario with exactly one of --script FILE or --steps JSON")
    if ns.steps is not None:
        return parse_steps(ns.steps, "--steps")
    if ns.script == "-":
        return parse_steps(sys.stdin.read(), "stdin")
    try:
        with open(ns.script, encoding="utf-8") as f:
            return parse_steps(f.read(), ns.script)
    except OSError as e:
        raise Usage(f"{ns.script}: {e.strerror}") from e


def parse_headers(items: list[str]) -> dict[str, str]:
    headers = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise Usage(f"--header `{item}`: expected `Name: value`")
        headers[name.strip()] = value.strip()
    return headers


def make_client(ns: argparse.Namespace, http: httpx2.AsyncClient | None) -> Client:
    target = ns.target
    if target and target[0] == "--":
        target = target[1:]
    common: dict[str, Any] = {"mode": ns.mode, "read_timeout_seconds": ns.timeout, "cache": None}
    if ns.transport == "stdio":
        if not target:
            raise Usage("stdio needs the server's command: client.py stdio -- CMD [ARGS...]")
        env = {} if ns.sdk_env else dict(os.environ)
        for item in ns.env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise Usage(f"--env `{item}`: expected `NAME=value`")
            env[key] = value
        params = StdioServerParameters(command=target[0], args=target[1:], env=env, cwd=ns.cwd)
        return Client(params, **common)
    if len(target) != 1:
        raise Usage(f"{ns.transport} needs exactly one URL")
    url = target[0]
    if ns.transport == "http":
        return Client(streamable_http_client(url, http_client=http), **common)
    return Client(sse_client(url, headers=parse_headers(ns.header) or None, timeout=ns.timeout), **common)


async def amain(ns: argparse.Namespace, steps: list[dict[str, Any]]) -> int:
    http = None
    if ns.transport == "http":
        timeout = httpx2.Timeout(ns.timeout, read=max(ns.timeout, 300.0))
        http = httpx2.AsyncClient(headers=parse_headers(ns.header), timeout=timeout)
    stopped: Exception | None = None
    connected = False
    try:
        client = make_client(ns, http)
        try:
            async with client:
                connected = True
                stopped = await run_scenario(client, steps, ns.timeout)
        except Exception as e:
            reason = describe(e)
            if not connected:
                print(f"client.py: cannot connect: {reason}", file=sys.stderr)
                return 1
            # The steps ran (or stopped on their own); only the teardown failed.
            print(f"client.py: closing the connection failed: {reason}", file=sys.stderr)
        if stopped is not None:
            raise stopped
        return 0
    finally:
        if http is not None:
            await http.aclose()


def describe(e: BaseException) -> str:
    """The innermost causes of an exception (task groups wrap them)."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(describe(x) for x in e.exceptions)
    if isinstance(e, MCPError):
        return f"JSON-RPC error {e.code}: {e.message}"
    return f"{type(e).__name__}: {e}"


def main() -> int:
    ns = build_parser().parse_intermixed_args()
    try:
        steps = load_steps(ns)
        return anyio.run(amain, ns, steps)
    except Usage as e:
        print(f"client.py: {e}", file=sys.stderr)
        return 2
    except Crash as e:
        print(f"client.py: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
