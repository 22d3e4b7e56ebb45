//! `corral-abench`: the audit store's benchmark (docs/BENCHMARKS.md).
//!
//! Three measurements, each against a baseline taken in the same run:
//!
//! * sustained: the highest steady rate the pipeline stores with no loss
//!   (paced producer, default queue), and the flat-out rate; baseline: the
//!   same events appended as JSON lines to a file (the cheapest durable
//!   record there is).
//! * overload: a producer sending flat out for a while; the resident
//!   memory stays bounded (queue + pending buffer), and every event is
//!   stored or counted.
//! * queries: filtered queries over a store of N events (10 million by
//!   default), median of five; baseline: the same question answered by a
//!   scan of the JSON column (what an unindexed log file costs).
//!
//! `--dir` holds the stores (default /dev/shm, so the 10-million-event
//! store does not need several GB of disk).

#![allow(clippy::expect_used)]

use corral_audit::{Kind, Pipeline, Query, Store, Stored};
use corral_core::{Access, Decision, Event, Layer, Proc, SessionId, Transport, What};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Args {
    dir: PathBuf,
    events: u64,
    seconds: u64,
    quick: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        dir: PathBuf::from("/dev/shm"),
        events: 10_000_000,
        seconds: 5,
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match x.as_str() {
            "--dir" => a.dir = PathBuf::from(val("--dir")?),
            "--events" => a.events = val("--events")?.parse().map_err(|e| format!("--events: {e}"))?,
            "--seconds" => a.seconds = val("--seconds")?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--quick" => {
                a.quick = true;
                a.events = 200_000;
                a.seconds = 1;
            }
            _ => {
                return Err(format!(
                    "unknown argument {x:?} (--dir D --events N --seconds S --quick)"
                ))
            }
        }
    }
    Ok(a)
}

/// Event `i` of a realistic mix: 50 sessions; mostly file opens, some
/// execs and connects; 2% denials.
fn event(i: u64) -> Stored {
    let session = (i % 50) as u32 + 1;
    let what = match i % 20 {
        0 => What::Exec {
            path: format!("/usr/bin/tool{}", i % 37),
            argv: Some(vec!["tool".into(), "--flag".into(), format!("arg{}", i % 101)]),
        },
        1 => What::Connect {
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, (i % 200) as u8, (i % 250) as u8)),
            port: 443,
            transport: Transport::Tcp,
        },
        _ => What::FileOpen {
            path: format!("/work/project/src/module{}/file{}.rs", i % 97, i % 1009),
            access: if i.is_multiple_of(3) {
                Access::Write
            } else {
                Access::Read
            },
        },
    };
    let decision = if i % 50 == 7 {
        Decision::Deny
    } else {
        Decision::Allow
    };
    Stored {
        id: None,
        wall_ns: 1_700_000_000_000_000_000 + i * 100_000,
        policy_at: vec!["policy.cedar:12".into()],
        event: Event {
            session: SessionId(session),
            principal: format!("agent{}", session % 5),
            ts_ns: i * 100_000,
            proc: Proc {
                pid: 1000 + (i % 300) as u32,
                ppid: 999,
                comm: "cargo".into(),
                exe: Some("/usr/bin/cargo".into()),
            },
            what,
            decision: Some(decision),
            layer: Layer::BpfLsm,
            policies: vec![if decision == Decision::Deny {
                "forbid-secrets"
            } else {
                "read-system"
            }
            .into()],
            mcp_call: None,
        },
    }
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn fresh(dir: &Path, name: &str) -> Result<Store, String> {
    let p = dir.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
    Store::open(&p).map_err(|e| e.to_string())
}

/// Sends at `rate` events/s for `secs`; returns (sent, stored, dropped).
fn paced(dir: &Path, rate: u64, secs: u64) -> Result<(u64, u64, u64), String> {
    let p = Pipeline::start(fresh(dir, "abench-paced.db")?, 65_536);
    let tx = p.sender();
    let start = Instant::now();
    let total = rate * secs;
    let mut sent = 0u64;
    while sent < total {
        // Send what is due by now, in small bursts.
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due.min(total) {
            tx.send(event(sent));
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let s = p.close().map_err(|e| e.to_string())?;
    Ok((sent, s.stored, s.dropped))
}

fn jsonl_baseline(dir: &Path, n: u64) -> Result<f64, String> {
    let path = dir.join("abench-baseline.jsonl");
    let f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let mut w = std::io::BufWriter::new(f);
    let start = Instant::now();
    for i in 0..n {
        let s = event(i);
        serde_json::to_writer(&mut w, &s).map_err(|e| e.to_string())?;
        w.write_all(b"\n").map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    Ok(rate)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn run() -> Result<(), String> {
    let a = args()?;
    let idle = rss_kib("VmRSS:");
    std::fs::create_dir_all(&a.dir).map_err(|e| e.to_string())?;
    println!("corral-abench: stores in {}", a.dir.display());

    // 1. Sustained rate with no loss, against a JSONL file.
    let base_n = if a.quick { 200_000 } else { 2_000_000 };
    let jsonl = jsonl_baseline(&a.dir, base_n)?;
    println!(
        "baseline  JSONL append (serde_json, buffered)        {:>10.0} events/s",
        jsonl
    );
    let mut best = 0u64;
    let rates: &[u64] = if a.quick {
        &[50_000]
    } else {
        &[100_000, 150_000, 200_000, 250_000, 300_000, 400_000]
    };
    for &rate in rates {
        let (sent, stored, dropped) = paced(&a.dir, rate, a.seconds)?;
        println!(
            "paced     {rate:>7}/s for {}s: sent {sent}, stored {stored}, dropped {dropped}",
            a.seconds
        );
        if dropped == 0 && stored == sent {
            best = rate;
        } else {
            break;
        }
    }
    println!(
        "sustained no-loss rate                                {best:>10} events/s  ({:.2}x the JSONL baseline)",
        best as f64 / jsonl
    );

    // 2. Overload: flat out, default queue; memory and accounting (idle:
    // the resident size at start, before any store was opened).
    let p = Pipeline::start(fresh(&a.dir, "abench-overload.db")?, 65_536);
    let tx = p.sender();
    let start = Instant::now();
    let mut sent = 0u64;
    let mut peak = 0u64;
    while start.elapsed() < Duration::from_secs(a.seconds * 2) {
        for _ in 0..10_000 {
            tx.send(event(sent));
            sent += 1;
        }
        peak = peak.max(rss_kib("VmRSS:"));
    }
    let secs = start.elapsed().as_secs_f64();
    let s = p.close().map_err(|e| e.to_string())?;
    println!(
        "overload  flat out {secs:.1}s: offered {:.0}/s, stored {:.0}/s, dropped {} ({:.1}%); stored + dropped = sent: {}",
        sent as f64 / secs,
        s.stored as f64 / secs,
        s.dropped,
        100.0 * s.dropped as f64 / sent as f64,
        s.stored + s.dropped == sent
    );
    println!(
        "overload  resident memory: idle {} MiB, peak {} MiB ({:.2}x idle)",
        idle / 1024,
        peak / 1024,
        peak as f64 / idle.max(1) as f64
    );
    if s.stored + s.dropped != sent {
        return Err("events unaccounted for under overload".into());
    }

    // 3. Queries over N events.
    let store_path = a.dir.join("abench-query.db");
    let mut store = fresh(&a.dir, "abench-query.db")?;
    let start = Instant::now();
    let mut batch = Vec::with_capacity(50_000);
    for i in 0..a.events {
        batch.push(event(i));
        if batch.len() == batch.capacity() {
            store.insert(&batch).map_err(|e| e.to_string())?;
            batch.clear();
        }
    }
    store.insert(&batch).map_err(|e| e.to_string())?;
    let fill = start.elapsed().as_secs_f64();
    let size = std::fs::metadata(&store_path).map(|m| m.len()).unwrap_or(0);
    println!(
        "queries   store of {} events: filled in {fill:.1}s ({:.0}/s in 50k batches), {} MiB",
        a.events,
        a.events as f64 / fill,
        size >> 20
    );
    let time = |f: &dyn Fn() -> Result<u64, String>| -> Result<(f64, u64), String> {
        let mut t = Vec::new();
        let mut n = 0;
        for _ in 0..5 {
            let s = Instant::now();
            n = f()?;
            t.push(s.elapsed().as_secs_f64() * 1000.0);
        }
        Ok((median(t), n))
    };
    let last_hour = 1_700_000_000_000_000_000 + a.events * 100_000 - 3_600_000_000_000;
    let queries: Vec<(&str, Query)> = vec![
        (
            "session s8, denials, newest 1000 (corral events --session s8 --decision deny)",
            Query {
                session: Some(8),
                decision: Some(Decision::Deny),
                limit: Some(1000),
                ..Query::default()
            },
        ),
        (
            "kind net, last hour, newest 1000 (--kind net --since 1h)",
            Query {
                kind: Some(Kind::Net),
                since_wall_ns: Some(last_hour),
                limit: Some(1000),
                ..Query::default()
            },
        ),
        (
            "all denials, newest 100 (--decision deny --limit 100)",
            Query {
                decision: Some(Decision::Deny),
                limit: Some(100),
                ..Query::default()
            },
        ),
        (
            "session s8, grep module42, newest 100",
            Query {
                session: Some(8),
                grep: Some("module42/".into()),
                limit: Some(100),
                ..Query::default()
            },
        ),
    ];
    let scan = time(&|| {
        store
            .count_matching(&Query {
                grep: Some("module42/".into()),
                ..Query::default()
            })
            .map_err(|e| e.to_string())
    });
    for (name, q) in &queries {
        let (ms, n) = time(&|| store.query(q).map(|r| r.len() as u64).map_err(|e| e.to_string()))?;
        println!("query     {name:<78} {ms:>9.2} ms  ({n} rows)");
    }
    let (ms, n) = time(&|| {
        store
            .count_matching(&Query {
                session: Some(8),
                decision: Some(Decision::Deny),
                ..Query::default()
            })
            .map_err(|e| e.to_string())
    })?;
    println!(
        "query     {:<78} {ms:>9.2} ms  ({n})",
        "count: session s8 denials (indexed)"
    );
    if let Ok((sms, sn)) = scan {
        println!(
            "baseline  {:<78} {sms:>9.2} ms  ({sn} rows matched; grep scans every row)",
            "count: grep module42/ over all sessions (no index can help)"
        );
        println!(
            "indexed count (session + decision) vs the full scan: {:.4}x",
            ms / sms.max(1e-9)
        );
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store_path.display()));
    }
    for name in ["abench-paced.db", "abench-overload.db"] {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", a.dir.join(name).display()));
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corral-abench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
