//! A running session's control socket, seen from both ends: what a client
//! asks ([`Request`]: status, mode switch, policy reload, stop), what the
//! session answers ([`Reply`]), where the sockets are, and the blocking
//! client ([`request`], [`running`]). The supervisor's side (corral-runtime's
//! `control` module) and its clients (`corral mode`/`reload`/`stop`, the
//! control API in corral-server) share this crate, so they cannot drift.
//!
//! The socket is `<run root>/control/<session>.sock`, outside the session's
//! run directory (which the container sees at `/run/corral`), in a
//! directory only root can enter. The supervisor also checks each peer:
//! same user as the supervisor, and not a process of the session itself, so
//! an agent can never switch its own enforcement off.
//!
//! One request per connection: a JSON line, answered by a JSON line.

#![forbid(unsafe_code)]

use corral_core::{Mode, SessionId};
use serde::{Deserialize, Serialize};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest a client waits for the answer (a reload compiles a policy).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request accepted (a policy text travels inside it).
pub const MAX_REQUEST: usize = 8 << 20;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The session's current state.
    Status,
    /// Switch every layer to `mode`.
    Mode {
        /// The new mode.
        mode: Mode,
    },
    /// Replace the policy with `text` (validated and compiled first; on
    /// any error the old policy stays in force, unchanged).
    Reload {
        /// Where the text came from (a file name), for diagnostics and the
        /// audit trail.
        label: String,
        /// The Cedar policy.
        text: String,
    },
    /// End the session: its command gets SIGTERM, and SIGKILL (the whole
    /// session cgroup) after [`STOP_GRACE`]; the session then ends as it
    /// does when the command exits (cleanup, `session_end` recorded). The
    /// reply comes at once, before the command has ended.
    Stop,
}

/// How long a stopped session's command has between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The answer: the session's state after the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not (diagnostics of a refused policy, with file:line:col).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The session.
    #[serde(default)]
    pub session: SessionId,
    /// Its principal.
    #[serde(default)]
    pub principal: String,
    /// Its mode now.
    #[serde(default)]
    pub mode: Mode,
    /// Label of the policy in force.
    #[serde(default)]
    pub policy_label: String,
    /// SHA-256 of the policy in force.
    #[serde(default)]
    pub policy_sha256: String,
}

/// Why a control request failed on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such running session (no socket, or nobody listening).
    #[error("session {id} is not running on this host (no control socket at {})", path.display())]
    NotRunning {
        /// The session asked for.
        id: SessionId,
        /// The socket looked for.
        path: PathBuf,
    },
    /// Talking to the supervisor failed.
    #[error("control socket {}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The supervisor's answer is not a reply.
    #[error("control socket {}: unreadable answer {answer:?}", path.display())]
    BadReply {
        /// The socket.
        path: PathBuf,
        /// What came back.
        answer: String,
    },
}

/// The directory holding every session's control socket.
pub fn dir(run_root: &Path) -> PathBuf {
    run_root.join("control")
}

/// The control socket of session `id`.
pub fn socket_path(run_root: &Path, id: SessionId) -> PathBuf {
    dir(run_root).join(format!("{id}.sock"))
}

/// Sessions with a control socket under `run_root`, sorted (a socket whose
/// supervisor died is left out: nobody accepts on it).
pub fn running(run_root: &Path) -> Vec<SessionId> {
    let Ok(rd) = std::fs::read_dir(dir(run_root)) else {
        return Vec::new();
    };
    let mut out: Vec<SessionId> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_suffix(".sock")?
                .strip_prefix('s')?
                .parse::<u32>()
                .ok()?;
            std::os::unix::net::UnixStream::connect(e.path())
                .ok()
                .map(|_| SessionId(id))
        })
        .collect();
    out.sort();
    out
}

/// Sends `req` to session `id` and waits for its reply.
pub fn request(run_root: &Path, id: SessionId, req: &Request) -> Result<Reply, ControlError> {
    let path = socket_path(run_root, id);
    let io = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    let stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning { id, path });
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_string(req).map_err(|e| io(std::io::Error::other(e)))?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(answer.trim_end()).map_err(|_| ControlError::BadReply {
        path: path.clone(),
        answer,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests_are_one_json_line_each_way() {
        assert_eq!(serde_json::to_string(&Request::Stop).unwrap(), r#"{"op":"stop"}"#);
        let root = tempfile::tempdir().unwrap();
        let id = SessionId(7);
        assert!(matches!(
            request(root.path(), id, &Request::Status),
            Err(ControlError::NotRunning { .. })
        ));
        assert!(running(root.path()).is_empty());
        std::fs::create_dir_all(dir(root.path())).unwrap();
        let l = std::os::unix::net::UnixListener::bind(socket_path(root.path(), id)).unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (s, _) = l.accept().unwrap();
                let mut line = String::new();
                if std::io::BufReader::new(&s).read_line(&mut line).unwrap() == 0 {
                    continue; // running()'s probe connects and closes
                }
                let req: Request = serde_json::from_str(line.trim_end()).unwrap();
                assert_eq!(req, Request::Stop);
                (&s).write_all(b"{\"ok\":true,\"session\":7,\"mode\":\"shadow\"}\n")
                    .unwrap();
            }
        });
        assert_eq!(running(root.path()), vec![id]);
        let r = request(root.path(), id, &Request::Stop).unwrap();
        assert!(r.ok);
        assert_eq!(r.session, id);
        assert_eq!(r.mode, Mode::Shadow);
        server.join().unwrap();
    }
}
