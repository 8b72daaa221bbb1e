//! What every fault test shares, whether its brokers are processes (`cluster_kill.rs`) or
//! containers (`containers.rs`): waiting on the cluster as a client sees it (registered
//! brokers, leaders and ISRs), creating the RF=3 topic, and the one workload and checker.
//!
//! The workload ([`Workload`]) is an idempotent rdkafka producer at acks=all writing unique,
//! per-partition ordered values, and a consumer in a group reading everything and committing
//! as it goes, while a watcher reads the group's committed offsets back and counts any that
//! went backwards. [`Workload::finish`] stops the producer, lets the group catch up to every
//! partition's end and reads the whole topic back: a [`FaultRow`] of acknowledged, lost,
//! duplicated and reordered records, committed offsets that went backwards, and how long
//! producers stalled after the fault.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::{exactly_once_counts, keep_producing_idempotent, AckLog, Acked};

/// The value after `key` (such as `term=`) in a log line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = &line[line.find(key)? + key.len()..];
    Some(rest.split_whitespace().next().unwrap_or(rest))
}

/// Polls `check` every 200 ms until it gives a value; panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Leader and ISR of each partition of `topic` as the cluster answers Metadata.
pub fn partitions(bootstrap: &str, topic: &str) -> BTreeMap<i32, (i32, Vec<i32>)> {
    let Ok(client) = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create::<BaseConsumer>()
    else {
        return BTreeMap::new();
    };
    let Ok(metadata) = client.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return BTreeMap::new();
    };
    metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| (p.id(), (p.leader(), p.isr().to_vec())))
        .collect()
}

/// Listening is not registered: waits until Metadata lists `brokers` brokers.
pub fn wait_registered(bootstrap: &str, brokers: usize) {
    wait_for(
        &format!("{brokers} registered brokers"),
        Duration::from_secs(60),
        || {
            let client: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                .create()
                .ok()?;
            let metadata = client.fetch_metadata(None, Duration::from_secs(5)).ok()?;
            (metadata.brokers().len() == brokers).then_some(())
        },
    );
}

/// Waits until each of `topic`'s `count` partitions has a leader and `copies` replicas in its
/// ISR.
pub fn wait_full_isr(bootstrap: &str, topic: &str, count: i32, copies: usize, what: &str) {
    wait_for(what, Duration::from_secs(90), || {
        let p = partitions(bootstrap, topic);
        (p.len() == count as usize && p.values().all(|(l, isr)| *l >= 0 && isr.len() == copies))
            .then_some(())
    });
}

/// Waits (up to 90 s) until `more` records beyond those acknowledged now are acknowledged.
pub fn wait_acked(acked: &Acked, more: usize, what: &str) {
    wait_acked_within(acked, more, what, Duration::from_secs(90));
}

/// [`wait_acked`] with its own timeout.
pub fn wait_acked_within(acked: &Acked, more: usize, what: &str, timeout: Duration) {
    let target = acked.lock().expect("lock").len() + more;
    wait_for(what, timeout, || {
        (acked.lock().expect("lock").len() >= target).then_some(())
    });
}

/// Creates `topic` with `partitions` partitions at RF=3 and min.insync.replicas=2.
pub async fn create_rf3_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(3))
        .set("min.insync.replicas", "2");
    let results = admin
        .create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

/// One fault's outcome: a row of the table the fault suites print.
#[derive(Debug, Clone, Default)]
pub struct FaultRow {
    pub fault: String,
    pub acknowledged: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub reordered: usize,
    /// Sends that failed (not acknowledged, so allowed to be missing).
    pub failed_sends: usize,
    /// Committed offsets the watcher saw go backwards.
    pub commits_backwards: usize,
    /// The longest time without an acknowledgement after the fault began.
    pub stall: Duration,
    pub seconds: f64,
}

impl FaultRow {
    pub const HEADER: &'static str = "| fault | acknowledged | lost | duplicated | reordered | failed sends | commits backwards | producers stalled (s) | test (s) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|";

    /// The row as a markdown table line.
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.0} |",
            self.fault,
            self.acknowledged,
            self.lost,
            self.duplicated,
            self.reordered,
            self.failed_sends,
            self.commits_backwards,
            self.stall.as_secs_f64(),
            self.seconds
        )
    }

    /// Prints the row and keeps it under `target/tmp/fault-table/<file>.md`, where the test
    /// command collects the table; then asserts nothing acknowledged was lost, duplicated or
    /// reordered and no committed offset went backwards.
    pub fn record_and_check(&self, file: &str) {
        eprintln!("{}\n{}", FaultRow::HEADER, self.markdown());
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-table");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{file}.md")), self.markdown() + "\n");
        assert!(
            self.acknowledged > 0,
            "{}: nothing was acknowledged",
            self.fault
        );
        assert_eq!(
            (
                self.lost,
                self.duplicated,
                self.reordered,
                self.commits_backwards
            ),
            (0, 0, 0, 0),
            "{}: lost, duplicated, reordered, commits backwards: {self:?}",
            self.fault
        );
    }
}

/// The rows kept under `target/tmp/fault-table`, as one markdown table.
pub fn fault_table() -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-table");
    let mut rows: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    rows.sort();
    let mut table = String::from(FaultRow::HEADER);
    for row in rows {
        let _ = write!(table, "\n{}", row.trim_end());
    }
    table
}

/// The shared workload: an idempotent producer and a consumer group over one topic.
pub struct Workload {
    bootstrap: String,
    topic: &'static str,
    partitions: i32,
    pub acked: Acked,
    stop: Arc<AtomicBool>,
    producer: tokio::task::JoinHandle<usize>,
    group: GroupReader,
    started: Instant,
}

impl Workload {
    /// Starts producing to and consuming `topic` (which exists, with `partitions` partitions)
    /// in group `group`.
    pub fn start(bootstrap: &str, topic: &'static str, partitions: i32, group: &str) -> Workload {
        let acked: Acked = Arc::new(Mutex::new(AckLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let producer = keep_producing_idempotent(
            bootstrap.to_string(),
            topic,
            partitions,
            acked.clone(),
            stop.clone(),
        );
        Workload {
            bootstrap: bootstrap.to_string(),
            topic,
            partitions,
            acked,
            stop,
            producer,
            group: GroupReader::start(bootstrap, topic, partitions, group),
            started: Instant::now(),
        }
    }

    /// Waits (up to 90 s) until `more` further records are acknowledged.
    pub fn wait_acked(&self, more: usize, what: &str) {
        wait_acked(&self.acked, more, what);
    }

    /// [`Workload::wait_acked`] with its own timeout.
    pub fn wait_acked_within(&self, more: usize, what: &str, timeout: Duration) {
        wait_acked_within(&self.acked, more, what, timeout);
    }

    /// Stops producing, waits for the group to commit up to every partition's end, reads the
    /// topic back and returns the row for `fault`, which began at `fault_at`.
    pub async fn finish(self, fault: &str, fault_at: Instant) -> FaultRow {
        self.stop.store(true, Ordering::Relaxed);
        let failed_sends = self.producer.await.expect("producer task");
        let bootstrap = self.bootstrap.clone();
        let (topic, partitions, acked) = (self.topic, self.partitions, self.acked.clone());
        let found = tokio::task::spawn_blocking(move || {
            exactly_once_counts(&bootstrap, topic, partitions, &acked)
        })
        .await
        .expect("checker");
        let ends = high_watermarks(&self.bootstrap, self.topic, self.partitions);
        let group = self.group;
        let commits_backwards = tokio::task::spawn_blocking(move || group.finish(&ends))
            .await
            .expect("group reader");
        let stall = self
            .acked
            .lock()
            .expect("lock")
            .longest_stall_after(fault_at);
        FaultRow {
            fault: fault.to_string(),
            acknowledged: found.acknowledged,
            lost: found.lost,
            duplicated: found.duplicated,
            reordered: found.reordered,
            failed_sends,
            commits_backwards,
            stall,
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// Each partition's high watermark.
pub fn high_watermarks(bootstrap: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    (0..partitions)
        .map(|p| {
            let (_, high) = client
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p, high)
        })
        .collect()
}

/// A consumer in a group that reads and commits as it goes, and a watcher of what the
/// group has committed, on a thread of their own.
struct GroupReader {
    stop: Arc<AtomicBool>,
    /// Set once the group has committed at least these offsets.
    target: Arc<Mutex<Option<BTreeMap<i32, i64>>>>,
    thread: std::thread::JoinHandle<Result<usize, String>>,
}

impl GroupReader {
    fn start(bootstrap: &str, topic: &'static str, partitions: i32, group: &str) -> GroupReader {
        let stop = Arc::new(AtomicBool::new(false));
        let target: Arc<Mutex<Option<BTreeMap<i32, i64>>>> = Arc::new(Mutex::new(None));
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .set("fetch.wait.max.ms", "100");
        super::rdkafka_debug(&mut config);
        let consumer: BaseConsumer = config.create().expect("group consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let thread = std::thread::spawn({
            let (stop, target) = (stop.clone(), target.clone());
            move || read_and_commit(&consumer, topic, partitions, &stop, &target)
        });
        GroupReader {
            stop,
            target,
            thread,
        }
    }

    /// Waits (up to 180 s: a request in flight to a broker that was cut off is given up by
    /// librdkafka only at its socket or message timeouts) until the group has committed
    /// `ends`, then stops; the number of committed offsets seen going backwards.
    fn finish(self, ends: &BTreeMap<i32, i64>) -> usize {
        *self.target.lock().expect("lock") = Some(ends.clone());
        let deadline = Instant::now() + Duration::from_secs(180);
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join().expect("group reader thread") {
            Ok(backwards) => backwards,
            Err(e) => panic!("the consumer group did not read everything back: {e}"),
        }
    }
}

/// The group reader's loop: poll, commit what was read every 250 ms, and read the group's
/// committed offsets back after each commit. Ends when the committed offsets reach the
/// target, or with an error when stopped before.
fn read_and_commit(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    stop: &AtomicBool,
    target: &Mutex<Option<BTreeMap<i32, i64>>>,
) -> Result<usize, String> {
    let mut seen: BTreeMap<i32, i64> = BTreeMap::new();
    let mut backwards = 0;
    let mut last_commit = Instant::now();
    let mut all = TopicPartitionList::new();
    for p in 0..partitions {
        all.add_partition(topic, p);
    }
    loop {
        // enable.auto.offset.store (the default) stores each message's offset as it is
        // returned; the commit below sends what is stored.
        let _ = consumer.poll(Duration::from_millis(100));
        if last_commit.elapsed() < Duration::from_millis(250) {
            continue;
        }
        last_commit = Instant::now();
        // Failures while a coordinator moves are expected; the next round retries.
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        if let Ok(committed) = consumer.committed_offsets(all.clone(), Duration::from_secs(5)) {
            for e in committed.elements() {
                let Offset::Offset(offset) = e.offset() else {
                    continue;
                };
                let before = seen.entry(e.partition()).or_insert(offset);
                if offset < *before {
                    eprintln!(
                        "group commit went backwards on partition {}: {} after {}",
                        e.partition(),
                        offset,
                        before
                    );
                    backwards += 1;
                }
                *before = (*before).max(offset);
            }
        }
        let done = target.lock().expect("lock").as_ref().is_some_and(|ends| {
            ends.iter()
                .all(|(p, end)| *end == 0 || seen.get(p).is_some_and(|o| o >= end))
        });
        if done {
            return Ok(backwards);
        }
        if stop.load(Ordering::Relaxed) {
            return Err(format!("committed {seen:?}, wanted {:?}", target.lock()));
        }
    }
}
