//! A stdio MCP client: one process (the server itself, or the relay
//! wrapping it) whose stdin takes newline-delimited JSON-RPC and whose
//! stdout answers. Blocking reads, each after a `poll` with a deadline so
//! that a silent server fails the run instead of hanging it.

use crate::{check_echo, echo_call, Target, PATIENCE};
use anyhow::{bail, Context as _};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::ops::Range;
use std::os::fd::AsFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A server on stdio, initialized.
pub struct StdioTarget {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
    line: String,
    /// The relay's children (the server), killed on drop if still there.
    children: Vec<i32>,
}

impl StdioTarget {
    /// Spawns `cmd`, initializes the conversation and, when `governed`,
    /// checks that a forbidden tool is refused.
    pub fn start(name: &'static str, mut cmd: Command, governed: bool) -> anyhow::Result<StdioTarget> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("{name}: spawn `{}`", cmd.get_program().to_string_lossy()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name}: no pipes to the child");
        };
        let mut t = StdioTarget {
            name,
            child,
            stdin: Some(stdin),
            out: BufReader::new(stdout),
            line: String::new(),
            children: vec![],
        };
        let init = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "corral-mbench", "version": "0"},
            },
        });
        let r = t.request(&init.to_string(), 1).context(name)?;
        if r["result"]["serverInfo"].is_null() {
            bail!("{name}: initialize was not answered: {r}");
        }
        t.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)?;
        if governed {
            t.children = children(t.child.id());
            let call = json!({
                "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": crate::setup::FORBIDDEN[0], "arguments": {}},
            });
            let r = t.request(&call.to_string(), 2).context(name)?;
            if r["error"]["code"] != -32001 {
                bail!("{name}: the forbidden tool was not refused: {r}");
            }
        }
        Ok(t)
    }

    fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            bail!("{}: stdin closed", self.name);
        };
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        stdin.write_all(&bytes).context("write to the server")?;
        Ok(())
    }

    /// Reads lines until the answer to `id` (notifications and requests
    /// from the server are skipped); returns it and when its line was read.
    fn answer(&mut self, id: u64) -> anyhow::Result<(Value, Instant)> {
        loop {
            self.line.clear();
            if self.out.buffer().is_empty() {
                let mut fds = [PollFd::new(self.out.get_ref().as_fd(), PollFlags::POLLIN)];
                let ms = u16::try_from(PATIENCE.as_millis()).unwrap_or(u16::MAX);
                if poll(&mut fds, PollTimeout::from(ms)).context("poll the server's stdout")? == 0 {
                    bail!("no answer to call {id} within {} s", PATIENCE.as_secs());
                }
            }
            let n = self
                .out
                .read_line(&mut self.line)
                .context("read from the server")?;
            let at = Instant::now();
            if n == 0 {
                bail!("the server closed its stdout before answering call {id}");
            }
            let v: Value = serde_json::from_str(&self.line)
                .with_context(|| format!("not JSON from the server: {:?}", self.line))?;
            if v.get("method").is_none() && v.get("id").is_some() {
                if v["id"] != id {
                    bail!("an answer to {} while waiting for {id}: {v}", v["id"]);
                }
                return Ok((v, at));
            }
        }
    }

    fn request(&mut self, line: &str, id: u64) -> anyhow::Result<Value> {
        self.send(line)?;
        Ok(self.answer(id)?.0)
    }
}

impl Target for StdioTarget {
    fn calls(&mut self, ids: Range<u64>) -> anyhow::Result<Vec<Duration>> {
        let mut out = Vec::with_capacity(ids.clone().count());
        for id in ids {
            let line = echo_call(id);
            let start = Instant::now();
            self.send(&line)?;
            let (v, at) = self.answer(id)?;
            out.push(at - start);
            check_echo(&v, id)?;
        }
        Ok(out)
    }
}

impl Drop for StdioTarget {
    fn drop(&mut self) {
        self.stdin = None;
        let pid = Pid::from_raw(self.child.id() as i32);
        // The relay passes SIGTERM to its server and exits with it; the
        // server alone dies of it.
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for &c in &self.children {
            if is_server(c) {
                let _ = kill(Pid::from_raw(c), Signal::SIGKILL);
            }
        }
    }
}

/// The children of process `pid` (every thread's), as the kernel lists them.
fn children(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|w| w.parse::<i32>().ok()));
        }
    }
    out
}

/// `pid` still runs server-everything (not a zombie, not a reused pid).
fn is_server(pid: i32) -> bool {
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    alive && String::from_utf8_lossy(&cmdline).contains("mcp-server-everything")
}
