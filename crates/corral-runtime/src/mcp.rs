//! The supervisor's end of `corral mcp wrap`: stdio MCP servers inside a
//! session, governed from outside it.
//!
//! In the session, `corral` is corral-init under another name: the relay
//! (corral-init's `mcpwrap` module). It connects to the socket an
//! [`McpHost`] listens on, says which server it wraps, waits for OK, starts
//! the server and passes raw bytes both ways through this side ([`wire`]
//! documents the framing). Here each direction is split into lines
//! (newline-delimited JSON-RPC), and every complete message goes through
//! the conversation's [`Governor`]: what it forwards goes on, what it
//! answers goes back to the agent. Nothing the relay sends reaches the
//! other side unparsed. If this side goes away, the relay kills the
//! server.
//!
//! [`CallLog`] remembers, per relay, when each tool call was in flight, so
//! that kernel events of the server's processes can be linked to the call
//! that caused them.
//!
//! This module must never forward a sender's bytes without the governor,
//! nor buffer a line past the message limit.

mod calls;
mod lines;
mod name;
pub mod wire;

pub use calls::{monotonic_ns, CallLog, MAX_INTERVALS, MAX_TRACKED, RETAIN};
pub use lines::{Lines, Piece};
pub use name::server_name;

use corral_mcp::jsonrpc::{self, code};
use corral_mcp::{Authority, CallRef, Direction, Governor, Transport};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};
use wire::kind;

/// How long a relay may take to say hello.
const HELLO_PATIENCE: Duration = Duration::from_secs(10);
/// How long after the server exits its stdout may stay open (held by a
/// process it left behind) before the relay is told it is done anyway.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Why the MCP host could not start.
#[derive(Debug, thiserror::Error)]
pub enum McpHostError {
    /// Not called inside a tokio runtime.
    #[error("the MCP host needs a tokio runtime")]
    NoRuntime,
    /// The socket could not be made.
    #[error("cannot {what} the MCP socket `{path}`: {source}")]
    Socket {
        /// What failed (`bind`, `chmod`, ...).
        what: &'static str,
        /// The socket's path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The listening end of the session's stdio MCP relays. Dropping it closes
/// every connection (each relay then kills its server and exits with 137)
/// and removes the socket.
#[derive(Debug)]
pub struct McpHost {
    path: PathBuf,
    accept: JoinHandle<()>,
}

impl McpHost {
    /// Listens on the unix socket `path` (mode 0666: the agent in the
    /// container may run as any uid) and serves each relay that connects
    /// in its own task, with a [`Governor`] from `authority` and its calls
    /// recorded in `calls`. Must be called inside a tokio runtime; `path`
    /// must not exist yet.
    pub fn listen(
        path: impl AsRef<Path>,
        authority: Arc<Authority>,
        calls: Arc<CallLog>,
    ) -> Result<McpHost, McpHostError> {
        let path = path.as_ref().to_path_buf();
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| McpHostError::NoRuntime)?;
        let fail = |what, source| McpHostError::Socket {
            what,
            path: path.clone(),
            source,
        };
        let std_listener = std::os::unix::net::UnixListener::bind(&path).map_err(|e| fail("bind", e))?;
        let made = (|| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
                .map_err(|e| fail("chmod", e))?;
            std_listener
                .set_nonblocking(true)
                .map_err(|e| fail("configure", e))?;
            let _guard = runtime.enter();
            UnixListener::from_std(std_listener).map_err(|e| fail("register", e))
        })();
        let listener = match made {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        let accept = runtime.spawn(accept_loop(listener, authority, calls));
        Ok(McpHost { path, accept })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for McpHost {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every
        // connection's task and so closes its socket.
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, auth: Arc<Authority>, calls: Arc<CallLog>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve(stream, auth.clone(), calls.clone()));
                }
                // Out of descriptors and the like: wait, do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Serves one relay from hello to the end.
async fn serve(stream: UnixStream, auth: Arc<Authority>, calls: Arc<CallLog>) {
    let relay = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0);
    let (mut rd, wr) = stream.into_split();
    let mut conn = Conn {
        wr,
        gov: None,
        calls,
        relay,
        client: Lines::new(auth.limits().max_message),
        server: Lines::new(auth.limits().max_message),
        auth,
    };
    if conn.hello(&mut rd).await.is_ok() {
        let _ = conn.run(&mut rd).await;
    }
    if let (Some(pid), Some(_)) = (conn.relay, &conn.gov) {
        conn.calls.disconnect(pid, monotonic_ns());
    }
}

/// Why a connection ended early (the relay then kills its server).
#[derive(Debug)]
struct Ended;

/// One relay's connection.
struct Conn {
    wr: OwnedWriteHalf,
    gov: Option<Governor>,
    auth: Arc<Authority>,
    calls: Arc<CallLog>,
    relay: Option<u32>,
    client: Lines,
    server: Lines,
}

impl Conn {
    async fn send(&mut self, kind: u8, payload: &[u8]) -> Result<(), Ended> {
        wire::write_frame(&mut self.wr, kind, payload)
            .await
            .map_err(|_| Ended)
    }

    /// A JSON text and its newline, as one frame.
    async fn send_line(&mut self, kind: u8, mut text: Vec<u8>) -> Result<(), Ended> {
        text.push(b'\n');
        self.send(kind, &text).await
    }

    /// Refused before a conversation exists: recorded, and the relay told
    /// why (it exits with 125 without starting the server).
    async fn abort(&mut self, server: &str, why: String) -> Result<(), Ended> {
        self.auth
            .refused(Transport::Stdio, server, "", Direction::ToServer, 0, &why);
        let _ = self.send(kind::ABORT, why.as_bytes()).await;
        Err(Ended)
    }

    async fn hello(&mut self, rd: &mut (impl tokio::io::AsyncRead + Unpin)) -> Result<(), Ended> {
        let frame = tokio::time::timeout(HELLO_PATIENCE, wire::read_frame(rd)).await;
        let payload = match frame {
            Ok(Ok(Some((kind::HELLO, p)))) => p,
            Ok(Ok(Some((other, _)))) => {
                return self
                    .abort(
                        "",
                        format!("stdio MCP relay: expected hello, got a frame of type {other}"),
                    )
                    .await
            }
            Ok(Ok(None)) => return Err(Ended),
            Ok(Err(e)) => return self.abort("", format!("stdio MCP relay: bad hello: {e}")).await,
            Err(_) => {
                return self
                    .abort("", format!("stdio MCP relay: no hello within {HELLO_PATIENCE:?}"))
                    .await
            }
        };
        let hello = match wire::parse_hello(&payload) {
            Ok(h) => h,
            Err(e) => return self.abort("", format!("stdio MCP relay: {e}")).await,
        };
        let shown = hello.argv.join(" ");
        let id = match hello.name.clone().or_else(|| server_name(&hello.argv)) {
            Some(id) => id,
            None => {
                return self
                    .abort(
                        "",
                        format!(
                            "cannot tell which MCP server `{shown}` is: name it with \
                             `corral mcp wrap --name NAME -- {shown}`"
                        ),
                    )
                    .await
            }
        };
        if let Err(why) = jsonrpc::check_name(&id) {
            let how = if hello.name.is_some() {
                "choose another `--name`"
            } else {
                "name it with `--name`"
            };
            return self
                .abort(
                    &id,
                    format!("invalid MCP server name for `{shown}`: {why}; {how}"),
                )
                .await;
        }
        let mut gov = self.auth.governor(id, Transport::Stdio);
        if let Some(pid) = self.relay {
            // The relay's pid as this supervisor sees it; its comm is the
            // in-session `corral` (informative only).
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_default();
            gov.set_client(pid, comm);
        }
        if let Some(pid) = self.relay {
            self.calls.register(pid);
        }
        self.gov = Some(gov);
        self.send(kind::OK, &[]).await
    }

    /// Moves the conversation until the relay disconnects.
    async fn run(&mut self, rd: &mut (impl tokio::io::AsyncRead + Unpin)) -> Result<(), Ended> {
        let mut server_eof = false;
        let mut exited = false;
        let mut done = false;
        let grace = tokio::time::sleep(Duration::MAX);
        tokio::pin!(grace);
        loop {
            let frame = tokio::select! {
                f = wire::read_frame(rd) => f,
                () = &mut grace, if exited && !server_eof && !done => {
                    // The server is gone but something it left holds its
                    // stdout: nothing more can be answered.
                    self.end_calls();
                    self.send(kind::DONE, &[]).await?;
                    done = true;
                    continue;
                }
            };
            match frame {
                Ok(Some((kind::CLIENT_BYTES, bytes))) => {
                    for piece in self.client.push(&bytes) {
                        self.client_piece(piece).await?;
                    }
                }
                Ok(Some((kind::CLIENT_EOF, _))) => {
                    for piece in self.client.finish() {
                        self.client_piece(piece).await?;
                    }
                    self.send(kind::CLOSE_SERVER_STDIN, &[]).await?;
                }
                Ok(Some((kind::SERVER_BYTES, bytes))) => {
                    for piece in self.server.push(&bytes) {
                        self.server_piece(piece).await?;
                    }
                }
                Ok(Some((kind::SERVER_EOF, _))) => {
                    for piece in self.server.finish() {
                        self.server_piece(piece).await?;
                    }
                    server_eof = true;
                }
                Ok(Some((kind::SERVER_EXIT, payload))) => {
                    if wire::parse_exit(&payload).is_none() {
                        self.protocol_error("a malformed exit report");
                        return Err(Ended);
                    }
                    exited = true;
                    grace.as_mut().reset(tokio::time::Instant::now() + EXIT_GRACE);
                }
                Ok(Some((other, _))) => {
                    self.protocol_error(&format!("an unexpected frame of type {other}"));
                    return Err(Ended);
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.protocol_error(&format!("a broken frame ({e})"));
                    return Err(Ended);
                }
            }
            if server_eof && exited && !done {
                self.end_calls();
                self.send(kind::DONE, &[]).await?;
                done = true;
            }
        }
    }

    fn protocol_error(&self, what: &str) {
        let (server, label) = self
            .gov
            .as_ref()
            .map(|g| (g.server(), g.label()))
            .unwrap_or_default();
        self.auth.refused(
            Transport::Stdio,
            server,
            label,
            Direction::ToServer,
            0,
            &format!("stdio MCP relay sent {what}; disconnected it (its server is killed)"),
        );
    }

    /// The server is gone: the calls still in flight end now.
    fn end_calls(&mut self) {
        if let (Some(pid), Some(g)) = (self.relay, &self.gov) {
            let now = monotonic_ns();
            for c in g.in_flight() {
                self.calls.finished(pid, &c.id, now);
            }
        }
    }

    fn finished(&self, calls: &[CallRef], ts: u64) {
        if let Some(pid) = self.relay {
            for c in calls {
                self.calls.finished(pid, &c.id, ts);
            }
        }
    }

    async fn client_piece(&mut self, piece: Piece) -> Result<(), Ended> {
        let Some(gov) = self.gov.as_mut() else {
            return Err(Ended);
        };
        let step = match piece {
            Piece::Line(line) => gov.from_client(&line),
            Piece::Oversized(bytes) => {
                let max = self.auth.limits().max_message;
                let why = format!("a message of more than {max} bytes (corral's MCP limit) was refused");
                self.auth.refused(
                    Transport::Stdio,
                    gov.server(),
                    gov.label(),
                    Direction::ToServer,
                    bytes,
                    &why,
                );
                let reply =
                    jsonrpc::error_response(None, code::INVALID_REQUEST, &format!("corral: {why}"), None);
                return self
                    .send_line(kind::TO_CLIENT, jsonrpc::value_bytes(&reply))
                    .await;
            }
        };
        self.finished(&step.finished, monotonic_ns());
        if let Some(forward) = step.forward {
            // Just before the request can reach the server.
            if let Some(pid) = self.relay {
                let ts = monotonic_ns();
                for c in &step.started {
                    self.calls.started(pid, &c.id, ts);
                }
            }
            self.send_line(kind::TO_SERVER, forward).await?;
        }
        if let Some(reply) = step.reply {
            self.send_line(kind::TO_CLIENT, reply).await?;
        }
        Ok(())
    }

    async fn server_piece(&mut self, piece: Piece) -> Result<(), Ended> {
        // Just after the response was read.
        let ts = monotonic_ns();
        let Some(gov) = self.gov.as_mut() else {
            return Err(Ended);
        };
        let step = match piece {
            Piece::Line(line) => gov.from_server(&line),
            Piece::Oversized(bytes) => {
                let max = self.auth.limits().max_message;
                self.auth.refused(
                    Transport::Stdio,
                    gov.server(),
                    gov.label(),
                    Direction::ToClient,
                    bytes,
                    &format!("dropped a server message of more than {max} bytes (corral's MCP limit)"),
                );
                return Ok(());
            }
        };
        self.finished(&step.finished, ts);
        if let Some(forward) = step.forward {
            self.send_line(kind::TO_CLIENT, forward).await?;
        }
        for extra in step.extra {
            self.send_line(kind::TO_CLIENT, extra).await?;
        }
        Ok(())
    }
}
