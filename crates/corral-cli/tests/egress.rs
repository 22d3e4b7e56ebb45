//! The egress proxy end to end: real clients (curl, Python, Node) inside a
//! real podman session reach HTTPS and plain HTTP servers in a network
//! namespace the test creates (the "remote" network), through the kernel's
//! redirect and corral's proxy. Asserts what arrives at the servers, what
//! the clients see, what the audit trail holds, and that a placeholder
//! secret's value never enters the session.
//!
//! Needs root, podman, `ip`, curl, python3 and node; without one of them
//! the test records a skip (`CORRAL-SKIP`), never passes silently.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
mod egress_util;

use common::{has, podman_ready, text, Scratch};
use egress_util::Remote;
use std::process::Output;

/// File and exec rules for the tools the script runs, and the network and
/// HTTP rules under test. `@IP@` is the remote network's address.
const POLICY: &str = r#"
@id("read-all")
permit (principal, action == Action::"FileOpenReadOnly", resource) when { resource in Dir::"/" };
@id("write-scratch")
permit (principal, action in Action::"FileOpen", resource)
when { resource in [Dir::"/tmp/", Dir::"/dev/", Dir::"/proc/", Dir::"@WS@/"] };
@id("exec-system")
permit (principal, action == Action::"ProcessExec", resource)
when { resource in [Dir::"/usr/", Dir::"/bin/", Dir::"/lib/", Dir::"/run/corral/"] };

@id("net-api")
permit (principal, action == Action::"NetworkConnect", resource)
when { resource in [Host::"api.corral.test:443", Host::"other.corral.test:443", Host::"api.corral.test:80"] };
@id("net-banner")
permit (principal, action == Action::"NetworkConnect", resource in Host::"@IP@:7");
@id("net-banner-by-name")
permit (principal, action == Action::"NetworkConnect", resource in Host::"api.corral.test:2222");
@id("forbid-discard")
forbid (principal, action == Action::"NetworkConnect", resource in Host::"@IP@:9");

@id("loopback")
permit (principal, action == Action::"NetworkConnect", resource) when { context.ip.isLoopback() };

@id("http-any")
permit (principal, action == Action::"HttpRequest", resource);
@id("forbid-admin")
forbid (principal, action == Action::"HttpRequest", resource)
when { context.path like "/admin*" };

@id("inject-test-header")
permit (principal, action == Action::"HttpRewrite", resource == Host::"api.corral.test")
when { context.header == "X-Corral-Test" && context.value == "a b \"q\" ü" };

@id("token-to-api")
permit (principal, action == Action::"SecretUse", resource in Host::"api.corral.test:443")
when { context.secret == "CORRAL_TEST_TOKEN" };
"#;

/// A WebSocket client (RFC 6455, one masked text frame) over TLS, in plain
/// Python: the session's Python has no WebSocket library.
const WS_PY: &str = r#"
import base64, os, socket, ssl, struct, sys
host = "api.corral.test"
ctx = ssl.create_default_context()
s = ctx.wrap_socket(socket.create_connection((host, 443), timeout=10), server_hostname=host)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (host, key)).encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
status = head.split(b"\r\n")[0].decode()
msg = b"hello-corral"
mask = os.urandom(4)
s.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
hdr = s.recv(2)
n = hdr[1] & 0x7f
data = b""
while len(data) < n:
    data += s.recv(n - len(data))
print("ws:", status, data.decode())
"#;

/// Raw-socket probes: what a tool that ignores every proxy setting gets.
const PROBE_PY: &str = r#"
import socket, ssl, sys, time
ip = sys.argv[1]
def tcp(port):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((ip, port))
        return "connected"
    except OSError as e:
        return "error " + (e.strerror or str(e))
print("direct-forbidden:", tcp(9))
print("direct-unlisted:", tcp(8080))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(b"x", (ip, 443))
    print("udp: sent")
except OSError as e:
    print("udp: error", e.strerror)
# A server-speaks-first protocol to an allowed address: spliced through.
s = socket.create_connection((ip, 7), timeout=5)
banner = s.recv(100)
s.sendall(b"ping\n")
print("opaque:", banner.decode().strip(), s.recv(100).decode().strip(), "peer", s.getpeername()[0])
# The same service on a port a host-name permit names: the proxy finds the
# name that resolves to this address.
s = socket.create_connection((ip, 2222), timeout=5)
banner = s.recv(100)
s.sendall(b"pong\n")
print("opaque-by-name:", banner.decode().strip(), s.recv(100).decode().strip())
# Garbage where a TLS ClientHello belongs.
g = socket.create_connection(("api.corral.test", 443), timeout=5)
g.sendall(b"\x16\x03\x01\x00\x05garbage-not-a-hello")
try:
    print("garbage:", "closed" if g.recv(100) in (b"",) else "answered")
except OSError as e:
    print("garbage: closed", e.strerror)
# Request smuggling: Content-Length and Transfer-Encoding together.
m = socket.create_connection(("api.corral.test", 80), timeout=5)
m.sendall(b"POST /smuggle HTTP/1.1\r\nHost: api.corral.test\r\nContent-Length: 4\r\n"
          b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: api.corral.test\r\n\r\n")
print("smuggle:", m.recv(200).split(b"\r\n")[0].decode())
# Host spoofing on plain HTTP: a Host that does not name this address.
h = socket.create_connection((ip, 80), timeout=5)
h.sendall(b"GET /spoof HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
print("spoof:", h.recv(200).split(b"\r\n")[0].decode())
# The proxy's own port, reached directly (the loopback rule allows it): its
# destination is unknown, so it is refused rather than served from the host.
ports = [int(l.split()[1].split(":")[1], 16) for l in open("/proc/net/tcp").read().splitlines()[1:]
         if l.split()[3] == "0A" and l.split()[1].startswith("0100007F")]
d = socket.create_connection(("127.0.0.1", ports[0]), timeout=5)
d.sendall(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
try:
    print("proxy-port:", "listeners", len(ports), (d.recv(100) or b"closed").decode())
except OSError as e:
    print("proxy-port: listeners", len(ports), "closed", e.strerror)
# CONNECT to the host's loopback inside a redirected connection.
c = socket.create_connection(("api.corral.test", 80), timeout=5)
c.sendall(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n")
print("connect-loopback:", c.recv(300).split(b"\r\n")[0].decode())
# An over-long header.
o = socket.create_connection(("api.corral.test", 80), timeout=5)
o.sendall(b"GET /long HTTP/1.1\r\nHost: api.corral.test\r\nX-Long: " + b"a" * 200000 + b"\r\n\r\n")
try:
    print("long-header:", (o.recv(200).split(b"\r\n")[0] or b"closed").decode())
except OSError as e:
    print("long-header: closed", e.strerror)
"#;

const SCRIPT: &str = r#"
cd "$WS"
T="Authorization: Bearer $CORRAL_TEST_TOKEN"
echo "== curl: $(curl -sS -H "$T" https://api.corral.test/hello | tr -d '\n')"
echo "== admin: $(curl -sS -w ' status=%{http_code}' https://api.corral.test/admin/x | tr -d '\n')"
echo "== other: $(curl -sS -H "$T" -w ' status=%{http_code}' https://other.corral.test/other | tr -d '\n')"
echo "== denied: $(curl -sS -w ' status=%{http_code}' https://denied.corral.test/x | tr -d '\n')"
echo "== h2: $(curl -sS --http2 -w ' version=%{http_version}' https://api.corral.test/h2 | tr -d '\n')"
echo "== noproxy: $(curl -sS --noproxy '*' -w ' status=%{http_code}' https://api.corral.test/admin/bypass | tr -d '\n')"
echo "== spoof-sni: $(curl -sS -w ' status=%{http_code}' -H 'Host: other.corral.test' https://api.corral.test/sni | tr -d '\n')"
head -c 10485760 /dev/zero > big.bin
echo "== big: $(curl -sS -H 'Content-Type: application/octet-stream' --data-binary @big.bin -w ' status=%{http_code}' https://api.corral.test/big | tr -d '\n')"
rm -f big.bin
python3 -c 'import os, urllib.request as u; r = u.urlopen(u.Request("https://api.corral.test/py", headers={"Authorization": "Bearer " + os.environ["CORRAL_TEST_TOKEN"]})); print("== python:", r.status, r.read().decode().strip())'
node -e 'fetch("https://api.corral.test/node").then(async r => console.log("== node:", r.status, (await r.text()).trim())).catch(e => { console.log("== node: ERR", String(e.cause || e)); })'
python3 ws.py
python3 probe.py "$REMOTE_IP"
# Slowloris: half a request head, then silence past the proxy's header timeout.
python3 -c '
import socket, time
s = socket.create_connection(("api.corral.test", 80), timeout=20)
s.sendall(b"GET /slow HTTP/1.1\r\nHost: api.corral.test\r\nX-Slow: ")
t = time.time()
try:
    r = s.recv(100)
except OSError as e:
    r = b""
print("== slowloris: closed after %ds" % round(time.time() - t), r.split(b"\r\n")[0].decode())
'
# What the session can see of the secret: its environment, every
# process's environment and command line, and the files it can write.
{ env; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline; cat /run/corral/*.pem; } > dump.txt 2>/dev/null
find /tmp "$HOME" -type f -exec cat {} + >> dump.txt 2>/dev/null
echo "== done"
"#;

fn skip_unless(test: &str, progs: &[&str]) -> bool {
    if !podman_ready(test) {
        return false;
    }
    for p in progs {
        if !has(p) {
            corral_vmtest::skip(test, &format!("{p} is not installed"));
            return false;
        }
    }
    true
}

fn line<'a>(out: &'a str, tag: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(tag))
        .unwrap_or_else(|| panic!("no `{tag}` line in:\n{out}"))
}

#[test]
fn real_clients_through_the_egress_proxy() {
    let t = "real_clients_through_the_egress_proxy";
    if !skip_unless(t, &["ip", "curl", "python3", "node"]) {
        return;
    }
    let dir = Scratch::new("egress");
    let remote = Remote::start(&dir.0).expect("the remote test network");
    let ws = dir.0.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let ip = remote.ip.to_string();
    let policy = dir.file(
        "policy.cedar",
        &POLICY
            .replace("@IP@", &ip)
            .replace("@WS@", &ws.display().to_string()),
    );
    std::fs::write(ws.join("ws.py"), WS_PY).unwrap();
    std::fs::write(ws.join("probe.py"), PROBE_PY).unwrap();
    std::fs::write(ws.join("script.sh"), SCRIPT).unwrap();
    let real = format!("real-{:x}-secret value", rand_u64());
    let events = dir.0.join("events.jsonl");
    let mut c = dir.corral();
    c.arg("run")
        .arg("--policy")
        .arg(&policy)
        .arg("--events")
        .arg(&events)
        .arg("--project")
        .arg(&ws)
        .arg("--upstream-ca")
        .arg(&remote.ca_file)
        .arg("--secret")
        .arg("CORRAL_TEST_TOKEN=env:CORRAL_TEST_SOURCE")
        .args([
            "-e",
            &format!("REMOTE_IP={ip}"),
            "-e",
            &format!("WS={}", ws.display()),
        ]);
    for n in egress_util::NAMES {
        c.arg("--add-host").arg(format!("{n}:{ip}"));
    }
    c.env("CORRAL_TEST_SOURCE", &real)
        .args(["--", "bash", ws.join("script.sh").to_str().unwrap()]);
    let o: Output = c.output().expect("run corral");
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    eprintln!("--- session stdout\n{out}\n--- session stderr\n{err}");
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    assert!(out.contains("== done"), "the script did not finish:\n{out}");
    let seen = remote.seen();
    let find = |path: &str| {
        seen.iter()
            .find(|s| s.path == path)
            .unwrap_or_else(|| panic!("{path} never reached the remote server: {seen:#?}"))
            .clone()
    };

    // curl: the injected header with its exact value, the secret's real
    // value in place of the placeholder, on the allowed host.
    assert!(line(&out, "== curl:").contains("GET /hello"), "{out}");
    let hello = find("/hello");
    assert_eq!(hello.header("x-corral-test"), Some("a b \"q\" ü".as_bytes()));
    assert_eq!(
        hello.header("authorization"),
        Some(format!("Bearer {real}").as_bytes())
    );
    // Python and Node: trusted the CA and went through.
    assert!(
        line(&out, "== python:").contains("200 remote says: https"),
        "{out}"
    );
    assert!(line(&out, "== python:").ends_with("GET /py"), "{out}");
    assert_eq!(
        find("/py").header("authorization"),
        Some(format!("Bearer {real}").as_bytes())
    );
    assert!(line(&out, "== node:").contains("200 remote says: https"), "{out}");
    assert!(find("/node").header("x-corral-test").is_some());
    // HTTP/2 end to end.
    let h2 = line(&out, "== h2:");
    assert!(h2.contains("version=2"), "{h2}");
    assert_eq!(find("/h2").version, "HTTP/2.0");
    // WebSocket echo through the proxy.
    assert!(
        line(&out, "ws:").contains("101") && line(&out, "ws:").ends_with("hello-corral"),
        "{out}"
    );

    // Forbidden path and host: 403 naming the policy, nothing delivered.
    let admin = line(&out, "== admin:");
    assert!(
        admin.contains("status=403") && admin.contains("forbid-admin"),
        "{admin}"
    );
    let bypass = line(&out, "== noproxy:");
    assert!(
        bypass.contains("status=403") && bypass.contains("forbid-admin"),
        "{bypass}"
    );
    let denied = line(&out, "== denied:");
    assert!(
        denied.contains("status=403") && denied.contains("NetworkConnect"),
        "{denied}"
    );
    assert!(
        seen.iter()
            .all(|s| !s.path.starts_with("/admin") && s.path != "/x"),
        "{seen:#?}"
    );
    // SNI and Host must agree.
    assert!(line(&out, "== spoof-sni:").contains("status=421"), "{out}");
    assert!(seen.iter().all(|s| s.path != "/sni" && s.path != "/spoof"));
    assert!(line(&out, "spoof:").contains("421"), "{out}");

    // The placeholder goes unchanged to a host not allowed the secret.
    let other = find("/other");
    let auth = String::from_utf8(other.header("authorization").unwrap().to_vec()).unwrap();
    assert!(auth.starts_with("Bearer corral-placeholder-"), "{auth}");

    // Direct connections: refused in the kernel; a non-HTTP protocol to an
    // allowed address is spliced (and the client sees its real peer).
    assert!(
        line(&out, "direct-forbidden:").contains("Operation not permitted"),
        "{out}"
    );
    assert!(
        line(&out, "direct-unlisted:").contains("Operation not permitted"),
        "{out}"
    );
    assert!(line(&out, "udp:").contains("Operation not permitted"), "{out}");
    assert_eq!(
        line(&out, "opaque:"),
        format!("opaque: corral-banner ping peer {ip}"),
        "{out}"
    );
    assert_eq!(
        line(&out, "opaque-by-name:"),
        "opaque-by-name: corral-banner pong",
        "{out}"
    );

    // Malformed input: refused, never delivered.
    assert!(line(&out, "garbage:").contains("closed"), "{out}");
    assert!(line(&out, "smuggle:").contains("400"), "{out}");
    // Nothing reaches the host's loopback through the proxy.
    // Closed without an answer: an orderly close or a reset (the proxy closes
    // while the request it will not read is still in its buffer).
    let direct = line(&out, "proxy-port:");
    assert!(direct.starts_with("proxy-port: listeners 1 closed"), "{out}");
    assert!(line(&out, "connect-loopback:").contains("403"), "{out}");
    assert!(seen.iter().all(|s| s.path != "/smuggle"));
    let long = line(&out, "long-header:");
    assert!(
        long.contains("431") || long.contains("400") || long.contains("closed"),
        "{long}"
    );
    assert!(seen.iter().all(|s| s.path != "/long"));
    let slow = line(&out, "== slowloris:");
    assert!(slow.contains("closed"), "{slow}");
    assert!(seen.iter().all(|s| s.path != "/slow"));
    // A 10 MB body arrives whole.
    assert!(line(&out, "== big:").contains("status=200"), "{out}");
    assert_eq!(find("/big").body.len(), 10 * 1024 * 1024);

    // The secret's value is nowhere in the session, the store or the logs.
    let dump = std::fs::read(ws.join("dump.txt")).unwrap();
    let dump = String::from_utf8_lossy(&dump);
    assert!(
        dump.contains("CORRAL_TEST_TOKEN=corral-placeholder-"),
        "no placeholder in the session's env"
    );
    assert!(dump.contains("BEGIN CERTIFICATE"), "the dump missed the CA files");
    assert!(
        !dump.contains(&real),
        "the secret's value is visible inside the session"
    );
    assert!(!out.contains(&real) && !err.contains(&real));
    let state = dir.0.join("state");
    for f in walk(&state).into_iter().chain([events.clone()]) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&real),
            "the secret's value is in {}",
            f.display()
        );
    }

    // The audit trail: every request, with its decision and the process.
    let evs: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let http: Vec<&serde_json::Value> = evs.iter().filter(|e| e["what"]["kind"] == "http").collect();
    let by_path = |p: &str| {
        http.iter()
            .find(|e| e["what"]["path"] == p)
            .unwrap_or_else(|| panic!("no http event for {p}: {http:#?}"))
    };
    let h = by_path("/hello");
    assert_eq!(h["decision"], "allow");
    assert_eq!(h["what"]["status"], 200);
    assert_eq!(h["what"]["host"], "api.corral.test");
    assert_eq!(h["what"]["pid_known"], true);
    assert!(h["proc"]["exe"].as_str().unwrap_or("").ends_with("/curl"), "{h}");
    assert_eq!(
        h["what"]["secrets_used"],
        serde_json::json!(["CORRAL_TEST_TOKEN"])
    );
    assert_eq!(h["what"]["injected"], serde_json::json!(["X-Corral-Test"]));
    let a = by_path("/admin/x");
    assert_eq!(a["decision"], "deny");
    assert_eq!(a["what"]["status"], 403);
    assert!(a["policies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "forbid-admin"));
    assert_eq!(
        by_path("/other")["what"]["secrets_withheld"],
        serde_json::json!(["CORRAL_TEST_TOKEN"])
    );
    assert!(by_path("/py")["proc"]["exe"]
        .as_str()
        .unwrap_or("")
        .contains("python3"));
    assert!(by_path("/node")["proc"]["exe"]
        .as_str()
        .unwrap_or("")
        .contains("node"));
    // The opaque stream and the refused connections are recorded too.
    assert!(http
        .iter()
        .any(|e| e["what"]["stage"] == "tunnel" && e["what"]["port"] == 7 && e["decision"] == "allow"));
    assert!(http.iter().any(|e| e["what"]["stage"] == "tunnel"
        && e["what"]["port"] == 2222
        && e["what"]["host"] == "api.corral.test"
        && e["decision"] == "allow"
        && e["policies"][0] == "net-banner-by-name"));
    assert!(http.iter().any(|e| e["what"]["stage"] == "connection"
        && e["decision"] == "deny"
        && e["what"]["error"].as_str().unwrap_or("").contains("TLS")));
    assert!(evs
        .iter()
        .any(|e| e["what"]["kind"] == "connect" && e["what"]["port"] == 9 && e["decision"] == "deny"));
    // Each malformed input is recorded with what was wrong.
    let errors: Vec<&str> = http.iter().filter_map(|e| e["what"]["error"].as_str()).collect();
    for want in [
        "Content-Length and Transfer-Encoding",
        "request header too large",
        "timed out waiting for a request header",
        "bad TLS ClientHello",
        "not redirected by the kernel: refused",
        "loopback and unspecified addresses are never reached",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "no event says {want:?}: {errors:#?}"
        );
    }
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
