//! Not asserted: how many events/s `insert` sustains in 4096-event batches.

use crate::util::{one_of_each, stored, temp_store};
use corral_audit::Stored;
use std::time::Instant;

#[test]
fn insert_throughput() {
    let (_dir, mut store) = temp_store();
    let kinds = one_of_each(3);
    let batch: Vec<Stored> = (0..4096)
        .map(|i| stored(i as u64, kinds[i % kinds.len()].clone()))
        .collect();
    let batches = 50;
    let t = Instant::now();
    for _ in 0..batches {
        store.insert(&batch).unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let n = batches * batch.len();
    assert_eq!(store.count().unwrap(), n as u64);
    eprintln!(
        "insert throughput: {n} events in {secs:.2} s = {:.0} events/s (4096-event batches)",
        n as f64 / secs
    );
}
