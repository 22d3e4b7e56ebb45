//! The framing between the relay of `corral mcp wrap` (corral-init's
//! `mcpwrap` module, inside the session) and the supervisor.
//!
//! Frames on the unix stream socket, both ways: a type byte, the payload's
//! length as a big-endian u32, the payload (at most [`MAX_FRAME`] bytes;
//! longer data is sent as several frames). The types and limits are
//! corral-init's `mcpframe.rs`, included here, so both ends share them.
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
//! HELLO comes first and only once, answered by OK or ABORT.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

// The constants are corral-init's own file, so relay and supervisor agree
// by construction.
#[path = "../../../corral-init/src/mcpframe.rs"]
mod frame;
pub use frame::{kind, MAX_FRAME, VERSION};

/// What HELLO says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// `--name`, if given (and not empty).
    pub name: Option<String>,
    /// The server's command line.
    pub argv: Vec<String>,
}

/// How the server ended (SERVER_EXIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(u32),
    /// A signal killed it.
    Signal(u32),
}

/// Decodes HELLO's payload. Names and arguments that are not UTF-8 are
/// refused: a policy could not name them.
pub fn parse_hello(payload: &[u8]) -> Result<Hello, String> {
    let Some((&version, rest)) = payload.split_first() else {
        return Err("empty hello".into());
    };
    if version != VERSION {
        return Err(format!(
            "hello of protocol version {version}, this supervisor speaks {VERSION}"
        ));
    }
    let mut fields = rest.split(|&b| b == 0);
    let name = fields.next().unwrap_or_default();
    let name = std::str::from_utf8(name).map_err(|_| "the server name is not UTF-8".to_string())?;
    let argv = fields
        .enumerate()
        .map(|(i, a)| {
            std::str::from_utf8(a)
                .map(str::to_string)
                .map_err(|_| format!("argument {i} of the server command is not UTF-8"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if argv.is_empty() {
        return Err("hello without a server command".into());
    }
    Ok(Hello {
        name: (!name.is_empty()).then(|| name.to_string()),
        argv,
    })
}

/// Decodes SERVER_EXIT's payload.
pub fn parse_exit(payload: &[u8]) -> Option<Exit> {
    let [how, a, b, c, d] = payload else {
        return None;
    };
    let n = u32::from_be_bytes([*a, *b, *c, *d]);
    match how {
        0 => Some(Exit::Code(n)),
        1 => Some(Exit::Signal(n)),
        _ => None,
    }
}

/// Reads one frame; `None` at a clean end of stream (between frames).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        let n = r.read(head.get_mut(got..).unwrap_or_default()).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
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
    r.read_exact(&mut payload).await?;
    Ok(Some((kind, payload)))
}

/// Writes `payload` as one frame, or several of at most [`MAX_FRAME`]
/// bytes (an empty payload is one empty frame).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, kind: u8, payload: &[u8]) -> io::Result<()> {
    let empty: &[u8] = &[];
    let parts = payload
        .chunks(MAX_FRAME)
        .chain(payload.is_empty().then_some(empty));
    for part in parts {
        let mut frame = Vec::with_capacity(5 + part.len());
        frame.push(kind);
        frame.extend_from_slice(&(part.len() as u32).to_be_bytes());
        frame.extend_from_slice(part);
        w.write_all(&frame).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hellos() {
        assert_eq!(
            parse_hello(b"\x01fs\0npx\0-y\0@scope/x").unwrap(),
            Hello {
                name: Some("fs".into()),
                argv: vec!["npx".into(), "-y".into(), "@scope/x".into()],
            }
        );
        assert_eq!(
            parse_hello(b"\x01\0srv").unwrap(),
            Hello {
                name: None,
                argv: vec!["srv".into()],
            }
        );
        assert_eq!(parse_hello(b"\x01\0").unwrap().argv, vec![String::new()]);
        for (bad, why) in [
            (&b""[..], "empty hello"),
            (b"\x02\0srv", "version 2"),
            (b"\x01fs", "without a server command"),
            (b"\x01\xff\0srv", "name is not UTF-8"),
            (b"\x01\0srv\0\xff", "argument 1"),
        ] {
            let err = parse_hello(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn exits() {
        assert_eq!(parse_exit(&[0, 0, 0, 0, 42]), Some(Exit::Code(42)));
        assert_eq!(parse_exit(&[1, 0, 0, 0, 9]), Some(Exit::Signal(9)));
        assert_eq!(parse_exit(&[2, 0, 0, 0, 9]), None);
        assert_eq!(parse_exit(&[0, 0, 0]), None);
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(4 * MAX_FRAME);
        write_frame(&mut a, kind::TO_CLIENT, b"x").await.unwrap();
        write_frame(&mut a, kind::DONE, b"").await.unwrap();
        write_frame(&mut a, kind::TO_SERVER, &vec![1u8; MAX_FRAME + 1])
            .await
            .unwrap();
        drop(a);
        assert_eq!(
            read_frame(&mut b).await.unwrap(),
            Some((kind::TO_CLIENT, b"x".to_vec()))
        );
        assert_eq!(read_frame(&mut b).await.unwrap(), Some((kind::DONE, vec![])));
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap().1.len(), MAX_FRAME);
        assert_eq!(
            read_frame(&mut b).await.unwrap(),
            Some((kind::TO_SERVER, vec![1]))
        );
        assert_eq!(read_frame(&mut b).await.unwrap(), None);

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[kind::TO_CLIENT, 0x7f, 0, 0, 0]).await.unwrap();
        assert!(read_frame(&mut b).await.is_err());
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[kind::TO_CLIENT, 0, 0]).await.unwrap();
        drop(a);
        assert!(read_frame(&mut b).await.is_err());
    }
}
