//! corral-init's side of the go/exit protocol with the supervisor, over the
//! unix stream socket named by `CORRAL_GO`, one line per message:
//!
//! * init → supervisor: `hello <pid>` (the pid init sees for itself; the
//!   supervisor takes the real one from SO_PEERCRED);
//! * supervisor → init: `go`, or `abort <reason>`;
//! * init → supervisor, once the command is gone: `exit code <n>` or
//!   `exit signal <n>`.
//!
//! After `go` the supervisor keeps the socket open for the whole session;
//! anything further it sends is ignored, and end-of-file means it died.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::ffi;

/// How long the supervisor may take to start listening.
const CONNECT_PATIENCE: Duration = Duration::from_secs(2);
/// Longest line accepted from the supervisor.
const MAX_LINE: usize = 4096;

/// What the supervisor answered to `hello`.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Enforcement is attached: run the command.
    Go,
    /// Do not run the command, for this reason.
    Abort(String),
}

/// How the command ended.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl Exit {
    /// Decodes a `waitpid` status (the command is never traced or stopped
    /// as far as `waitpid` without WUNTRACED is concerned).
    pub fn from_wait_status(status: i32) -> Exit {
        let sig = status & 0x7f;
        if sig == 0 {
            Exit::Code((status >> 8) & 0xff)
        } else {
            Exit::Signal(sig)
        }
    }

    /// The line reported to the supervisor.
    pub fn line(self) -> String {
        match self {
            Exit::Code(n) => format!("exit code {n}\n"),
            Exit::Signal(n) => format!("exit signal {n}\n"),
        }
    }

    /// corral-init's own exit status, as a shell would report it.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(n) => n,
            Exit::Signal(n) => 128 + n,
        }
    }
}

/// Connects to the supervisor, retrying while its socket is not there yet
/// or not yet listening. The socket is close-on-exec (std's default).
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let deadline = Instant::now() + CONNECT_PATIENCE;
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(err),
        }
    }
}

/// Sends `hello <pid>`.
pub fn hello(stream: &UnixStream, pid: i32) -> io::Result<()> {
    ffi::send_all(stream.as_raw_fd(), format!("hello {pid}\n").as_bytes())
}

/// Sends the exit report.
pub fn report(stream: &UnixStream, exit: Exit) -> io::Result<()> {
    ffi::send_all(stream.as_raw_fd(), exit.line().as_bytes())
}

/// Reads the supervisor's answer. `Ok(None)` if it closed the socket first.
/// Reads byte by byte so that nothing after the line is consumed.
pub fn answer(mut stream: &UnixStream) -> io::Result<Option<Answer>> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() >= MAX_LINE => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            Ok(_) => line.push(byte[0]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    parse_answer(&line).map(Some)
}

fn parse_answer(line: &[u8]) -> io::Result<Answer> {
    let line = String::from_utf8_lossy(line);
    let line = line.strip_suffix('\r').unwrap_or(&line);
    if line == "go" {
        Ok(Answer::Go)
    } else if let Some(reason) = line.strip_prefix("abort ") {
        Ok(Answer::Abort(reason.to_string()))
    } else if line == "abort" {
        Ok(Answer::Abort("no reason given".to_string()))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected message `{line}`"),
        ))
    }
}

/// Blocks until the supervisor closes the socket (or reading fails),
/// ignoring whatever it sends meanwhile.
pub fn wait_for_close(mut stream: UnixStream) {
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(parse_answer(b"go").unwrap(), Answer::Go);
        assert_eq!(parse_answer(b"go\r").unwrap(), Answer::Go);
        assert_eq!(
            parse_answer(b"abort policy `x` failed").unwrap(),
            Answer::Abort("policy `x` failed".into())
        );
        assert_eq!(
            parse_answer(b"abort").unwrap(),
            Answer::Abort("no reason given".into())
        );
        assert!(parse_answer(b"gone").is_err());
        assert!(parse_answer(b"").is_err());
    }

    #[test]
    fn wait_statuses() {
        assert_eq!(Exit::from_wait_status(0), Exit::Code(0));
        assert_eq!(Exit::from_wait_status(42 << 8), Exit::Code(42));
        assert_eq!(Exit::from_wait_status(9), Exit::Signal(9));
        // SIGSEGV with core dumped.
        assert_eq!(Exit::from_wait_status(0x80 | 11), Exit::Signal(11));
        assert_eq!(Exit::Signal(15).status(), 143);
        assert_eq!(Exit::Signal(15).line(), "exit signal 15\n");
        assert_eq!(Exit::Code(3).line(), "exit code 3\n");
    }
}
