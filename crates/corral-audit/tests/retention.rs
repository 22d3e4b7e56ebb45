//! Retention by age and size, and the live subscription.

use crate::util::{one_of_each, stored, temp_store};
use corral_audit::{Options, Pipeline, Query, Retention, Store};
use std::time::Duration;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn age_retention_deletes_only_older_events_and_counts_them() {
    let (_dir, mut store) = temp_store();
    let now = now_ns();
    let day = 86_400 * 1_000_000_000u64;
    let e = one_of_each(3).remove(0);
    let old: Vec<_> = (0..30_000)
        .map(|i| stored(now - 10 * day + i, e.clone()))
        .collect();
    let new: Vec<_> = (0..500).map(|i| stored(now - day + i, e.clone())).collect();
    store.insert(&old).unwrap();
    store.insert(&new).unwrap();
    let r = Retention {
        max_age: Some(Duration::from_secs(7 * 86_400)),
        max_bytes: None,
    };
    let p = store.prune(&r).unwrap();
    assert_eq!((p.by_age, p.by_size), (30_000, 0));
    assert_eq!(store.count().unwrap(), 500);
    assert_eq!(store.pruned_total().unwrap(), 30_000);
    // Every survivor is newer than the cutoff.
    let left = store.query(&Query::default()).unwrap();
    assert!(left.iter().all(|s| s.wall_ns >= now - day));
    // Idempotent.
    assert_eq!(store.prune(&r).unwrap().by_age, 0);
    // Session counts are a summary and stay.
    let s = store.sessions().unwrap();
    assert_eq!(s[0].allowed, 30_500);
    assert_eq!(store.integrity_check().unwrap(), ["ok"]);
}

#[test]
fn size_retention_keeps_the_newest_under_the_limit() {
    let (_dir, mut store) = temp_store();
    let events = one_of_each(4);
    let batch: Vec<_> = (0..40_000u64)
        .map(|i| stored(i, events[(i as usize) % events.len()].clone()))
        .collect();
    store.insert(&batch).unwrap();
    let before = store.used_bytes().unwrap();
    let limit = before / 4;
    let r = Retention {
        max_age: None,
        max_bytes: Some(limit),
    };
    let p = store.prune(&r).unwrap();
    assert!(
        store.used_bytes().unwrap() <= limit,
        "{} > {limit}",
        store.used_bytes().unwrap()
    );
    let left = store.count().unwrap();
    assert!(left > 0 && left < 40_000);
    assert_eq!(p.by_size + left, 40_000);
    assert_eq!(store.pruned_total().unwrap(), p.by_size);
    // What is left is the newest: the oldest survivor follows every deleted one.
    let first = store
        .query(&Query {
            limit: None,
            ..Query::default()
        })
        .unwrap()
        .first()
        .map(|s| s.wall_ns)
        .unwrap();
    assert_eq!(first, p.by_size);
    // The file does not grow past its size while new events replace old.
    store.insert(&batch[..5_000]).unwrap();
    store.prune(&r).unwrap();
    assert!(store.used_bytes().unwrap() <= limit);
}

#[test]
fn the_pipeline_applies_retention_at_start() {
    let (_dir, mut store) = temp_store();
    let e = one_of_each(5).remove(0);
    store
        .insert(&(0..1_000).map(|i| stored(i, e.clone())).collect::<Vec<_>>())
        .unwrap();
    let path = store.path().to_owned();
    let p = Pipeline::start_with(
        store,
        64,
        Options {
            retention: Retention {
                max_age: Some(Duration::from_secs(3600)),
                max_bytes: None,
            },
            on_health: None,
        },
    );
    let tx = p.sender();
    assert!(tx.send(stored(now_ns(), e.clone())));
    p.close().unwrap();
    let s = Store::open(&path).unwrap();
    assert_eq!(
        s.count().unwrap(),
        1,
        "the 1970 events are gone, the new one stays"
    );
    assert_eq!(s.pruned_total().unwrap(), 1_000);
}

#[test]
fn subscribers_see_stored_events_with_ids_and_a_slow_one_lags_counted() {
    let (_dir, store) = temp_store();
    let p = Pipeline::start(store, 4096);
    let live = p.subscribe(1024);
    let slow = p.subscribe(1);
    let tx = p.sender();
    let events = one_of_each(9);
    let n = 20_000u64;
    for i in 0..n {
        while !tx.send(stored(i, events[(i as usize) % events.len()].clone())) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if i % 1000 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let stats = p.close().unwrap();
    let mut got = Vec::new();
    while let Some(b) = live.recv() {
        got.extend(b.iter().cloned());
    }
    assert_eq!(stats.stored, n);
    assert_eq!(got.len() as u64, n - live.lagged());
    assert_eq!(live.lagged(), 0, "a subscriber with room misses nothing");
    // In store order, ids set and increasing.
    assert!(got.windows(2).all(|w| w[0].id < w[1].id));
    assert!(got.iter().all(|s| s.id.is_some()));
    assert_eq!(got[7].event, events[7]);
    let mut slow_got = 0u64;
    while let Some(b) = slow.recv() {
        slow_got += b.len() as u64;
    }
    assert!(slow.lagged() > 0, "a one-batch queue must fall behind");
    assert_eq!(
        slow_got + slow.lagged(),
        n,
        "each event delivered or counted as lagged"
    );
}
