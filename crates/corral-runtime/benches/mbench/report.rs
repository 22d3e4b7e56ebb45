//! What the bench prints: one row per configuration (p50, p99, mean) with
//! what it adds to its direct baseline, then the accounting checks; or all
//! of it as JSON.

use crate::setup::Check;
use crate::Args;
use serde_json::json;
use std::time::Duration;

/// Percentiles and mean of one configuration's round trips, µs.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
}

impl Stats {
    fn of(mut v: Vec<Duration>) -> Stats {
        if v.is_empty() {
            return Stats::default();
        }
        v.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        // Nearest rank.
        let at = |q: f64| {
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            us(v[rank - 1])
        };
        Stats {
            n: v.len(),
            p50: at(0.50),
            p99: at(0.99),
            mean: v.iter().map(|&d| us(d)).sum::<f64>() / v.len() as f64,
        }
    }
}

/// One configuration and, for a governed one, its baseline's numbers.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub stats: Stats,
    pub baseline: Option<(String, Stats)>,
}

/// The direct configuration a governed one is compared with.
fn baseline_of(name: &str) -> Option<&'static str> {
    match name {
        "stdio-wrapped" => Some("stdio-direct"),
        "http-proxy" => Some("http-direct"),
        _ => None,
    }
}

pub fn rows<'a>(names: impl Iterator<Item = &'a str>, samples: Vec<Vec<Duration>>) -> Vec<Row> {
    let stats: Vec<(String, Stats)> = names
        .zip(samples)
        .map(|(n, s)| (n.to_string(), Stats::of(s)))
        .collect();
    stats
        .iter()
        .map(|(name, s)| Row {
            name: name.clone(),
            stats: s.clone(),
            baseline: baseline_of(name).and_then(|b| stats.iter().find(|(n, _)| n == b).cloned()),
        })
        .collect()
}

pub fn print_table(a: &Args, rows: &[Row], checks: &[Check], timed: Duration) {
    println!(
        "corral-mbench: {} sequential tools/call (echo) per configuration after {} warm-up, \
         in {} rounds alternating the configurations; {:.1} s timed",
        a.calls,
        a.warmup,
        a.rounds,
        timed.as_secs_f64()
    );
    println!();
    println!(
        "{:<14} | {:>8} {:>8} {:>8} | {:>9} {:>9} {:>9} | {:>7} {:>7} {:>7}",
        "configuration", "p50", "p99", "mean", "+p50", "+p99", "+mean", "x p50", "x p99", "x mean"
    );
    for r in rows {
        let s = &r.stats;
        let (added, ratio) = match &r.baseline {
            Some((_, b)) => (
                format!(
                    "{:>9.1} {:>9.1} {:>9.1}",
                    s.p50 - b.p50,
                    s.p99 - b.p99,
                    s.mean - b.mean
                ),
                format!(
                    "{:>7.2} {:>7.2} {:>7.2}",
                    s.p50 / b.p50,
                    s.p99 / b.p99,
                    s.mean / b.mean
                ),
            ),
            None => (
                format!("{:>9} {:>9} {:>9}", "", "", ""),
                format!("{:>7} {:>7} {:>7}", "", "", ""),
            ),
        };
        println!(
            "{:<14} | {:>8.1} {:>8.1} {:>8.1} | {added} | {ratio}",
            r.name, s.p50, s.p99, s.mean
        );
    }
    println!(
        "(µs per call round trip; + = minus its direct baseline, x = divided by it: \
         stdio-wrapped vs stdio-direct, http-proxy vs http-direct)"
    );
    println!();
    for c in checks {
        println!("{} {}", if c.ok { "ok  " } else { "FAIL" }, c.what);
    }
}

pub fn print_json(a: &Args, rows: &[Row], checks: &[Check], timed: Duration) -> anyhow::Result<()> {
    let st = |s: &Stats| json!({"n": s.n, "p50_us": s.p50, "p99_us": s.p99, "mean_us": s.mean});
    let doc = json!({
        "calls": a.calls,
        "warmup": a.warmup,
        "rounds": a.rounds,
        "timed_s": timed.as_secs_f64(),
        "configurations": rows.iter().map(|r| {
            let mut v = json!({"name": r.name, "stats": st(&r.stats)});
            if let Some((b, bs)) = &r.baseline {
                v["baseline"] = json!(b);
                v["added_p50_us"] = json!(r.stats.p50 - bs.p50);
                v["added_p99_us"] = json!(r.stats.p99 - bs.p99);
                v["added_mean_us"] = json!(r.stats.mean - bs.mean);
                v["ratio_p50"] = json!(r.stats.p50 / bs.p50);
                v["ratio_p99"] = json!(r.stats.p99 / bs.p99);
                v["ratio_mean"] = json!(r.stats.mean / bs.mean);
            }
            v
        }).collect::<Vec<_>>(),
        "checks": checks.iter().map(|c| json!({"what": c.what, "ok": c.ok})).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
