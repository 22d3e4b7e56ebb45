//! Policy engine benchmarks (issue 2).
//!
//! * `decide_<kind>`: userspace decision latency for generated policy sets
//!   of 10, 100 and 1,000 policies (a realistic mix in which the request's
//!   policy is indexable): `indexed` is [`Evaluator::decide`]; `cedar_full`
//!   is plain Cedar (`to_cedar` plus `Authorizer::is_authorized` over the
//!   whole set); `slice_no_index` is `to_cedar` plus `is_authorized` over the
//!   action's slice ([`Evaluator::slice`]), i.e. what per-action slicing
//!   alone would cost. All three include request building; `to_cedar` is
//!   request building alone.
//! * `worst_<case>`: sets the index cannot prune, `indexed` vs `cedar_full`:
//!   `worst_http_unindexable` (leading-wildcard `like` and `unless`-only
//!   conditions: every policy lands in the always-evaluated bucket),
//!   `worst_file_unless` (the file-read permits of the realistic mix written
//!   as `unless { !(resource in ...) }`), and `worst_file_many_hit` (every
//!   policy is indexed under an ancestor of the requested path, so every
//!   bucket is hit; only the principal tells them apart).
//! * `path_lookup/entries_<n>/<depth>`: [`PathTable::lookup`] of a path of
//!   `depth` components whose deepest listed ancestor is the root (the worst
//!   case: one exact probe plus one per ancestor directory).
//! * `net_lookup/<case>`: [`NetTable::lookup`] for v4 and v6 addresses in
//!   the table of the 1,000-policy mix; `net_lookup_all_lengths/<case>`: in
//!   a table holding every prefix length (the most probes a lookup makes).
//!
//! Run: `cargo bench -p corral-policy --bench decide`; docs/BENCHMARKS.md
//! records one run. `cargo test --benches` runs each benchmark once.

// Bench setup fails loudly on a generator mistake; that is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use cedar_policy::{Authorizer, PolicySet};
use corral_policy::plan::{NetTable, PathTable};
use corral_policy::{compile, load, CompileOptions, Evaluator, PolicyDoc, Protocol, Request, Source};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::fmt::Write as _;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

/// Policy set sizes for the decision benchmarks.
const SIZES: [usize; 3] = [10, 100, 1_000];
/// Directory entries in the path tables.
const TABLE_SIZES: [usize; 3] = [10, 100, 1_000];
/// Path depths (components) for the path lookups.
const DEPTHS: [usize; 4] = [2, 8, 32, 64];

/// A realistic mix, repeating every ten policies: file read/write permits on
/// project directories, a file forbid, exec permits, network permits by host
/// name and by address range (v4 and v6), HTTP permits by method and path,
/// and forbids for each layer.
fn policy_text(n: usize) -> String {
    let mut t = String::new();
    for i in 0..n {
        let j = i / 10;
        let line = match i % 10 {
            0 | 1 => format!(
                "permit (principal, action == Action::\"FileOpenReadOnly\", resource)\n\
                 when {{ resource in [Dir::\"/proj/{i}/\"] }};"
            ),
            2 => format!(
                "permit (principal, action in Action::\"FileOpen\", resource)\n\
                 when {{ resource in [Dir::\"/proj/{i}/\", Dir::\"/tmp/build{i}/\"] }};"
            ),
            3 => format!(
                "forbid (principal, action in Action::\"FileOpen\", resource)\n\
                 when {{ resource in [Dir::\"/proj/{}/.secrets/\", Dir::\"/proj/{}/.git/hooks/\"] }};",
                i - 3,
                i - 1
            ),
            4 => format!(
                "permit (principal, action == Action::\"ProcessExec\", resource)\n\
                 when {{ resource in [Dir::\"/opt/tool{i}/bin/\"] }};"
            ),
            5 => format!(
                "permit (principal, action == Action::\"NetworkConnect\", resource)\n\
                 when {{ resource in [Host::\"svc{i}.example.com:443\"] }};"
            ),
            6 => {
                let range = if j % 2 == 0 {
                    format!("10.{}.0.0/16", j % 256)
                } else {
                    format!("fd00:{j:x}::/32")
                };
                format!(
                    "permit (principal, action == Action::\"NetworkConnect\", resource)\n\
                     when {{ context.ip.isInRange(ip(\"{range}\")) && context.port == 443 }};"
                )
            }
            7 => format!(
                "permit (principal, action == Action::\"HttpRequest\", resource)\n\
                 when {{ resource in [Host::\"svc{i}.example.com:443\"] &&\n\
                 context.method == \"GET\" && context.path like \"/api/{i}/*\" }};"
            ),
            8 => format!(
                "permit (principal, action == Action::\"HttpRequest\", resource)\n\
                 when {{ context.method == \"GET\" && context.path like \"/api/{i}/*\" }};"
            ),
            _ => match j % 3 {
                0 => format!(
                    "forbid (principal, action == Action::\"HttpRequest\", resource)\n\
                     when {{ context.method == \"DELETE\" && context.path like \"/api/{}/admin/*\" }};",
                    i - 2
                ),
                1 => format!(
                    "forbid (principal, action == Action::\"NetworkConnect\", resource)\n\
                     when {{ resource in [Host::\"*.bad{i}.example.com\"] || context.port == 22 }};"
                ),
                _ => format!(
                    "forbid (principal, action == Action::\"ProcessExec\", resource)\n\
                     when {{ resource in [Dir::\"/opt/tool{}/bin/unsafe/\"] }};",
                    i - 5
                ),
            },
        };
        let _ = writeln!(t, "@id(\"p{i}\")\n{line}\n");
    }
    t
}

fn load_text(text: String) -> PolicyDoc {
    match load(vec![Source::new("bench.cedar", text)]) {
        Ok(doc) => doc,
        Err(diags) => {
            for d in &diags {
                eprintln!("{}", d.render());
            }
            panic!("generated policy set does not load ({} diagnostics)", diags.len());
        }
    }
}

/// One request kind at one set size, with the policy it should hit.
struct Case {
    kind: &'static str,
    req: Request,
}

/// Requests that are allowed by a policy in the middle of an `n`-policy set.
fn cases(n: usize) -> Vec<Case> {
    let base = 10 * (n / 20);
    vec![
        Case {
            kind: "http",
            req: Request::Http {
                principal: "agent".into(),
                host: format!("svc{}.example.com", base + 7),
                port: 443,
                method: "GET".into(),
                scheme: "https".into(),
                path: format!("/api/{}/items/42", base + 7),
                query: "page=2".into(),
            },
        },
        Case {
            kind: "net_hostname",
            req: Request::Net {
                principal: "agent".into(),
                hostname: Some(format!("svc{}.example.com", base + 5)),
                ip: "203.0.113.7".parse().expect("ip"),
                port: 443,
                protocol: Protocol::Tcp,
            },
        },
        Case {
            kind: "file_read",
            req: Request::File {
                principal: "agent".into(),
                write: false,
                path: format!("/proj/{base}/src/lib.rs"),
                is_dir: false,
            },
        },
    ]
}

struct Set {
    n: usize,
    doc: PolicyDoc,
    ev: Evaluator,
}

fn sets() -> Vec<Set> {
    SIZES
        .iter()
        .map(|&n| {
            let doc = load_text(policy_text(n));
            assert_eq!(doc.policies.len(), n);
            let ev = Evaluator::new(&doc);
            Set { n, doc, ev }
        })
        .collect()
}

fn bench_decide(c: &mut Criterion) {
    let sets = sets();
    let authorizer = Authorizer::new();
    for kind in ["http", "net_hostname", "file_read"] {
        let mut g = c.benchmark_group(format!("decide_{kind}"));
        for s in &sets {
            let case = cases(s.n).into_iter().find(|c| c.kind == kind).expect("case");
            let req = case.req;
            let slice: &PolicySet = s.ev.slice(req.action()).expect("slice");
            // The indexed evaluator and plain Cedar must agree, and allow.
            let d = s.ev.decide(&req).expect("decide");
            let (cr, ce) = req.to_cedar().expect("to_cedar");
            let plain = authorizer.is_authorized(&cr, &s.doc.set, &ce);
            assert!(d.allowed, "{kind} at {}: expected allow, got {d:?}", s.n);
            assert_eq!(plain.decision(), cedar_policy::Decision::Allow);
            eprintln!(
                "# {kind} n={}: action slice {} of {} policies, determining {:?}",
                s.n,
                slice.policies().count(),
                s.n,
                d.determining
            );

            g.bench_with_input(BenchmarkId::new("indexed", s.n), &req, |b, req| {
                b.iter(|| s.ev.decide(black_box(req)))
            });
            g.bench_with_input(BenchmarkId::new("slice_no_index", s.n), &req, |b, req| {
                b.iter(|| {
                    let (r, e) = black_box(req).to_cedar().expect("to_cedar");
                    authorizer.is_authorized(&r, slice, &e).decision()
                })
            });
            g.bench_with_input(BenchmarkId::new("cedar_full", s.n), &req, |b, req| {
                b.iter(|| {
                    let (r, e) = black_box(req).to_cedar().expect("to_cedar");
                    authorizer.is_authorized(&r, &s.doc.set, &e).decision()
                })
            });
            if s.n == SIZES[0] {
                // Independent of the policy set.
                g.bench_with_input("to_cedar", &req, |b, req| b.iter(|| black_box(req).to_cedar()));
            }
        }
        g.finish();
    }
}

/// `n` `HttpRequest` permits the index cannot use, alternating two forms:
/// a `like` pattern with a leading wildcard (no literal prefix), and an
/// `unless`-only condition (the index reads `when` clauses only). Policy
/// `i` allows GET `/api/i/...` (the first form any method).
fn unindexable_http_text(n: usize) -> String {
    let mut t = String::new();
    for i in 0..n {
        let line = if i % 2 == 0 {
            format!(
                "permit (principal, action == Action::\"HttpRequest\", resource)\n\
                 when {{ context.path like \"*/{i}/*\" }};"
            )
        } else {
            format!(
                "permit (principal, action == Action::\"HttpRequest\", resource)\n\
                 unless {{ context.method != \"GET\" || !(context.path like \"/api/{i}/*\") }};"
            )
        };
        let _ = writeln!(t, "@id(\"p{i}\")\n{line}\n");
    }
    t
}

/// `n` `FileOpenReadOnly` permits on `/proj/i/`, written with `unless`
/// (the same meaning as `when { resource in Dir::"/proj/i/" }`, which the
/// index would use).
fn unless_file_text(n: usize) -> String {
    let mut t = String::new();
    for i in 0..n {
        let _ = writeln!(
            t,
            "@id(\"p{i}\")\npermit (principal, action == Action::\"FileOpenReadOnly\", resource)\n\
             unless {{ !(resource in Dir::\"/proj/{i}/\") }};\n"
        );
    }
    t
}

/// `n` per-agent `FileOpenReadOnly` permits, each on one of the four
/// ancestors of `/proj/7/src/lib.rs` (`/`, `/proj/`, `/proj/7/`,
/// `/proj/7/src/`): every policy is indexed, and every bucket is hit by the
/// request; only the principal (not indexed) tells them apart.
fn many_hit_file_text(n: usize) -> String {
    const ANCESTORS: [&str; 4] = ["/", "/proj/", "/proj/7/", "/proj/7/src/"];
    let mut t = String::new();
    for i in 0..n {
        let _ = writeln!(
            t,
            "@id(\"p{i}\")\npermit (principal == Agent::\"agent{i}\", action == Action::\"FileOpenReadOnly\",\n\
             resource in Dir::\"{}\");\n",
            ANCESTORS[i % 4]
        );
    }
    t
}

/// One worst case: its policy generator and the request (allowed by
/// exactly policy `n / 2`).
struct Worst {
    name: &'static str,
    text: fn(usize) -> String,
    req: fn(usize) -> Request,
}

fn worst_cases() -> [Worst; 3] {
    [
        Worst {
            name: "worst_http_unindexable",
            text: unindexable_http_text,
            req: |n| Request::Http {
                principal: "agent".into(),
                host: "svc.example.com".into(),
                port: 443,
                method: "GET".into(),
                scheme: "https".into(),
                path: format!("/api/{}/items/42", n / 2),
                query: "page=2".into(),
            },
        },
        Worst {
            name: "worst_file_unless",
            text: unless_file_text,
            req: |n| Request::File {
                principal: "agent".into(),
                write: false,
                path: format!("/proj/{}/src/lib.rs", n / 2),
                is_dir: false,
            },
        },
        Worst {
            name: "worst_file_many_hit",
            text: many_hit_file_text,
            req: |n| Request::File {
                principal: format!("agent{}", n / 2),
                write: false,
                path: "/proj/7/src/lib.rs".into(),
                is_dir: false,
            },
        },
    ]
}

fn bench_worst(c: &mut Criterion) {
    let authorizer = Authorizer::new();
    for w in worst_cases() {
        let mut g = c.benchmark_group(w.name);
        for &n in &SIZES {
            let doc = load_text((w.text)(n));
            assert_eq!(doc.policies.len(), n);
            let ev = Evaluator::new(&doc);
            let req = (w.req)(n);
            // Every policy is of the request's action: the slice is the whole set.
            assert_eq!(ev.slice(req.action()).expect("slice").policies().count(), n);
            let d = ev.decide(&req).expect("decide");
            assert!(d.allowed, "{} at {n}: expected allow, got {d:?}", w.name);
            assert_eq!(d.determining, vec![n / 2], "{} at {n}", w.name);
            let (cr, ce) = req.to_cedar().expect("to_cedar");
            let plain = authorizer.is_authorized(&cr, &doc.set, &ce);
            assert_eq!(plain.decision(), cedar_policy::Decision::Allow);
            assert_eq!(plain.diagnostics().reason().count(), 1);

            g.bench_with_input(BenchmarkId::new("indexed", n), &req, |b, req| {
                b.iter(|| ev.decide(black_box(req)))
            });
            g.bench_with_input(BenchmarkId::new("cedar_full", n), &req, |b, req| {
                b.iter(|| {
                    let (r, e) = black_box(req).to_cedar().expect("to_cedar");
                    authorizer.is_authorized(&r, &doc.set, &e).decision()
                })
            });
        }
        g.finish();
    }
}

/// A read table with exactly `n` directory entries: `n - 1` project
/// directories plus the root.
fn path_table(n: usize) -> PathTable {
    let mut t = String::new();
    for i in 0..n - 1 {
        let _ = writeln!(
            t,
            "permit (principal, action == Action::\"FileOpenReadOnly\", resource)\n\
             when {{ resource in [Dir::\"/proj/{i}/\"] }};"
        );
    }
    let doc = load_text(t);
    let plan = compile(&doc, &CompileOptions::default()).expect("compile");
    let table = plan
        .for_principal("agent")
        .expect("principal plan")
        .file_read
        .clone();
    assert_eq!(table.entries.len(), n, "path table entries");
    table
}

/// `/proj/miss/c3/.../c<depth>`: `depth` components under `/proj/`, in no
/// listed directory, so the lookup walks every ancestor down to the root.
fn deep_path(depth: usize) -> String {
    let mut p = String::from("/proj/miss");
    for k in 3..=depth {
        let _ = write!(p, "/c{k}");
    }
    p
}

fn bench_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("path_lookup");
    for &n in &TABLE_SIZES {
        let table = path_table(n);
        let hit = "/proj/0/src/lib.rs";
        assert_eq!(table.lookup(hit, false).allowed(), Some(true));
        for &depth in &DEPTHS {
            let path = deep_path(depth);
            assert_eq!(path.split('/').filter(|c| !c.is_empty()).count(), depth);
            assert_eq!(table.lookup(&path, false).allowed(), Some(false));
            g.bench_with_input(BenchmarkId::new(format!("entries_{n}"), depth), &path, |b, p| {
                b.iter(|| table.lookup(black_box(p), false))
            });
        }
    }
    g.finish();
}

/// Prefix lengths `lookup` probes for `ip`: the table's lengths of the
/// address's family, longest first, down to the longest listed prefix
/// holding the address.
fn net_probes(t: &NetTable, ip: IpAddr) -> usize {
    let v6 = ip.is_ipv6();
    let mut lens: Vec<u8> = t
        .entries
        .iter()
        .filter(|e| e.prefix.addr().is_ipv6() == v6)
        .map(|e| e.prefix.prefix_len())
        .collect();
    lens.sort_unstable();
    lens.dedup();
    let hit = t
        .entries
        .iter()
        .filter(|e| e.prefix.contains(&ip))
        .map(|e| e.prefix.prefix_len())
        .max()
        .unwrap_or(0);
    lens.iter().filter(|l| **l >= hit).count()
}

fn bench_net(c: &mut Criterion) {
    let doc = load_text(policy_text(1_000));
    let plan = compile(&doc, &CompileOptions::default()).expect("compile");
    let tcp: &NetTable = plan
        .for_principal("agent")
        .expect("principal plan")
        .net
        .iter()
        .find(|t| t.protocol == Protocol::Tcp)
        .expect("tcp table");
    let lengths = |v6: bool| {
        let mut l: Vec<u8> = tcp
            .entries
            .iter()
            .filter(|e| e.prefix.addr().is_ipv6() == v6)
            .map(|e| e.prefix.prefix_len())
            .collect();
        l.sort_unstable();
        l.dedup();
        l
    };
    eprintln!(
        "# net table (1,000-policy set, tcp): {} prefixes ({} v6), {} port classes; \
         v4 lengths {:?}, v6 lengths {:?}",
        tcp.entries.len(),
        tcp.entries.iter().filter(|e| e.prefix.addr().is_ipv6()).count(),
        tcp.ports.len(),
        lengths(false),
        lengths(true)
    );
    let cases: [(&str, &str, Option<bool>); 4] = [
        // In 10.2.0.0/16.
        ("v4_hit_16", "10.2.7.9", Some(true)),
        // In no listed prefix but 0.0.0.0/0.
        ("v4_miss", "203.0.113.7", Some(false)),
        // In fd00:1::/32.
        ("v6_hit_32", "fd00:1::7", Some(true)),
        // In no listed prefix but ::/0.
        ("v6_miss", "2001:db8::7", Some(false)),
    ];
    let mut g = c.benchmark_group("net_lookup");
    for (name, ip, want) in cases {
        let ip: IpAddr = ip.parse().expect("ip");
        assert_eq!(tcp.lookup(ip, 443).allowed(), want, "{name}");
        eprintln!("# net_lookup/{name}: {} prefix probes", net_probes(tcp, ip));
        g.bench_function(name, |b| b.iter(|| tcp.lookup(black_box(ip), black_box(443))));
    }
    g.finish();

    // The probe bound: a table with every prefix length from /8 to /32 (v4)
    // and /16 to /128 (v6), in disjoint ranges (`L.0.0.0/L`,
    // `<2000+L>::/L`), and an address in none of them.
    let mut t = String::new();
    let ranges = (8..=32u32)
        .map(|l| format!("{l}.0.0.0/{l}"))
        .chain((16..=128u32).map(|l| format!("{:x}::/{l}", 0x2000 + l)));
    for (i, r) in ranges.enumerate() {
        let _ = writeln!(
            t,
            "@id(\"r{i}\")\npermit (principal, action == Action::\"NetworkConnect\", resource)\n\
             when {{ context.ip.isInRange(ip(\"{r}\")) }};\n"
        );
    }
    let plan = compile(&load_text(t), &CompileOptions::default()).expect("compile");
    let tcp: &NetTable = plan
        .for_principal("agent")
        .expect("principal plan")
        .net
        .iter()
        .find(|t| t.protocol == Protocol::Tcp)
        .expect("tcp table");
    let mut g = c.benchmark_group("net_lookup_all_lengths");
    for (name, ip) in [("v4_miss", "203.0.113.7"), ("v6_miss", "2001:db8::7")] {
        let ip: IpAddr = ip.parse().expect("ip");
        assert_eq!(tcp.lookup(ip, 443).allowed(), Some(false), "{name}");
        eprintln!(
            "# net_lookup_all_lengths/{name}: {} prefixes, {} prefix probes",
            tcp.entries.len(),
            net_probes(tcp, ip)
        );
        g.bench_function(name, |b| b.iter(|| tcp.lookup(black_box(ip), black_box(443))));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the whole bench takes about two minutes on 2 cores.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(400))
        .measurement_time(Duration::from_millis(1200))
        .sample_size(30);
    targets = bench_decide, bench_worst, bench_path, bench_net
}
criterion_main!(benches);
