//! `corral mcp wrap`: the relay between an agent and a stdio MCP server
//! inside a corral session.
//!
//! ```text
//! corral mcp wrap [--name NAME] [--] COMMAND [ARG...]
//! ```
//!
//! corral-init becomes this command when it is started under the name
//! `corral` (the session puts the hard link `/run/corral/bin/corral` on the
//! agent's `PATH`); it then does none of init's work. Any other `corral`
//! command is refused: the full CLI runs on the host.
//!
//! The relay connects to corral's supervisor (`$CORRAL_MCP_SOCK`, else
//! `/run/corral/mcp.sock`), says hello and waits for its OK. Only then
//! does it start COMMAND: stdin and stdout piped, stderr inherited, in its
//! own process group, killed if the relay dies. From then on it moves raw
//! bytes and reads no JSON: what the agent writes and what the server
//! writes go to the supervisor, which splits lines, decides each message
//! and says what to write to the server and what to the agent.
//!
//! Exit status: the server's (128+N if signal N killed it); 2 for a usage
//! error; 125 if the server was not started (no supervisor, or it refused);
//! 126/127 if COMMAND could not be run; 137 if the supervisor went away,
//! after killing the server, whose calls could no longer be governed.
//! SIGTERM, SIGINT and SIGHUP sent to the relay go to the server's process
//! group.
//!
//! # Protocol
//!
//! Frames on the unix stream socket, both ways: a type byte, the payload's
//! length as a big-endian u32, the payload (at most [`MAX_FRAME`] bytes;
//! longer data is sent as several frames). The same description sits in
//! corral-runtime's `mcp::wire`, the supervisor's side.
//!
//! Relay to supervisor:
//!
//! | type | name         | payload                                             |
//! |------|--------------|-----------------------------------------------------|
//! | 1    | HELLO        | version (1 byte, 1), the server name (`--name`, may be empty), then each argument of COMMAND preceded by a NUL byte |
//! | 4    | CLIENT_BYTES | bytes the agent wrote (any chunk)                   |
//! | 5    | CLIENT_EOF   | none: the agent closed the relay's stdin           |
//! | 6    | SERVER_BYTES | bytes the server wrote on its stdout (any chunk)    |
//! | 7    | SERVER_EOF   | none: the server closed its stdout                  |
//! | 8    | SERVER_EXIT  | 0 then the exit code, or 1 then the signal number (u32 big-endian) |
//!
//! Supervisor to relay:
//!
//! | type | name               | payload                                       |
//! |------|--------------------|-----------------------------------------------|
//! | 2    | OK                 | none: start the server                        |
//! | 3    | ABORT              | why not (UTF-8); the relay exits with 125     |
//! | 9    | TO_SERVER          | bytes to write to the server's stdin          |
//! | 10   | TO_CLIENT          | bytes to write to the agent (relay's stdout)  |
//! | 11   | CLOSE_SERVER_STDIN | none: close the server's stdin (after the bytes before it) |
//! | 12   | DONE               | none: everything is written; exit with the server's status |
//!
//! HELLO comes first and only once, answered by OK or ABORT. Anything
//! else unexpected from the supervisor ends the relay as if the supervisor
//! had gone away.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::ffi::{self, SigSet};

use crate::mcpframe::{kind, MAX_FRAME, VERSION};

/// Where the supervisor listens in a session.
const DEFAULT_SOCKET: &str = "/run/corral/mcp.sock";
/// Exit statuses.
const USAGE_ERROR: i32 = 2;
const NOT_STARTED: i32 = 125;
const SUPERVISOR_GONE: i32 = 128 + ffi::SIGKILL;
/// How long the supervisor may take to answer HELLO.
const ANSWER_PATIENCE: Duration = Duration::from_secs(30);
/// Read size for the agent's and the server's output.
const CHUNK: usize = 64 * 1024;

const USAGE: &str = "usage: corral mcp wrap [--name NAME] [--] COMMAND [ARG...]";

/// Whether corral-init was started as `corral` (the in-session command).
pub fn invoked_as_corral(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name() == Some(OsStr::new("corral"))
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Invocation {
    Help,
    Wrap {
        name: Option<String>,
        command: Vec<OsString>,
    },
}

/// Parses the arguments after `argv[0]`.
fn parse(args: &[OsString]) -> Result<Invocation, String> {
    let only = "inside a corral session only `corral mcp wrap` is available \
                (the other corral commands run on the host)";
    match (args.first(), args.get(1)) {
        (Some(a), _) if a == "-h" || a == "--help" => return Ok(Invocation::Help),
        (Some(a), Some(b)) if a == "mcp" && b == "wrap" => {}
        (Some(a), Some(b)) if a == "mcp" => {
            return Err(format!("unknown command `mcp {}`: {only}", b.to_string_lossy()))
        }
        (Some(a), _) => return Err(format!("unknown command `{}`: {only}", a.to_string_lossy())),
        (None, _) => return Err(format!("no command given: {only}")),
    }
    let mut name = None;
    let mut rest = args.iter().skip(2);
    let mut command = Vec::new();
    while let Some(arg) = rest.next() {
        let text = arg.to_str();
        match text {
            Some("--") => break,
            Some("-h" | "--help") => return Ok(Invocation::Help),
            Some("--name") => {
                let value = rest.next().ok_or("`--name` needs a value")?;
                name = Some(utf8_name(value)?);
            }
            Some(t) if t.starts_with("--name=") => {
                name = Some(utf8_name(OsStr::new(
                    t.get("--name=".len()..).unwrap_or_default(),
                ))?);
            }
            _ if arg.as_bytes().first() == Some(&b'-') => {
                return Err(format!("unknown option `{}`", arg.to_string_lossy()))
            }
            _ => {
                command.push(arg.clone());
                break;
            }
        }
    }
    command.extend(rest.cloned());
    if command.is_empty() {
        return Err("no server command given".into());
    }
    Ok(Invocation::Wrap { name, command })
}

fn utf8_name(value: &OsStr) -> Result<String, String> {
    value
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("the server name `{}` is not UTF-8", value.to_string_lossy()))
}

/// Runs `corral ARGS...` and exits.
pub fn main(args: Vec<OsString>) -> ! {
    let (name, command) = match parse(&args) {
        Ok(Invocation::Help) => {
            let _ = writeln!(io::stdout().lock(), "{USAGE}");
            std::process::exit(0)
        }
        Ok(Invocation::Wrap { name, command }) => (name, command),
        Err(msg) => {
            say(&format!("{msg}\n{USAGE}"));
            std::process::exit(USAGE_ERROR)
        }
    };
    let shown = command
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let not_started = |why: String| -> ! {
        say(&format!("{why}; not starting `{shown}`"));
        std::process::exit(NOT_STARTED)
    };

    let socket = std::env::var_os("CORRAL_MCP_SOCK").unwrap_or_else(|| DEFAULT_SOCKET.into());
    let stream = UnixStream::connect(&socket).unwrap_or_else(|err| {
        not_started(format!(
            "cannot reach corral's MCP supervisor at `{}` ({err}), so the server's calls could not be governed",
            Path::new(&socket).display()
        ))
    });
    if let Err(err) = write_frame(&stream, kind::HELLO, &hello(name.as_deref(), &command)) {
        not_started(format!("cannot greet corral's MCP supervisor: {err}"));
    }
    let _ = stream.set_read_timeout(Some(ANSWER_PATIENCE));
    match read_frame(&stream) {
        Ok(Some((kind::OK, _))) => {}
        Ok(Some((kind::ABORT, why))) => not_started(format!(
            "corral refused to start this MCP server: {}",
            String::from_utf8_lossy(&why)
        )),
        Ok(Some((other, _))) => not_started(format!(
            "corral's MCP supervisor answered with an unexpected frame (type {other})"
        )),
        Ok(None) => not_started("corral's MCP supervisor closed the connection without answering".into()),
        Err(err) => not_started(format!("no answer from corral's MCP supervisor: {err}")),
    }
    let _ = stream.set_read_timeout(None);
    relay(stream, &command, &shown)
}

/// The HELLO payload.
fn hello(name: Option<&str>, command: &[OsString]) -> Vec<u8> {
    let mut payload = vec![VERSION];
    payload.extend_from_slice(name.unwrap_or_default().as_bytes());
    for arg in command {
        payload.push(0);
        payload.extend_from_slice(arg.as_bytes());
    }
    payload
}

/// The supervisor's end, shared by the threads that write to it.
type Writer = Arc<Mutex<UnixStream>>;

fn send(w: &Writer, kind: u8, payload: &[u8]) -> io::Result<()> {
    let stream = w.lock().unwrap_or_else(PoisonError::into_inner);
    write_frame(&stream, kind, payload)
}

/// Starts the server and moves bytes until the supervisor says DONE.
fn relay(stream: UnixStream, command: &[OsString], shown: &str) -> ! {
    let Some((program, args)) = command.split_first() else {
        say("no server command given");
        std::process::exit(USAGE_ERROR)
    };
    let writer: Writer = match stream.try_clone() {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(err) => {
            say(&format!(
                "cannot share the supervisor's socket: {err}; not starting `{shown}`"
            ));
            std::process::exit(NOT_STARTED)
        }
    };

    // Blocked before any thread exists, so that every thread inherits the
    // mask and the signal thread alone takes them; the server starts with
    // an empty mask (`prepare_child`).
    let forwarded = SigSet::of(&[ffi::SIGTERM, ffi::SIGINT, ffi::SIGHUP]);
    if let Err(err) = ffi::set_signal_mask(&forwarded) {
        say(&format!("cannot block signals: {err}; not starting `{shown}`"));
        std::process::exit(NOT_STARTED)
    }

    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    ffi::prepare_child(&mut cmd);
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => {
            say(&format!("cannot run `{}`: {err}", program.to_string_lossy()));
            std::process::exit(if err.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
    };
    let server = Server {
        pid: child.id() as i32,
        reaped: Arc::new(AtomicBool::new(false)),
    };
    let status = Arc::new(AtomicI32::new(-1));
    match start_threads(child, &server, &writer, &status, forwarded) {
        Ok(to_server) => dispatch(&stream, &to_server, &status, &server, shown),
        Err(err) => {
            server.kill();
            say(&format!("cannot relay for `{shown}`: {err}; killed it"));
            std::process::exit(SUPERVISOR_GONE)
        }
    }
}

/// Starts the threads that forward signals, feed the server's stdin, copy
/// the agent's and the server's output to the supervisor, and wait for the
/// server. Returns the queue to the server's stdin (`None` closes it).
fn start_threads(
    mut child: std::process::Child,
    server: &Server,
    writer: &Writer,
    status: &Arc<AtomicI32>,
    forwarded: SigSet,
) -> io::Result<mpsc::Sender<Option<Vec<u8>>>> {
    let srv = server.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || forward_signals(&forwarded, &srv))?;

    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no pipe to the server's stdin"))?;
    let (to_server, queue) = mpsc::channel::<Option<Vec<u8>>>();
    std::thread::Builder::new()
        .name("to-server".into())
        .spawn(move || feed_server(stdin, &queue))?;

    let w = writer.clone();
    std::thread::Builder::new()
        .name("from-agent".into())
        .spawn(move || pump(io::stdin().lock(), &w, kind::CLIENT_BYTES, kind::CLIENT_EOF))?;

    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no pipe from the server's stdout"))?;
    let w = writer.clone();
    std::thread::Builder::new()
        .name("from-server".into())
        .spawn(move || pump(stdout, &w, kind::SERVER_BYTES, kind::SERVER_EOF))?;

    let w = writer.clone();
    let st = status.clone();
    let reaped = server.reaped.clone();
    std::thread::Builder::new().name("waiter".into()).spawn(move || {
        let exit = child.wait();
        reaped.store(true, Ordering::SeqCst);
        let (how, n) = match exit {
            Ok(s) => exit_of(s),
            Err(_) => (0, NOT_STARTED),
        };
        // Stored before SERVER_EXIT is sent: DONE comes after it.
        st.store(if how == 0 { n } else { 128 + n }, Ordering::SeqCst);
        let mut payload = vec![how as u8];
        payload.extend_from_slice(&(n as u32).to_be_bytes());
        let _ = send(&w, kind::SERVER_EXIT, &payload);
    })?;
    Ok(to_server)
}

/// The server process.
#[derive(Clone)]
struct Server {
    pid: i32,
    reaped: Arc<AtomicBool>,
}

impl Server {
    fn signal(&self, sig: i32) {
        if self.reaped.load(Ordering::SeqCst) {
            return; // its pid and group may belong to someone else by now
        }
        if ffi::send_signal(-self.pid, sig).is_err() {
            let _ = ffi::send_signal(self.pid, sig);
        }
    }

    /// SIGKILL to the server's process group and to the server itself (in
    /// case it left the group).
    fn kill(&self) {
        if self.reaped.load(Ordering::SeqCst) {
            return;
        }
        let _ = ffi::send_signal(-self.pid, ffi::SIGKILL);
        let _ = ffi::send_signal(self.pid, ffi::SIGKILL);
    }
}

/// `(0, code)` or `(1, signal)`.
fn exit_of(s: ExitStatus) -> (i32, i32) {
    match (s.code(), s.signal()) {
        (Some(code), _) => (0, code),
        (None, Some(sig)) => (1, sig),
        (None, None) => (0, 125),
    }
}

/// Reads the supervisor's frames and does what they say, until DONE (exit
/// with the server's status) or until the supervisor is gone (kill the
/// server, exit 137).
fn dispatch(
    stream: &UnixStream,
    to_server: &mpsc::Sender<Option<Vec<u8>>>,
    status: &AtomicI32,
    server: &Server,
    shown: &str,
) -> ! {
    let mut agent = Some(io::stdout());
    loop {
        let gone = match read_frame(stream) {
            Ok(Some((kind::TO_SERVER, bytes))) => {
                let _ = to_server.send(Some(bytes));
                continue;
            }
            Ok(Some((kind::CLOSE_SERVER_STDIN, _))) => {
                let _ = to_server.send(None);
                continue;
            }
            Ok(Some((kind::TO_CLIENT, bytes))) => {
                if let Some(out) = &agent {
                    let mut out = out.lock();
                    if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                        // The agent stopped reading: drop what it would get.
                        drop(out);
                        agent = None;
                    }
                }
                continue;
            }
            Ok(Some((kind::DONE, _))) => {
                let code = status.load(Ordering::SeqCst);
                std::process::exit(if code < 0 { NOT_STARTED } else { code })
            }
            Ok(Some((other, _))) => format!("sent an unexpected frame (type {other})"),
            Ok(None) => "went away".to_string(),
            Err(err) => format!("connection failed ({err})"),
        };
        server.kill();
        say(&format!(
            "corral's MCP supervisor {gone}: killed `{shown}`, whose calls could no longer be governed"
        ));
        std::process::exit(SUPERVISOR_GONE)
    }
}

/// Copies `from` to the supervisor as `data` frames, then sends `eof`
/// (also when reading fails).
fn pump(mut from: impl Read, w: &Writer, data: u8, eof: u8) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if send(w, data, buf.get(..n).unwrap_or_default()).is_err() {
                    return; // the dispatcher sees the broken connection
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = send(w, eof, &[]);
}

/// Writes what the supervisor sends for the server, in order; `None`
/// closes its stdin. Once a write fails (the server closed its stdin or
/// exited), the rest is discarded.
fn feed_server(mut stdin: ChildStdin, queue: &mpsc::Receiver<Option<Vec<u8>>>) {
    let mut broken = false;
    while let Ok(Some(bytes)) = queue.recv() {
        if !broken && stdin.write_all(&bytes).is_err() {
            broken = true;
        }
    }
}

fn forward_signals(set: &SigSet, server: &Server) {
    loop {
        match ffi::wait_signal(set) {
            Ok(sig) => server.signal(sig),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Writes one frame.
fn write_frame(mut stream: &UnixStream, kind: u8, payload: &[u8]) -> io::Result<()> {
    for part in payload
        .chunks(MAX_FRAME)
        .chain(payload.is_empty().then_some(&[][..]))
    {
        let mut frame = Vec::with_capacity(5 + part.len());
        frame.push(kind);
        frame.extend_from_slice(&(part.len() as u32).to_be_bytes());
        frame.extend_from_slice(part);
        stream.write_all(&frame)?;
    }
    Ok(())
}

/// Reads one frame; `None` at a clean end of stream.
fn read_frame(mut stream: &UnixStream) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match stream.read(head.get_mut(got..).unwrap_or_default()) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    let [kind, a, b, c, d] = head;
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (at most {MAX_FRAME})"),
        ));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}

/// Writes `corral mcp wrap: <msg>` on stderr (a broken stderr is ignored).
fn say(msg: &str) {
    let _ = writeln!(io::stderr().lock(), "corral mcp wrap: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn wrap(name: Option<&str>, command: &[&str]) -> Invocation {
        Invocation::Wrap {
            name: name.map(str::to_string),
            command: args(command),
        }
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            parse(&args(&["mcp", "wrap", "--", "npx", "-y", "x"])),
            Ok(wrap(None, &["npx", "-y", "x"]))
        );
        assert_eq!(
            parse(&args(&["mcp", "wrap", "--name", "fs", "--", "srv", "--", "a"])),
            Ok(wrap(Some("fs"), &["srv", "--", "a"]))
        );
        assert_eq!(
            parse(&args(&["mcp", "wrap", "--name=fs", "srv", "-v"])),
            Ok(wrap(Some("fs"), &["srv", "-v"]))
        );
        assert_eq!(parse(&args(&["--help"])), Ok(Invocation::Help));
        assert_eq!(parse(&args(&["mcp", "wrap", "-h"])), Ok(Invocation::Help));
        for (bad, why) in [
            (&["run", "claude"][..], "unknown command `run`"),
            (&["mcp", "config"][..], "unknown command `mcp config`"),
            (&[][..], "no command given"),
            (&["mcp", "wrap"][..], "no server command given"),
            (&["mcp", "wrap", "--"][..], "no server command given"),
            (&["mcp", "wrap", "--name"][..], "`--name` needs a value"),
            (&["mcp", "wrap", "-x", "--", "srv"][..], "unknown option `-x`"),
        ] {
            let err = parse(&args(bad)).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn names_and_hello() {
        assert!(invoked_as_corral(OsStr::new("corral")));
        assert!(invoked_as_corral(OsStr::new("/run/corral/bin/corral")));
        assert!(!invoked_as_corral(OsStr::new("/run/corral/init")));
        assert!(!invoked_as_corral(OsStr::new("corral-init")));
        assert_eq!(hello(Some("fs"), &args(&["a", "b c"])), b"\x01fs\0a\0b c");
        assert_eq!(hello(None, &args(&["a"])), b"\x01\0a");
    }

    #[test]
    fn frames_round_trip() {
        let (a, b) = UnixStream::pair().unwrap();
        write_frame(&a, kind::TO_CLIENT, b"hello").unwrap();
        write_frame(&a, kind::DONE, b"").unwrap();
        // Long payloads are split.
        let long = vec![7u8; MAX_FRAME + 3];
        let t = std::thread::spawn(move || write_frame(&a, kind::TO_SERVER, &long));
        assert_eq!(
            read_frame(&b).unwrap(),
            Some((kind::TO_CLIENT, b"hello".to_vec()))
        );
        assert_eq!(read_frame(&b).unwrap(), Some((kind::DONE, vec![])));
        assert_eq!(read_frame(&b).unwrap().unwrap().1.len(), MAX_FRAME);
        assert_eq!(read_frame(&b).unwrap(), Some((kind::TO_SERVER, vec![7; 3])));
        t.join().unwrap().unwrap();
        assert_eq!(read_frame(&b).unwrap(), None);

        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[kind::TO_CLIENT, 0xff, 0, 0, 0]).unwrap();
        assert!(read_frame(&b).is_err(), "an oversized frame was accepted");
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[kind::TO_CLIENT, 0]).unwrap();
        drop(a);
        assert!(read_frame(&b).is_err(), "a cut header was taken for the end");
    }
}
