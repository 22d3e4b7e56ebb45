//! The supervisor's end of a running session's control socket: bind it,
//! check each peer, hand requests to the session loop, carry them out
//! ([`State::apply`]). The protocol and the client are in corral-control
//! (re-exported here): `corral mode`, `corral reload`, `corral stop` and
//! the control API use them.
//!
//! The socket is `<run root>/control/<session>.sock`, outside the session's
//! run directory (which the container sees at `/run/corral`), in a
//! directory only root can enter. The supervisor also checks each peer:
//! same user as the supervisor, and not a process of the session itself, so
//! an agent can never switch its own enforcement off.

pub use corral_control::*;

use corral_core::{Mode, SessionId, What};
use corral_kernel::session::KernelSession;
use corral_policy::Plan;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The supervisor's end: a bound socket and the session's cgroup, to
/// refuse peers from inside the session.
pub(crate) struct Server {
    listener: tokio::net::UnixListener,
    path: PathBuf,
    session_cgroup: String,
}

/// A request that passed the peer checks, and where its reply goes.
pub(crate) struct Incoming {
    pub req: Request,
    pub reply: tokio::sync::oneshot::Sender<Reply>,
}

impl Server {
    /// Binds `<run root>/control/<id>.sock` (directory 0700, socket 0600).
    pub(crate) fn bind(run_root: &Path, id: SessionId, session_cgroup: &str) -> std::io::Result<Server> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        let d = dir(run_root);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        sweep(&d);
        let path = socket_path(run_root, id);
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Server {
            listener,
            path,
            session_cgroup: session_cgroup.to_owned(),
        })
    }

    /// Accepts connections until dropped; each checked, read and answered
    /// on its own task, so a slow client never holds the supervisor up.
    pub(crate) async fn serve(self, tx: tokio::sync::mpsc::Sender<Incoming>) {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            let cg = self.session_cgroup.clone();
            tokio::spawn(async move {
                let _ = handle(stream, &cg, tx).await;
            });
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes the sockets of supervisors that died without removing theirs
/// (SIGKILL): nobody accepts on them any more.
fn sweep(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "sock") {
            if let Err(err) = std::os::unix::net::UnixStream::connect(&p) {
                if err.kind() == std::io::ErrorKind::ConnectionRefused {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
}

/// Why a peer may not control the session; `None` when it may.
fn refuse(stream: &tokio::net::UnixStream, session_cgroup: &str) -> Option<String> {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => return Some(format!("cannot identify the peer: {e}")),
    };
    if cred.uid() != nix::unistd::geteuid().as_raw() {
        return Some(format!(
            "uid {} may not control this session (only uid {})",
            cred.uid(),
            nix::unistd::geteuid()
        ));
    }
    let Some(pid) = cred.pid() else {
        return Some("the peer has no pid".into());
    };
    match corral_kernel::cgroup::of_pid(pid as u32) {
        Some(cg) if corral_kernel::cgroup::is_within(&cg, session_cgroup) => {
            Some("a process of the session may not control it".into())
        }
        Some(_) => None,
        None => Some(format!("cannot read the cgroup of pid {pid}")),
    }
}

async fn handle(
    stream: tokio::net::UnixStream,
    session_cgroup: &str,
    tx: tokio::sync::mpsc::Sender<Incoming>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let refused = refuse(&stream, session_cgroup);
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(r.take(MAX_REQUEST as u64 + 1));
    let read = reader.read_line(&mut line);
    let got = tokio::time::timeout(Duration::from_secs(30), read).await;
    let error_reply = |e: String| serde_json::json!({ "ok": false, "error": e }).to_string();
    let answer = if let Some(why) = refused {
        error_reply(why)
    } else {
        match got {
            Err(_) => error_reply("no request within 30 s".into()),
            Ok(Err(e)) => error_reply(format!("reading the request: {e}")),
            Ok(Ok(_)) if line.len() > MAX_REQUEST => {
                error_reply(format!("request larger than {MAX_REQUEST} bytes"))
            }
            Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim_end()) {
                Err(e) => error_reply(format!("not a control request: {e}")),
                Ok(req) => {
                    let (reply, rx) = tokio::sync::oneshot::channel();
                    if tx.send(Incoming { req, reply }).await.is_err() {
                        error_reply("the session is ending".into())
                    } else {
                        match rx.await {
                            Ok(rep) => {
                                serde_json::to_string(&rep).unwrap_or_else(|e| error_reply(e.to_string()))
                            }
                            Err(_) => error_reply("the session is ending".into()),
                        }
                    }
                }
            },
        }
    };
    w.write_all(answer.as_bytes()).await?;
    w.write_all(b"\n").await
}

/// A running session's controllable state, changed by control requests.
pub(crate) struct State {
    pub(crate) mode: Mode,
    pub(crate) policy_label: String,
    pub(crate) policy_sha256: String,
    /// Events the supervisor recorded (mode switches, policy loads).
    pub(crate) events: u64,
}

impl State {
    pub(crate) fn reply(&self, spec: &crate::session::Spec, error: Option<String>) -> Reply {
        Reply {
            ok: error.is_none(),
            error,
            session: spec.id,
            principal: spec.principal.clone(),
            mode: self.mode,
            policy_label: self.policy_label.clone(),
            policy_sha256: self.policy_sha256.clone(),
        }
    }

    fn emit(&mut self, spec: &crate::session::Spec, what: What) {
        self.events += 1;
        if let Some(a) = &spec.audit {
            a.send(corral_audit::Stored {
                id: None,
                wall_ns: crate::session::wall_ns(),
                policy_at: Vec::new(),
                event: crate::session::supervisor_event(spec.id, &spec.principal, what),
            });
        }
    }

    pub(crate) async fn apply(
        &mut self,
        spec: &crate::session::Spec,
        ks: &mut KernelSession,
        proxy: Option<&std::sync::Arc<corral_proxy::Proxy>>,
        mcp: &corral_mcp::Authority,
        plan_tx: &tokio::sync::watch::Sender<Plan>,
        req: Request,
    ) -> Reply {
        match req {
            // The session loop hands Stop to the supervision of the command
            // before it gets here; answered as a status.
            Request::Status | Request::Stop => self.reply(spec, None),
            Request::Mode { mode } => {
                if mode == self.mode {
                    return self.reply(spec, None);
                }
                match ks.set_mode(mode) {
                    Ok(()) => {
                        if let Some(p) = proxy {
                            p.set_mode(mode);
                        }
                        mcp.set_mode(mode);
                        self.mode = mode;
                        self.emit(spec, What::ModeChange { mode });
                        eprint!(
                            "corral: session {} switched to {}\r\n",
                            spec.id,
                            if mode == Mode::Shadow {
                                "SHADOW (nothing blocked)"
                            } else {
                                "enforce"
                            }
                        );
                        self.reply(spec, None)
                    }
                    Err(e) => self.reply(spec, Some(format!("the mode was not switched: {e}"))),
                }
            }
            Request::Reload { label, text } => {
                let sha256 = crate::session::sha256_hex(text.as_bytes());
                let Some(reload) = spec.reload.clone() else {
                    return self.reply(spec, Some("this session does not accept policy reloads".into()));
                };
                // Compiling is CPU work (Cedar validation, the plan): off
                // the async threads.
                let (l, t) = (label.clone(), text.clone());
                let compiled = tokio::task::spawn_blocking(move || reload(&l, &t))
                    .await
                    .unwrap_or_else(|e| Err(format!("the policy compiler failed: {e}")));
                let result = compiled.and_then(|c| {
                    ks.swap(&c.plan, Some(c.judge))
                        .map_err(|e| format!("the new tables could not be loaded: {e}"))?;
                    // The kernel's tables are in force: the proxy follows
                    // (a swap of one pointer, which cannot fail).
                    if let Some(p) = proxy {
                        p.set_policy(c.proxy);
                    }
                    mcp.set_policy(c.mcp);
                    Ok(c.plan)
                });
                match result {
                    Ok(plan) => {
                        let _ = plan_tx.send(plan);
                        if let Some(a) = &spec.audit {
                            a.record_policy(&label, &text);
                        }
                        self.policy_label = label.clone();
                        self.policy_sha256 = sha256.clone();
                        self.emit(
                            spec,
                            What::PolicyLoad {
                                label,
                                sha256,
                                error: None,
                            },
                        );
                        self.reply(spec, None)
                    }
                    Err(e) => {
                        self.emit(
                            spec,
                            What::PolicyLoad {
                                label,
                                sha256,
                                error: Some(e.clone()),
                            },
                        );
                        self.reply(spec, Some(e))
                    }
                }
            }
        }
    }
}
