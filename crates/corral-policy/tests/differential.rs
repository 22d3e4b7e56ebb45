//! Differential property tests: the compiled plan's kernel tables, and the
//! sliced userspace evaluator, decide exactly as `Authorizer::is_authorized`
//! over the whole policy set, for random policy sets × random requests.
//!
//! Cases per layer default to 4,000 (five layers: 20,000 per run); set
//! `CORRAL_DIFF_CASES` to change it. On a mismatch proptest shrinks to the
//! smallest policy set and request that still disagree and prints them.

// Test code: a panic is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use cedar_policy::{Authorizer, Decision as CDecision};
use corral_policy::{
    compile, load, CompileOptions, Evaluator, PolicyDoc, Protocol, Request, Source, Verdict,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::fmt;
use std::net::IpAddr;

// ---------------------------------------------------------------- vocabulary

const COMPONENTS: &[&str] = &["a", "b", "usr", "bin", "x.y", "ssh"];
const AGENTS: &[&str] = &["alice", "bob"];
const CIDRS: &[&str] = &[
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "10.0.0.0/16",
    "10.1.2.0/28",
    "0.0.0.0/8",
    "192.168.0.0/16",
    "0.0.0.0/0",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "::1/128",
    "::ffff:0:0/96",
];
const ADDRS: &[&str] = &[
    "10.1.2.3",
    "10.1.2.4",
    "10.1.3.1",
    "10.200.0.1",
    "10.0.0.5",
    "10.1.2.0",
    "10.1.2.20",
    "0.1.2.3",
    "11.0.0.1",
    "192.168.5.5",
    "127.0.0.1",
    "127.9.9.9",
    "0.0.0.0",
    "224.0.0.1",
    "2001:db8::1",
    "2001:db8:1::5",
    "2001:db9::1",
    "::1",
    "::",
    "::ffff:10.1.2.3",
    "ff02::1",
];
const PORTS: &[u16] = &[0, 22, 53, 80, 442, 443, 444, 1023, 1024, 8080, 65535];

fn long_name() -> String {
    "n".repeat(200)
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => proptest::sample::select(COMPONENTS).prop_map(str::to_string),
        1 => Just(long_name()),
        1 => "[a-z]{1,3}".prop_map(|s| s),
    ]
}

fn path_strategy(max_depth: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        9 => proptest::collection::vec(component(), 0..max_depth),
        1 => proptest::collection::vec(component(), 20..48),
    ]
    .prop_map(|c| format!("/{}", c.join("/")))
}

fn dir_literal() -> impl Strategy<Value = String> {
    path_strategy(4).prop_map(|p| if p == "/" { p } else { format!("{p}/") })
}

// ---------------------------------------------------------------- policies

#[derive(Clone, Debug)]
enum Atom {
    InDir(String),
    IsFile(String),
    InSet(Vec<String>),
    IsDirType,
    Principal(&'static str),
    True,
    // exec
    CmdLike(&'static str),
    ArgvHas(&'static str),
    ArgcGt(i64),
    // net
    HostIn(String),
    IpIn(&'static str),
    IpEq(&'static str),
    PortEq(u16),
    PortLt(u16),
    PortGe(u16),
    Loopback,
    Ipv6,
    Udp,
    NoHostname,
    HostnameLike(&'static str),
    // http
    Method(&'static str),
    PathLike(&'static str),
    PathEq(&'static str),
    // secret
    SecretEq(&'static str),
    SecretLike(&'static str),
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::InDir(d) => write!(f, "resource in Dir::{d:?}"),
            Atom::IsFile(p) => write!(f, "resource == File::{p:?}"),
            Atom::InSet(ds) => write!(
                f,
                "resource in [{}]",
                ds.iter()
                    .map(|d| format!("Dir::{d:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Atom::IsDirType => write!(f, "resource is Dir"),
            Atom::Principal(a) => write!(f, "principal == Agent::{a:?}"),
            Atom::True => write!(f, "true"),
            Atom::CmdLike(p) => write!(f, "context.cmdline like {p:?}"),
            Atom::ArgvHas(a) => write!(f, "context.argv.contains({a:?})"),
            Atom::ArgcGt(n) => write!(f, "context.argc > {n}"),
            Atom::HostIn(h) => write!(f, "resource in Host::{h:?}"),
            Atom::IpIn(c) => write!(f, "context.ip.isInRange(ip({c:?}))"),
            Atom::IpEq(a) => write!(f, "context.ip == ip({a:?})"),
            Atom::PortEq(p) => write!(f, "context.port == {p}"),
            Atom::PortLt(p) => write!(f, "context.port < {p}"),
            Atom::PortGe(p) => write!(f, "{p} <= context.port"),
            Atom::Loopback => write!(f, "context.ip.isLoopback()"),
            Atom::Ipv6 => write!(f, "context.ip.isIpv6()"),
            Atom::Udp => write!(f, "context.protocol == \"udp\""),
            Atom::NoHostname => write!(f, "context.hostname == \"\""),
            Atom::HostnameLike(p) => write!(f, "context.hostname like {p:?}"),
            Atom::Method(m) => write!(f, "context.method == {m:?}"),
            Atom::PathLike(p) => write!(f, "context.path like {p:?}"),
            Atom::PathEq(p) => write!(f, "context.path == {p:?}"),
            Atom::SecretEq(n) => write!(f, "context.secret == {n:?}"),
            Atom::SecretLike(p) => write!(f, "context.secret like {p:?}"),
        }
    }
}

#[derive(Clone, Debug)]
enum Cond {
    Atom(Atom),
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cond::Atom(a) => write!(f, "{a}"),
            Cond::Not(c) => write!(f, "!({c})"),
            Cond::And(a, b) => write!(f, "({a}) && ({b})"),
            Cond::Or(a, b) => write!(f, "({a}) || ({b})"),
        }
    }
}

fn cond(atom: BoxedStrategy<Atom>) -> impl Strategy<Value = Cond> {
    atom.prop_map(Cond::Atom).prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|c| Cond::Not(Box::new(c))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Cond::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Cond::Or(Box::new(a), Box::new(b))),
        ]
    })
}

#[derive(Clone, Debug, Copy, PartialEq)]
enum Layer {
    File,
    Exec,
    Net,
    Http,
    Secret,
}

#[derive(Clone)]
struct Pol {
    forbid: bool,
    principal: Option<&'static str>,
    action: &'static str,
    resource: Option<String>,
    conds: Vec<(bool, Cond)>,
}

impl fmt::Display for Pol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (", if self.forbid { "forbid" } else { "permit" })?;
        match self.principal {
            Some(a) => write!(f, "principal == Agent::{a:?}, ")?,
            None => write!(f, "principal, ")?,
        }
        write!(f, "{}, ", self.action)?;
        match &self.resource {
            Some(r) => write!(f, "{r})")?,
            None => write!(f, "resource)")?,
        }
        for (when, c) in &self.conds {
            write!(f, " {} {{ {c} }}", if *when { "when" } else { "unless" })?;
        }
        write!(f, ";")
    }
}

impl fmt::Debug for Pol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

fn atoms(layer: Layer) -> BoxedStrategy<Atom> {
    let path_atoms = prop_oneof![
        4 => dir_literal().prop_map(Atom::InDir),
        3 => path_strategy(4).prop_filter("file", |p| p != "/").prop_map(Atom::IsFile),
        2 => proptest::collection::vec(dir_literal(), 1..3).prop_map(Atom::InSet),
        1 => proptest::sample::select(AGENTS).prop_map(Atom::Principal),
        1 => Just(Atom::True),
    ];
    match layer {
        Layer::File => prop_oneof![6 => path_atoms, 1 => Just(Atom::IsDirType)].boxed(),
        Layer::Exec => prop_oneof![
            6 => path_atoms,
            1 => proptest::sample::select(&["*push*", "git *", "*"][..]).prop_map(Atom::CmdLike),
            1 => proptest::sample::select(&["-f", "--force"][..]).prop_map(Atom::ArgvHas),
            1 => (0i64..4).prop_map(Atom::ArgcGt),
        ]
        .boxed(),
        Layer::Net => prop_oneof![
            3 => proptest::sample::select(&[
                "10.1.2.3", "10.1.2.3:443", "*:443", "*:53", "*", "[2001:db8::1]:53", "2001:db8::1",
                "api.example.com", "*.example.com", "127.0.0.1:8080", "::ffff:10.1.2.3"
            ][..]).prop_map(|h| Atom::HostIn(h.to_string())),
            3 => proptest::sample::select(CIDRS).prop_map(Atom::IpIn),
            1 => proptest::sample::select(&["10.1.2.3", "::1", "10.1.2.4"][..]).prop_map(Atom::IpEq),
            2 => proptest::sample::select(PORTS).prop_map(Atom::PortEq),
            1 => proptest::sample::select(PORTS).prop_map(Atom::PortLt),
            1 => proptest::sample::select(PORTS).prop_map(Atom::PortGe),
            1 => Just(Atom::Loopback),
            1 => Just(Atom::Ipv6),
            1 => Just(Atom::Udp),
            1 => Just(Atom::NoHostname),
            1 => proptest::sample::select(&["api.*", "*.example.com", "api.example.com"][..]).prop_map(Atom::HostnameLike),
            1 => proptest::sample::select(AGENTS).prop_map(Atom::Principal),
        ]
        .boxed(),
        Layer::Http => prop_oneof![
            3 => proptest::sample::select(&["api.example.com", "*.example.com", "*:443", "*", "10.1.2.3"][..])
                .prop_map(|h| Atom::HostIn(h.to_string())),
            2 => proptest::sample::select(&["GET", "POST", "get"][..]).prop_map(Atom::Method),
            3 => proptest::sample::select(&["/api/*", "/api/v1/*", "*/x", "/", "/a*b*"][..]).prop_map(Atom::PathLike),
            2 => proptest::sample::select(&["/api/v1/x", "/", "/api"][..]).prop_map(Atom::PathEq),
            1 => proptest::sample::select(AGENTS).prop_map(Atom::Principal),
        ]
        .boxed(),
        Layer::Secret => prop_oneof![
            3 => proptest::sample::select(&["api.example.com", "api.example.com:443", "*.example.com", "*:443", "*"][..])
                .prop_map(|h| Atom::HostIn(h.to_string())),
            3 => proptest::sample::select(SECRETS).prop_map(Atom::SecretEq),
            1 => proptest::sample::select(&["OPENAI_*", "*_KEY", "*"][..]).prop_map(Atom::SecretLike),
            2 => proptest::sample::select(PORTS).prop_map(Atom::PortEq),
            1 => proptest::sample::select(PORTS).prop_map(Atom::PortLt),
            1 => proptest::sample::select(AGENTS).prop_map(Atom::Principal),
        ]
        .boxed(),
    }
}

const SECRETS: &[&str] = &["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GITHUB_TOKEN"];

fn policy(layer: Layer) -> impl Strategy<Value = Pol> {
    let actions: &'static [&'static str] = match layer {
        Layer::File => &[
            "action == Action::\"FileOpenReadOnly\"",
            "action == Action::\"FileOpenReadWrite\"",
            "action in Action::\"FileOpen\"",
            "action in [Action::\"FileOpen\", Action::\"FileOpenReadOnly\"]",
        ],
        Layer::Exec => &[
            "action == Action::\"ProcessExec\"",
            "action in [Action::\"ProcessExec\", Action::\"FileOpenReadOnly\"]",
        ],
        Layer::Net => &["action == Action::\"NetworkConnect\""],
        Layer::Http => &[
            "action == Action::\"HttpRequest\"",
            "action in [Action::\"HttpRequest\", Action::\"NetworkConnect\"]",
        ],
        Layer::Secret => &[
            "action == Action::\"SecretUse\"",
            "action in [Action::\"SecretUse\", Action::\"HttpRequest\"]",
        ],
    };
    let resource = match layer {
        Layer::File | Layer::Exec => prop_oneof![
            3 => Just(None),
            1 => dir_literal().prop_map(|d| Some(format!("resource in Dir::{d:?}"))),
            1 => path_strategy(3).prop_filter("file", |p| p != "/").prop_map(|p| Some(format!("resource == File::{p:?}"))),
        ]
        .boxed(),
        Layer::Net | Layer::Http | Layer::Secret => prop_oneof![
            3 => Just(None),
            1 => proptest::sample::select(&["10.1.2.3:443", "*:53", "*", "api.example.com"][..])
                .prop_map(|h| Some(format!("resource in Host::{h:?}"))),
        ]
        .boxed(),
    };
    (
        proptest::bool::weighted(0.35),
        proptest::option::weighted(0.25, proptest::sample::select(AGENTS)),
        proptest::sample::select(actions),
        resource,
        proptest::collection::vec((proptest::bool::weighted(0.7), cond(atoms(layer))), 0..3),
    )
        .prop_map(|(forbid, principal, action, resource, conds)| Pol {
            forbid,
            principal,
            action,
            resource,
            conds,
        })
}

// ---------------------------------------------------------------- requests

fn request(layer: Layer) -> BoxedStrategy<Request> {
    let principal = proptest::sample::select(&["alice", "bob", "carol"][..]).prop_map(str::to_string);
    match layer {
        Layer::File => (
            principal,
            any::<bool>(),
            path_strategy(6),
            proptest::bool::weighted(0.3),
        )
            .prop_map(|(principal, write, path, is_dir)| Request::File {
                principal,
                write,
                path,
                is_dir,
            })
            .boxed(),
        Layer::Exec => (
            principal,
            path_strategy(6).prop_filter("file", |p| p != "/"),
            proptest::collection::vec(
                proptest::sample::select(&["git", "push", "-f", "--force", "x"][..]),
                0..4,
            ),
        )
            .prop_map(|(principal, path, args)| {
                let mut argv = vec![path.clone()];
                argv.extend(args.into_iter().map(str::to_string));
                Request::Exec {
                    principal,
                    path,
                    argv,
                }
            })
            .boxed(),
        Layer::Net => (
            principal,
            proptest::sample::select(ADDRS),
            prop_oneof![3 => proptest::sample::select(PORTS), 1 => any::<u16>()],
            any::<bool>(),
            proptest::option::weighted(
                0.2,
                proptest::sample::select(
                    &[
                        "api.example.com",
                        "API.Example.com.",
                        "x.example.com",
                        "other.org",
                    ][..],
                ),
            ),
        )
            .prop_map(|(principal, ip, port, udp, hostname)| Request::Net {
                principal,
                hostname: hostname.map(str::to_string),
                ip: ip.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0])),
                port,
                protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
            })
            .boxed(),
        Layer::Http => (
            principal,
            proptest::sample::select(&["api.example.com", "x.example.com", "10.1.2.3", "other.org"][..]),
            proptest::sample::select(PORTS),
            proptest::sample::select(&["GET", "POST", "get"][..]),
            proptest::sample::select(
                &[
                    "/",
                    "/api",
                    "/api/",
                    "/api/v1/x",
                    "/api/v2",
                    "/zz/x",
                    "/ab",
                    "/axxb",
                ][..],
            ),
        )
            .prop_map(|(principal, host, port, method, path)| Request::Http {
                principal,
                host: host.to_string(),
                port,
                method: method.to_string(),
                scheme: "https".into(),
                path: path.to_string(),
                query: String::new(),
            })
            .boxed(),
        Layer::Secret => (
            principal,
            proptest::sample::select(&["api.example.com", "x.example.com", "10.1.2.3", "other.org"][..]),
            proptest::sample::select(PORTS),
            proptest::sample::select(&["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GITHUB_TOKEN", "OTHER"][..]),
        )
            .prop_map(|(principal, host, port, secret)| Request::Secret {
                principal,
                host: host.to_string(),
                port,
                secret: secret.to_string(),
            })
            .boxed(),
    }
}

// ---------------------------------------------------------------- oracle

struct Oracle {
    doc: PolicyDoc,
}

impl Oracle {
    fn decide(&self, req: &Request) -> (bool, Vec<String>) {
        let (r, e) = req.to_cedar().expect("generated requests are well formed");
        let resp = Authorizer::new().is_authorized(&r, &self.doc.set, &e);
        let mut reason: Vec<String> = resp.diagnostics().reason().map(|p| p.to_string()).collect();
        reason.sort();
        (resp.decision() == CDecision::Allow, reason)
    }
}

fn ids(doc: &PolicyDoc, idx: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = idx
        .iter()
        .filter_map(|i| doc.policies.get(*i))
        .map(|p| p.id.clone())
        .collect();
    v.sort();
    v
}

fn run_layer(layer: Layer) {
    let cases: u32 = std::env::var("CORRAL_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let mut runner = TestRunner::new(Config {
        cases,
        max_global_rejects: cases * 4,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        proptest::collection::vec(policy(layer), 1..6),
        proptest::collection::vec(request(layer), 1..24),
    );
    let result = runner.run(&strategy, |(pols, reqs)| {
        let text: String = pols.iter().map(|p| format!("{p}\n")).collect();
        let doc = match load(vec![Source::new("gen.cedar", text.clone())]) {
            Ok(d) => d,
            Err(d) => {
                // Strict validation rejects some generated shapes (and corral
                // rejects forbids that can never apply); skip those.
                prop_assume!(!d.iter().any(|d| d.code != "parse"), "invalid generated policy");
                return Err(TestCaseError::fail(format!(
                    "generated policy failed to load:\n{text}\n{}",
                    d.iter().map(|d| d.render()).collect::<String>()
                )));
            }
        };
        let plan = compile(&doc, &CompileOptions::default()).map_err(|d| {
            TestCaseError::fail(format!(
                "compile failed: {}",
                d.iter().map(|d| d.render()).collect::<String>()
            ))
        })?;
        let ev = Evaluator::new(&doc);
        let oracle = Oracle { doc };
        for req in &reqs {
            let (allowed, reason) = oracle.decide(req);
            // The sliced evaluator is Cedar on fewer policies: same answer, same reasons.
            let d = ev.decide(req).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(
                (d.allowed, ids(&oracle.doc, &d.determining)),
                (allowed, reason.clone()),
                "evaluator disagrees for {:?} under\n{}",
                req,
                text
            );
            if matches!(
                req,
                Request::Http { .. }
                    | Request::Secret { .. }
                    | Request::Net {
                        hostname: Some(_),
                        ..
                    }
            ) {
                // Proxy decisions: no kernel table; the evaluator is the decision point.
                continue;
            }
            let tables = plan
                .for_principal(req.principal())
                .expect("a class covers every principal");
            let verdict: &Verdict = match req {
                Request::File {
                    write, path, is_dir, ..
                } => {
                    let t = if *write {
                        &tables.file_write
                    } else {
                        &tables.file_read
                    };
                    t.lookup(path, *is_dir)
                }
                Request::Exec { path, .. } => tables.exec.lookup(path, false),
                Request::Net {
                    ip, port, protocol, ..
                } => tables
                    .net
                    .iter()
                    .find(|t| t.protocol == *protocol)
                    .expect("a table per protocol")
                    .lookup(*ip, *port),
                _ => unreachable!(),
            };
            match verdict.allowed() {
                Some(a) => {
                    prop_assert_eq!(
                        a,
                        allowed,
                        "plan says {:?} but Cedar says allowed={} for {:?} under\n{}",
                        verdict,
                        allowed,
                        req,
                        text
                    );
                    if layer != Layer::Exec {
                        // Every policy is constant on a class: same determining set.
                        prop_assert_eq!(
                            ids(&oracle.doc, verdict.policies()),
                            reason.clone(),
                            "plan names other policies for {:?} under\n{}",
                            req,
                            text
                        );
                    }
                }
                None => {
                    // Only argument conditions may defer to userspace.
                    prop_assert_eq!(
                        layer,
                        Layer::Exec,
                        "userspace verdict outside exec for {:?} under\n{}",
                        req,
                        text
                    );
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn file_tables_decide_as_cedar() {
    run_layer(Layer::File);
}

#[test]
fn exec_tables_decide_as_cedar() {
    run_layer(Layer::Exec);
}

#[test]
fn net_tables_decide_as_cedar() {
    run_layer(Layer::Net);
}

#[test]
fn http_decisions_of_the_indexed_evaluator_are_cedars() {
    run_layer(Layer::Http);
}

#[test]
fn secret_decisions_of_the_indexed_evaluator_are_cedars() {
    run_layer(Layer::Secret);
}
