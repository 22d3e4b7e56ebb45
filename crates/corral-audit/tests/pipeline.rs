//! Pipeline: nothing lost without being counted, nothing blocks.

use crate::util::{one_of_each, stored, temp_store};
use corral_audit::pipeline::{MAX_PENDING, PIPELINE_FULL, STORE_ERROR};
use corral_audit::{Pipeline, Query, Store};
use std::time::{Duration, Instant};

#[test]
fn delivers_everything_when_not_overloaded() {
    let (dir, store) = temp_store();
    let path = store.path().to_owned();
    let p = Pipeline::start(store, 1024);
    let tx = p.sender();
    let events = one_of_each(6);
    let mut sent = 0;
    for round in 0..20 {
        for e in &events {
            assert!(tx.send(stored(round, e.clone())));
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let stats = p.close().unwrap();
    assert_eq!((stats.stored, stats.dropped), (sent, 0));
    let store = Store::open(&path).unwrap();
    let got = store.query(&Query::default()).unwrap();
    assert_eq!(got.len() as u64, sent);
    assert_eq!(got[0].event, events[0]);
    assert!(store.drops(6).unwrap().is_empty());
    drop(dir);
}

#[test]
fn overload_drops_are_counted_exactly() {
    let (_dir, store) = temp_store();
    let path = store.path().to_owned();
    let p = Pipeline::start(store, 16);
    let tx = p.sender();
    let e = stored(1, one_of_each(8).remove(0));
    let sent: u64 = 100_000;
    let t = Instant::now();
    let mut refused = 0;
    for _ in 0..sent {
        if !tx.send(e.clone()) {
            refused += 1;
        }
    }
    let send_time = t.elapsed();
    assert_eq!(tx.dropped(), refused);
    let stats = p.close().unwrap();
    eprintln!(
        "overload: sent {sent} in {send_time:?}, stored {}, dropped {}",
        stats.stored, stats.dropped
    );
    assert_eq!(stats.stored + stats.dropped, sent);
    assert_eq!(stats.dropped, refused);
    assert!(refused > 0, "a capacity-16 pipeline must overflow");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.count().unwrap(), stats.stored);
    assert_eq!(
        store.drops(8).unwrap(),
        vec![(PIPELINE_FULL.to_string(), refused)]
    );
    let s = store.sessions().unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].drops, refused);
}

#[test]
fn locked_store_keeps_events_and_retries() {
    let (_dir, store) = temp_store();
    store.set_busy_timeout(Duration::from_millis(10)).unwrap();
    let path = store.path().to_owned();
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let p = Pipeline::start(store, 1024);
    let tx = p.sender();
    for e in one_of_each(3) {
        assert!(tx.send(stored(1, e)));
    }
    // Let the writer fail a few times, then release the lock.
    std::thread::sleep(Duration::from_millis(300));
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    let stats = p.close().unwrap();
    assert!(stats.write_errors > 0, "{stats:?}");
    assert_eq!((stats.stored, stats.dropped), (9, 0), "{stats:?}");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.count().unwrap(), 9);
    assert!(store.drops(3).unwrap().is_empty());
}

#[test]
fn store_locked_through_close_counts_store_error() {
    let (_dir, store) = temp_store();
    store.set_busy_timeout(Duration::from_millis(10)).unwrap();
    let path = store.path().to_owned();
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let p = Pipeline::start(store, 1024);
    let tx = p.sender();
    for e in one_of_each(3) {
        assert!(tx.send(stored(1, e)));
    }
    let stats = p.close().unwrap();
    assert_eq!((stats.stored, stats.dropped), (0, 9), "{stats:?}");
    assert!(stats.last_error.as_deref().unwrap_or("").contains("locked"));
    holder.execute_batch("ROLLBACK").unwrap();
    // The drop counter could not be written either: the stats say so, and
    // the store holds no rows (nothing half-written).
    let store = Store::open(&path).unwrap();
    assert_eq!(store.count().unwrap(), 0);
    assert_eq!(store.integrity_check().unwrap(), vec!["ok".to_string()]);
}

#[test]
fn memory_bound_while_locked_counts_store_error() {
    let (_dir, store) = temp_store();
    store.set_busy_timeout(Duration::from_millis(10)).unwrap();
    let path = store.path().to_owned();
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let p = Pipeline::start(store, 100_000);
    let tx = p.sender();
    let e = stored(1, one_of_each(5).remove(0));
    let sent = MAX_PENDING as u64 + 4_464;
    for _ in 0..sent {
        assert!(tx.send(e.clone()));
    }
    // Give the writer time to take everything into memory.
    std::thread::sleep(Duration::from_millis(1500));
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    let stats = p.close().unwrap();
    assert_eq!(
        (stats.stored, stats.dropped),
        (MAX_PENDING as u64, 4_464),
        "{stats:?}"
    );
    let store = Store::open(&path).unwrap();
    assert_eq!(store.count().unwrap(), MAX_PENDING as u64);
    assert_eq!(store.drops(5).unwrap(), vec![(STORE_ERROR.to_string(), 4_464)]);
}
