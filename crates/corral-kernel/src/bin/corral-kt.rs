//! `corral-kt`: the kernel tests' agent. Performs one action per command
//! and reports the outcome, so tests can assert the errno a governed
//! process sees. Runs natively and inside the BPF LSM test VM.
//!
//! ```text
//! corral-kt ACTION ARGS...        one action; exit 0 on success, else the errno
//! corral-kt serve                 read actions from stdin, one per line; answer each on stdout
//! ```
//! Actions: `tcp ADDR PORT`, `tcpw ADDR PORT` (connect, write `corral`,
//! report `PEER PID`: the address getpeername() gives and this process's
//! pid), `uring ADDR PORT` (the same with io_uring's connect), `udp ADDR
//! PORT` (sendto), `udpc ADDR PORT` (connect), `tfo ADDR PORT` (TCP Fast
//! Open sendto of `corral`), `read PATH`,
//! `write PATH`, `reopen PATH` (O_PATH, then open /proc/self/fd/N),
//! `bindread SRC DST` (private mount namespace, bind SRC on DST, read DST),
//! `exec PATH [ARGS...]`, `sleep MS`, `comm NAME` (set
//! comm), `pid`. Output: `ok [detail]` or `err <errno> <name>`.

use std::io::{BufRead, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOENT => "ENOENT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EINVAL => "EINVAL",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        _ => "E?",
    }
}

fn io_res(r: std::io::Result<String>) -> (i32, String) {
    match r {
        Ok(s) => (
            0,
            if s.is_empty() {
                "ok".into()
            } else {
                format!("ok {s}")
            },
        ),
        Err(e) => {
            let n = e.raw_os_error().unwrap_or(255);
            (n, format!("err {n} {}", errno_name(n)))
        }
    }
}

fn sockaddr(args: &[&str]) -> std::io::Result<SocketAddr> {
    let bad = || std::io::Error::from_raw_os_error(libc::EINVAL);
    let ip: IpAddr = args.first().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let port: u16 = args.get(1).ok_or_else(bad)?.parse().map_err(|_| bad())?;
    Ok(SocketAddr::new(ip, port))
}

fn act(line: &str) -> (i32, String) {
    let args: Vec<&str> = line.split_whitespace().collect();
    let Some((cmd, rest)) = args.split_first() else {
        return (libc::EINVAL, "err 22 EINVAL".into());
    };
    let r: std::io::Result<String> = match *cmd {
        "tcp" => sockaddr(rest)
            .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).map(|_| String::new())),
        "udp" => sockaddr(rest).and_then(|a| {
            let s = UdpSocket::bind(if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
            s.send_to(b"corral", a).map(|_| String::new())
        }),
        "udpc" => sockaddr(rest).and_then(|a| {
            let s = UdpSocket::bind(if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
            s.connect(a).map(|_| String::new())
        }),
        "tfo" => sockaddr(rest).and_then(tfo),
        "tcpw" => sockaddr(rest).and_then(|a| {
            let s = TcpStream::connect_timeout(&a, Duration::from_secs(2))?;
            wrote(s)
        }),
        "uring" => sockaddr(rest).and_then(uring_connect).and_then(wrote),
        "read" => rest
            .first()
            .map_or(Err(std::io::Error::from_raw_os_error(libc::EINVAL)), |p| {
                let mut s = String::new();
                std::fs::File::open(p)
                    .and_then(|mut f| f.read_to_string(&mut s))
                    .map(|n| n.to_string())
            }),
        "reopen" => rest
            .first()
            .map_or(Err(std::io::Error::from_raw_os_error(libc::EINVAL)), |p| {
                reopen(p)
            }),
        "bindread" => match (rest.first(), rest.get(1)) {
            (Some(src), Some(dst)) => bindread(src, dst),
            _ => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        },
        "write" => rest
            .first()
            .map_or(Err(std::io::Error::from_raw_os_error(libc::EINVAL)), |p| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .and_then(|mut f| f.write_all(b"x"))
                    .map(|_| String::new())
            }),
        "exec" => rest
            .first()
            .map_or(Err(std::io::Error::from_raw_os_error(libc::EINVAL)), |p| {
                std::process::Command::new(p)
                    .args(&rest[1..])
                    .status()
                    .map(|s| s.code().unwrap_or(-1).to_string())
            }),
        "sleep" => {
            std::thread::sleep(Duration::from_millis(
                rest.first().and_then(|s| s.parse().ok()).unwrap_or(100),
            ));
            Ok(String::new())
        }
        "comm" => set_comm(rest.first().copied().unwrap_or("corral")),
        "pid" => Ok(std::process::id().to_string()),
        _ => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
    };
    io_res(r)
}

/// Writes `corral` on a connected stream; reports its peer and our pid.
fn wrote(mut s: TcpStream) -> std::io::Result<String> {
    s.write_all(b"corral")?;
    let peer = s.peer_addr()?;
    Ok(format!("{peer} {}", std::process::id()))
}

/// Connects a new TCP socket to `a` with io_uring's IORING_OP_CONNECT
/// (one submission, one completion, rings mapped by hand).
#[allow(unsafe_code)]
fn uring_connect(a: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // struct io_uring_params: 10 u32s, then io_sqring_offsets and
    // io_cqring_offsets (8 u32s and a u64 each).
    #[repr(C)]
    #[derive(Default)]
    struct Offsets {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        flags_or_overflow: u32,
        dropped_or_cqes: u32,
        array_or_flags: u32,
        resv1: u32,
        user_addr: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Params {
        sq_entries: u32,
        cq_entries: u32,
        flags: u32,
        sq_thread_cpu: u32,
        sq_thread_idle: u32,
        features: u32,
        wq_fd: u32,
        resv: [u32; 3],
        sq_off: Offsets,
        cq_off: Offsets,
    }
    const IORING_OP_CONNECT: u8 = 16;
    const IORING_ENTER_GETEVENTS: u32 = 1;
    const IORING_OFF_SQ_RING: i64 = 0;
    const IORING_OFF_CQ_RING: i64 = 0x800_0000;
    const IORING_OFF_SQES: i64 = 0x1000_0000;
    let last = std::io::Error::last_os_error;
    let fam = if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the fd is owned below.
    let sfd = unsafe { libc::socket(fam, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if sfd < 0 {
        return Err(last());
    }
    // SAFETY: sfd was just created and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(sfd) };
    let mut p = Params::default();
    // SAFETY: io_uring_setup reads and writes one io_uring_params, which
    // `Params` mirrors (120 bytes).
    let rfd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, &mut p as *mut Params) };
    if rfd < 0 {
        return Err(last());
    }
    // SAFETY: the ring fd was just created and is owned by nobody else.
    let ring = unsafe { OwnedFd::from_raw_fd(rfd as i32) };
    let map = |len: usize, off: i64| -> std::io::Result<*mut u8> {
        // SAFETY: a fresh shared mapping of the ring fd at a documented
        // offset; unmapped when the process exits (this is a test binary).
        let m = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                ring.as_raw_fd(),
                off,
            )
        };
        if m == libc::MAP_FAILED {
            Err(last())
        } else {
            Ok(m.cast())
        }
    };
    let sq = map(
        p.sq_off.array_or_flags as usize + p.sq_entries as usize * 4,
        IORING_OFF_SQ_RING,
    )?;
    let cq = map(
        p.cq_off.dropped_or_cqes as usize + p.cq_entries as usize * 16,
        IORING_OFF_CQ_RING,
    )?;
    let sqes = map(p.sq_entries as usize * 64, IORING_OFF_SQES)?;
    let (storage, len) = to_raw(a);
    // SAFETY: every offset below comes from the kernel's io_uring_params
    // for these mappings, which are large enough for them (sizes above);
    // the SQE is 64 bytes at the start of `sqes`; `storage` outlives the
    // io_uring_enter call that waits for the completion.
    unsafe {
        let sqe = sqes;
        std::ptr::write_bytes(sqe, 0, 64);
        *sqe = IORING_OP_CONNECT;
        *(sqe.add(4) as *mut i32) = sock.as_raw_fd();
        *(sqe.add(8) as *mut u64) = u64::from(len); // off: addrlen
        *(sqe.add(16) as *mut u64) = &storage as *const libc::sockaddr_storage as u64; // addr
        *(sqe.add(32) as *mut u64) = 1; // user_data
        let mask = *(sq.add(p.sq_off.ring_mask as usize) as *const u32);
        let tail = &*(sq.add(p.sq_off.tail as usize) as *const std::sync::atomic::AtomicU32);
        let t = tail.load(std::sync::atomic::Ordering::Acquire);
        *(sq.add(p.sq_off.array_or_flags as usize) as *mut u32).add((t & mask) as usize) = 0;
        tail.store(t.wrapping_add(1), std::sync::atomic::Ordering::Release);
        let n = libc::syscall(
            libc::SYS_io_uring_enter,
            ring.as_raw_fd(),
            1u32,
            1u32,
            IORING_ENTER_GETEVENTS,
            std::ptr::null::<u8>(),
            0usize,
        );
        if n < 0 {
            return Err(last());
        }
        let cmask = *(cq.add(p.cq_off.ring_mask as usize) as *const u32);
        let head = &*(cq.add(p.cq_off.head as usize) as *const std::sync::atomic::AtomicU32);
        let h = head.load(std::sync::atomic::Ordering::Acquire);
        let cqe = cq.add(p.cq_off.dropped_or_cqes as usize + (h & cmask) as usize * 16);
        let res = *(cqe.add(8) as *const i32);
        head.store(h.wrapping_add(1), std::sync::atomic::Ordering::Release);
        if res < 0 {
            return Err(std::io::Error::from_raw_os_error(-res));
        }
    }
    Ok(TcpStream::from(sock))
}

#[allow(unsafe_code)]
fn tfo(a: SocketAddr) -> std::io::Result<String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let fam = if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(fam, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (storage, len) = to_raw(a);
    let msg = b"corral";
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes; `msg` is live.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            libc::MSG_FASTOPEN,
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(String::new())
    }
}

fn to_raw(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY-free: zeroed storage built field by field.
    let mut st: libc::sockaddr_storage = unsafe_zeroed();
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            write_into(&mut st, &sin);
            (st, std::mem::size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            write_into(&mut st, &sin6);
            (st, std::mem::size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

#[allow(unsafe_code)]
fn unsafe_zeroed() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

#[allow(unsafe_code)]
fn write_into<T>(st: &mut libc::sockaddr_storage, v: &T) {
    // SAFETY: T is a sockaddr_in/in6, smaller than sockaddr_storage, and
    // both are plain data; the copy stays within `st`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (v as *const T).cast::<u8>(),
            (st as *mut libc::sockaddr_storage).cast::<u8>(),
            std::mem::size_of::<T>(),
        )
    }
}

/// Opens `p` with O_PATH (no open check), then reads it again through
/// /proc/self/fd/N: the second open must be decided on the object.
fn reopen(p: &str) -> std::io::Result<String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(p)?;
    let mut s = String::new();
    std::fs::File::open(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .and_then(|mut g| g.read_to_string(&mut s))
        .map(|n| n.to_string())
}

/// In a new mount namespace, binds `src` over `dst` and reads `dst`: the
/// mount-alias escape. Fails at unshare or mount where sessions may not.
#[allow(unsafe_code)]
fn bindread(src: &str, dst: &str) -> std::io::Result<String> {
    use std::ffi::CString;
    let bad = |_| std::io::Error::from_raw_os_error(libc::EINVAL);
    let (s, d) = (CString::new(src).map_err(bad)?, CString::new(dst).map_err(bad)?);
    // SAFETY: unshare with a flag; mount with valid C strings and no data.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let none = CString::new("none").map_err(bad)?;
        if libc::mount(
            none.as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    let mut out = String::new();
    std::fs::File::open(dst)
        .and_then(|mut f| f.read_to_string(&mut out))
        .map(|n| n.to_string())
}

#[allow(unsafe_code)]
fn set_comm(name: &str) -> std::io::Result<String> {
    let mut buf = [0u8; 16];
    for (i, b) in name.bytes().take(15).enumerate() {
        buf[i] = b;
    }
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from `buf`.
    let r = unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
    if r == 0 {
        Ok(String::new())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        let stdin = std::io::stdin();
        let mut out = std::io::stdout();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let (_, msg) = act(&line);
            let _ = writeln!(out, "{msg}");
            let _ = out.flush();
        }
        return;
    }
    let (code, msg) = act(&args.join(" "));
    println!("{msg}");
    std::process::exit(code.min(255));
}
