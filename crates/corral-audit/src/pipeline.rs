//! The pipeline: a writer thread that owns a [`Store`] and takes events from
//! any number of [`PipelineSender`]s without ever making them wait.
//!
//! `send` is a `try_send` into a bounded channel: when it is full the event
//! is dropped and counted per (session, `pipeline_full`). The writer batches
//! (up to [`BATCH`] events or [`BATCH_WINDOW`]) into one transaction each. A
//! failed write (disk full, locked) keeps the batch in memory, up to
//! [`MAX_PENDING`] events, and retries; whatever it cannot keep is counted
//! as `store_error`. Drop counters reach the store periodically and at close.

use crate::{AuditError, Retention, Store, Stored};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most events per transaction.
pub const BATCH: usize = 4096;
/// Longest a received event waits for its batch to fill.
pub const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Most events kept in memory while the store refuses writes.
pub const MAX_PENDING: usize = 16 * BATCH;
/// How often drop counters are written, and the idle wake-up period.
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// Wait between attempts while the store refuses writes.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// Attempts at close before the remaining events are given up.
const CLOSE_ATTEMPTS: u32 = 3;

/// Drop reason: the channel to the writer was full.
pub const PIPELINE_FULL: &str = "pipeline_full";
/// Drop reason: the store refused writes for too long.
pub const STORE_ERROR: &str = "store_error";
/// Drop reason: the pipeline was already closed.
pub const PIPELINE_CLOSED: &str = "pipeline_closed";

// Events travel inline: boxing them would allocate on every send.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Event(Stored),
    /// A policy text to keep (see [`Store::record_policy`]).
    Policy {
        label: String,
        text: String,
    },
    Close,
}

/// One subscriber's end: batches of stored events (ids set), in store order.
struct Subscriber {
    tx: SyncSender<Arc<Vec<Stored>>>,
    lagged: Arc<AtomicU64>,
}

/// A live feed of stored events, for the UI, `--follow` in-process, and
/// exporters. A subscriber that falls behind loses whole batches, counted
/// in [`Subscription::lagged`]; the store and enforcement never wait on it.
pub struct Subscription {
    rx: Receiver<Arc<Vec<Stored>>>,
    lagged: Arc<AtomicU64>,
}

impl Subscription {
    /// The next batch, waiting at most `timeout`. `Disconnected` once the
    /// pipeline has closed and every batch was taken.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Arc<Vec<Stored>>, RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// The next batch; `None` once the pipeline has closed.
    pub fn recv(&self) -> Option<Arc<Vec<Stored>>> {
        self.rx.recv().ok()
    }

    /// Events this subscriber missed because its queue was full.
    pub fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }
}

/// Drop counts shared between senders and the writer.
#[derive(Default)]
struct Drops {
    total: AtomicU64,
    by_session: Mutex<HashMap<(u32, &'static str), u64>>,
}

impl Drops {
    fn add(&self, session: u32, reason: &'static str, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
        let mut m = self
            .by_session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry((session, reason)).or_default() += n;
    }

    fn take(&self) -> HashMap<(u32, &'static str), u64> {
        let mut m = self
            .by_session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *m)
    }
}

/// What a pipeline did, returned by [`Pipeline::close`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Events written to the store.
    pub stored: u64,
    /// Events dropped, all reasons (each one counted in the store's `drops`
    /// table unless `last_error` says the store failed at the end).
    pub dropped: u64,
    /// Failed write attempts.
    pub write_errors: u64,
    /// The last write error, if any.
    pub last_error: Option<String>,
}

/// The handle that owns the writer thread.
pub struct Pipeline {
    tx: SyncSender<Msg>,
    drops: Arc<Drops>,
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
    thread: std::io::Result<JoinHandle<PipelineStats>>,
}

/// A cheap, cloneable handle for sending events; `send` never blocks.
#[derive(Clone)]
pub struct PipelineSender {
    tx: SyncSender<Msg>,
    drops: Arc<Drops>,
}

impl PipelineSender {
    /// Hands an event to the writer; `false` when it was dropped (and
    /// counted) because the pipeline is full or closed. Never blocks.
    pub fn send(&self, s: Stored) -> bool {
        let session = s.event.session.0;
        match self.tx.try_send(Msg::Event(s)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.drops.add(session, PIPELINE_FULL, 1);
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                self.drops.add(session, PIPELINE_CLOSED, 1);
                false
            }
        }
    }

    /// Keeps a policy text in the store (a reload's new policy). Waits only
    /// while the channel is full; `false` if the pipeline is closed.
    pub fn record_policy(&self, label: &str, text: &str) -> bool {
        self.tx
            .send(Msg::Policy {
                label: label.to_owned(),
                text: text.to_owned(),
            })
            .is_ok()
    }

    /// Events dropped so far by senders of this pipeline (all senders).
    pub fn dropped(&self) -> u64 {
        self.drops.total.load(Ordering::Relaxed)
    }
}

impl Pipeline {
    /// Starts the writer thread; the channel holds `capacity` events (at
    /// least one).
    pub fn start(store: Store, capacity: usize) -> Pipeline {
        Pipeline::start_with(store, capacity, Options::default())
    }

    /// [`Pipeline::start`] with options (retention).
    pub fn start_with(store: Store, capacity: usize, options: Options) -> Pipeline {
        let (tx, rx) = sync_channel(capacity.max(1));
        let drops = Arc::new(Drops::default());
        let subscribers = Arc::new(Mutex::new(Vec::new()));
        let writer = Writer {
            store,
            drops: Arc::clone(&drops),
            subscribers: Arc::clone(&subscribers),
            retention: options.retention,
            on_health: options.on_health,
            last_prune: None,
            pending: Vec::new(),
            unflushed: HashMap::new(),
            stats: PipelineStats::default(),
            failing: false,
        };
        let thread = std::thread::Builder::new()
            .name("corral-audit".into())
            .spawn(move || writer.run(rx));
        // Without a thread (the system is out of resources) every send is
        // counted as `pipeline_closed` and `close` reports the error.
        Pipeline {
            tx,
            drops,
            subscribers,
            thread,
        }
    }

    /// Subscribes to stored events from now on; the queue holds `capacity`
    /// batches (at least one).
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        let (tx, rx) = sync_channel(capacity.max(1));
        let lagged = Arc::new(AtomicU64::new(0));
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Subscriber {
                tx,
                lagged: Arc::clone(&lagged),
            });
        Subscription { rx, lagged }
    }

    /// A new handle for sending events.
    pub fn sender(&self) -> PipelineSender {
        PipelineSender {
            tx: self.tx.clone(),
            drops: Arc::clone(&self.drops),
        }
    }

    /// Drains what was sent, writes it and the drop counters, and stops the
    /// writer. Events sent after this are dropped as `pipeline_closed` (and
    /// not recorded in the store).
    pub fn close(self) -> Result<PipelineStats, AuditError> {
        // Blocks only while the channel is full, which the writer drains.
        let _ = self.tx.send(Msg::Close);
        drop(self.tx);
        let mut stats = self
            .thread
            .map_err(AuditError::Spawn)?
            .join()
            .map_err(|_| AuditError::WriterPanicked)?;
        stats.dropped += self.drops.total.load(Ordering::Relaxed);
        Ok(stats)
    }
}

/// Told of the store's health on the writer thread: `Some(error)` when it
/// starts refusing writes, `None` when it accepts them again.
pub type HealthFn = Arc<dyn Fn(Option<&str>) + Send + Sync>;

/// Pipeline options.
#[derive(Clone, Default)]
pub struct Options {
    /// What the store keeps; checked at start and every [`PRUNE_INTERVAL`].
    pub retention: Retention,
    /// Told when the store starts refusing writes (with the error) and when
    /// it accepts them again (`None`), on the writer thread: the caller
    /// reports it (enforcement goes on either way).
    pub on_health: Option<HealthFn>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("retention", &self.retention)
            .field("on_health", &self.on_health.is_some())
            .finish()
    }
}

/// How often retention is applied while the pipeline runs.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

struct Writer {
    store: Store,
    drops: Arc<Drops>,
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
    retention: Retention,
    on_health: Option<HealthFn>,
    last_prune: Option<Instant>,
    pending: Vec<Stored>,
    /// Drop counts not yet in the store.
    unflushed: HashMap<(u32, &'static str), u64>,
    /// `dropped` counts only the writer's own drops (`store_error`).
    stats: PipelineStats,
    failing: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) -> PipelineStats {
        let mut last_flush = Instant::now();
        let mut closing = false;
        while !closing {
            let first_wait = if self.failing {
                RETRY_INTERVAL
            } else if self.pending.is_empty() {
                FLUSH_INTERVAL
            } else {
                Duration::ZERO
            };
            match rx.recv_timeout(first_wait) {
                Ok(Msg::Event(s)) => {
                    self.accept(s);
                    // While the store refuses writes, keep draining the
                    // channel into memory (up to MAX_PENDING) so senders
                    // are not refused first.
                    let limit = if self.failing { MAX_PENDING } else { BATCH };
                    let deadline = Instant::now() + BATCH_WINDOW;
                    let mut got = 1;
                    while got < limit {
                        got += 1;
                        let left = deadline.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(Msg::Event(s)) => self.accept(s),
                            Ok(Msg::Policy { label, text }) => self.policy(&label, &text),
                            Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => {
                                closing = true;
                                break;
                            }
                            Err(RecvTimeoutError::Timeout) => break,
                        }
                    }
                }
                Ok(Msg::Policy { label, text }) => self.policy(&label, &text),
                Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => closing = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.write();
            self.prune();
            if last_flush.elapsed() >= FLUSH_INTERVAL {
                self.flush_drops();
                last_flush = Instant::now();
            }
        }
        // Closing: take what other senders still queued, then write it all.
        while let Ok(m) = rx.try_recv() {
            match m {
                Msg::Event(s) => self.accept(s),
                Msg::Policy { label, text } => self.policy(&label, &text),
                Msg::Close => {}
            }
        }
        for attempt in 0..CLOSE_ATTEMPTS {
            self.write();
            if self.pending.is_empty() {
                break;
            }
            if attempt + 1 < CLOSE_ATTEMPTS {
                std::thread::sleep(RETRY_INTERVAL);
            }
        }
        for s in std::mem::take(&mut self.pending) {
            self.give_up(s.event.session.0);
        }
        self.flush_drops();
        self.stats
    }

    fn accept(&mut self, s: Stored) {
        if self.pending.len() >= MAX_PENDING {
            self.give_up(s.event.session.0);
        } else {
            self.pending.push(s);
        }
    }

    fn give_up(&mut self, session: u32) {
        self.stats.dropped += 1;
        *self.unflushed.entry((session, STORE_ERROR)).or_default() += 1;
    }

    fn policy(&mut self, label: &str, text: &str) {
        if let Err(e) = self.store.record_policy(label, text) {
            self.stats.write_errors += 1;
            self.stats.last_error = Some(e.to_string());
        }
    }

    /// Applies retention at start and every [`PRUNE_INTERVAL`].
    fn prune(&mut self) {
        if self.retention.is_unlimited() || self.last_prune.is_some_and(|t| t.elapsed() < PRUNE_INTERVAL) {
            return;
        }
        self.last_prune = Some(Instant::now());
        if let Err(e) = self.store.prune(&self.retention) {
            self.stats.write_errors += 1;
            self.stats.last_error = Some(e.to_string());
        }
    }

    fn has_subscribers(&self) -> bool {
        !self
            .subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    /// Hands a stored batch to every subscriber that has room; the others
    /// count it as lagged. Closed subscriptions are forgotten.
    fn broadcast(&mut self, batch: Vec<Stored>) {
        let mut subs = self
            .subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = batch.len() as u64;
        let shared = Arc::new(batch);
        subs.retain(|s| match s.tx.try_send(Arc::clone(&shared)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                s.lagged.fetch_add(n, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// Writes pending events, one transaction per [`BATCH`].
    fn write(&mut self) {
        while !self.pending.is_empty() {
            let n = self.pending.len().min(BATCH);
            let batch = self.pending.get_mut(..n).unwrap_or_default();
            match self.store.insert_assign(batch) {
                Ok(k) => {
                    self.stats.stored += k as u64;
                    if self.has_subscribers() {
                        let done: Vec<Stored> = self.pending.drain(..n).collect();
                        self.broadcast(done);
                    } else {
                        self.pending.drain(..n);
                    }
                    if self.failing {
                        if let Some(f) = &self.on_health {
                            f(None);
                        }
                    }
                    self.failing = false;
                }
                Err(e) => {
                    self.stats.write_errors += 1;
                    self.stats.last_error = Some(e.to_string());
                    if !self.failing {
                        if let Some(f) = &self.on_health {
                            f(Some(&e.to_string()));
                        }
                    }
                    self.failing = true;
                    return;
                }
            }
        }
    }

    fn flush_drops(&mut self) {
        for (k, n) in self.drops.take() {
            *self.unflushed.entry(k).or_default() += n;
        }
        let mut failed = HashMap::new();
        for ((session, reason), n) in std::mem::take(&mut self.unflushed) {
            if let Err(e) = self.store.add_drops(session, reason, n) {
                self.stats.write_errors += 1;
                self.stats.last_error = Some(e.to_string());
                failed.insert((session, reason), n);
            }
        }
        self.unflushed = failed;
    }
}
