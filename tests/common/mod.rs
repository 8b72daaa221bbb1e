//! Test fixtures: a real gregor broker on an ephemeral 127.0.0.1 port with a temporary data
//! dir, either in this process ([`TestBroker`]) or as a child process of the built binary
//! ([`ProcessBroker`], for kill -9 tests), and rdkafka clients pointed at it.

#![allow(dead_code)]

pub mod cluster;
pub mod containers;
pub mod faults;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gregor::broker::{self, RunningBroker};
use gregor::config::BrokerConfig;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// A broker running inside the test process.
pub struct TestBroker {
    pub running: Option<RunningBroker>,
    pub dir: tempfile::TempDir,
    pub bootstrap: String,
    settings: Vec<(String, String)>,
}

impl TestBroker {
    /// Starts a broker with default settings plus `settings` (Kafka names).
    pub async fn start(settings: &[(&str, &str)]) -> TestBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let running = start_in(dir.path(), 0, &settings).await;
        let bootstrap = running.bootstrap();
        TestBroker {
            running: Some(running),
            dir,
            bootstrap,
            settings,
        }
    }

    /// Stops cleanly and starts again on the same port and data dir.
    pub async fn restart(&mut self) {
        let port = self.port();
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
        self.running = Some(start_in(self.dir.path(), port, &self.settings).await);
    }

    /// Stops (cleanly or not: after a storage fault a log cannot close cleanly) and starts
    /// again on the same port and data dir.
    pub async fn restart_after_fault(&mut self) {
        let port = self.port();
        if let Some(running) = self.running.take() {
            if let Err(e) = running.shutdown().await {
                eprintln!("stopped uncleanly, as expected after a fault: {e}");
            }
        }
        self.running = Some(start_in(self.dir.path(), port, &self.settings).await);
    }

    pub fn port(&self) -> u16 {
        self.running.as_ref().expect("running").local_addr.port()
    }

    pub fn broker(&self) -> &std::sync::Arc<gregor::broker::Broker> {
        &self.running.as_ref().expect("running").broker
    }
}

async fn start_in(dir: &Path, port: u16, settings: &[(String, String)]) -> RunningBroker {
    let mut config = BrokerConfig::new(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        dir.to_path_buf(),
    );
    for (k, v) in settings {
        config.set(k, v).expect("setting");
    }
    // Port reuse right after a shutdown can race the kernel; retry briefly.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match broker::start(config.clone()).await {
            Ok(running) => return running,
            Err(e) if Instant::now() < deadline => {
                eprintln!("broker start retry: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("broker start: {e}"),
        }
    }
}

/// A broker running as a child process of the `gregor` binary.
pub struct ProcessBroker {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    pub port: u16,
    pub node_id: i32,
    /// More command-line arguments (`--voters ...`).
    pub extra_args: Vec<String>,
    pub extra_env: Vec<(String, String)>,
    /// Where its log goes (appended to across restarts); stderr when None.
    pub log_file: Option<PathBuf>,
    /// A command the broker runs under (`prlimit --nofile=...`), if any.
    pub wrapper: Vec<String>,
}

impl ProcessBroker {
    pub fn start(data_dir: &Path, port: u16, extra_env: &[(&str, &str)]) -> ProcessBroker {
        let mut b = ProcessBroker::new(data_dir, port, 1, &[], extra_env, None);
        b.spawn();
        b
    }

    /// Describes a broker process without starting it ([`ProcessBroker::spawn`] does).
    pub fn new(
        data_dir: &Path,
        port: u16,
        node_id: i32,
        extra_args: &[String],
        extra_env: &[(&str, &str)],
        log_file: Option<PathBuf>,
    ) -> ProcessBroker {
        ProcessBroker {
            child: None,
            data_dir: data_dir.to_path_buf(),
            port,
            node_id,
            extra_args: extra_args.to_vec(),
            extra_env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log_file,
            wrapper: Vec::new(),
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn spawn(&mut self) {
        self.launch();
        wait_for_port(self.port);
    }

    /// Starts the process without waiting for it to listen (brokers of a cluster listen only
    /// once a quorum forms, so they start together).
    pub fn launch(&mut self) {
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(env!("CARGO_BIN_EXE_gregor"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_gregor")),
        };
        cmd.args([
            "broker",
            "--node-id",
            &self.node_id.to_string(),
            "--listen",
            &format!("127.0.0.1:{}", self.port),
            "--data-dir",
        ])
        .arg(&self.data_dir)
        .args(&self.extra_args)
        .stdout(Stdio::null());
        match &self.log_file {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("log file");
                cmd.stderr(file);
            }
            None => {
                cmd.stderr(Stdio::inherit());
            }
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn gregor"));
    }

    /// SIGKILL: no flush, no checkpoint, no clean marker.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ProcessBroker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A free port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("broker did not listen on {port}");
}

pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    rdkafka_debug(&mut config);
    config.create().expect("producer")
}

/// librdkafka's own debug contexts for a failing test: `GREGOR_TEST_RDKAFKA_DEBUG` (e.g.
/// "eos,metadata,broker,cgrp") turns them on for this client and prints its log, with the
/// brokers' own when they run in this process (`RUST_LOG` filters, default
/// `info,librdkafka=debug`).
pub fn rdkafka_debug(config: &mut ClientConfig) {
    if let Ok(contexts) = std::env::var("GREGOR_TEST_RDKAFKA_DEBUG") {
        config.set("debug", contexts);
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,librdkafka=debug".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// A consumer with no group: partitions assigned explicitly from the beginning.
pub fn assigned_consumer(bootstrap: &str, topic: &str, partitions: i32) -> BaseConsumer {
    assigned_consumer_with(bootstrap, topic, partitions, &[])
}

/// [`assigned_consumer`] with more settings (`isolation.level`, ...).
pub fn assigned_consumer_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    extra: &[(&str, &str)],
) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused-no-commits")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "100");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// Rolls partition 0 of `topic`'s active segment (a test hook: a real broker rolls on
/// `segment.bytes`, `segment.ms` or `max.compaction.lag.ms`) and runs the log cleaner once.
pub async fn roll_and_clean(
    broker: &TestBroker,
    topic: &str,
) -> gregor::replica::manager::LogCleanerRun {
    let b = broker.broker().clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        b.replicas
            .leader_partition(&topic, 0)
            .expect("partition")
            .log()
            .roll()
            .expect("roll");
        b.replicas
            .run_log_cleaner(gregor::replica::manager::now_ms())
    })
    .await
    .expect("cleaner task")
}

/// Creates a topic through the admin API.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new_topic = new_topic.set(k, v);
    }
    let results = admin
        .create_topics(&[new_topic], &AdminOptions::new())
        .await
        .expect("create_topics");
    for r in results {
        r.expect("topic created");
    }
}

/// One request frame: size, header (correlation id 7), body.
pub fn request_frame<Req: kafka_protocol::protocol::Encodable>(
    api_key: kafka_protocol::messages::ApiKey,
    version: i16,
    request: &Req,
) -> Vec<u8> {
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::protocol::Encodable;
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .encode(&mut buf, api_key.request_header_version(version))
        .expect("header");
    request.encode(&mut buf, version).expect("body");
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    buf.to_vec()
}

/// Sends one request of `api_key` at `version` on `stream` and decodes the response.
pub fn raw_request_on<S, Req, Resp>(
    stream: &mut S,
    api_key: kafka_protocol::messages::ApiKey,
    version: i16,
    request: &Req,
) -> Resp
where
    S: std::io::Read + std::io::Write,
    Req: kafka_protocol::protocol::Encodable,
    Resp: kafka_protocol::protocol::Decodable,
{
    use bytes::{Buf, Bytes};
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::Decodable;
    stream
        .write_all(&request_frame(api_key, version, request))
        .expect("write");
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("response size");
    let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut frame).expect("response");
    let mut frame = Bytes::from(frame);
    let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))
        .expect("response header");
    assert_eq!(header.correlation_id, 7);
    let response = Resp::decode(&mut frame, version).expect("decode");
    assert!(!frame.has_remaining(), "trailing bytes");
    response
}

/// Sends one request of `api_key` at `version` to 127.0.0.1:`port` on a new connection and
/// decodes the response.
pub fn raw_request<Req, Resp>(
    port: u16,
    api_key: kafka_protocol::messages::ApiKey,
    version: i16,
    request: &Req,
) -> Resp
where
    Req: kafka_protocol::protocol::Encodable,
    Resp: kafka_protocol::protocol::Decodable,
{
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    raw_request_on(&mut s, api_key, version, request)
}

/// Every acknowledgement a producer received: (partition, offset) -> value, and the
/// acknowledgements whose offset was acknowledged again for another value (the earlier record
/// was lost: its offset was given to another).
#[derive(Debug, Default, Clone)]
pub struct AckLog {
    pub by_offset: BTreeMap<(i32, i64), String>,
    pub overwritten: Vec<((i32, i64), String, String)>,
    /// When each acknowledgement arrived, in arrival order.
    pub times: Vec<Instant>,
}

impl AckLog {
    /// Records an acknowledgement.
    pub fn insert(&mut self, key: (i32, i64), value: String) {
        self.times.push(Instant::now());
        if let Some(before) = self.by_offset.insert(key, value.clone()) {
            if before != value {
                self.overwritten.push((key, before, value));
            }
        }
    }

    /// The longest time after `since` without an acknowledgement (until the last one): how
    /// long producers stalled after a fault at `since`.
    pub fn longest_stall_after(&self, since: Instant) -> Duration {
        let mut longest = Duration::ZERO;
        let mut last = since;
        for &t in self.times.iter().filter(|t| **t > since) {
            longest = longest.max(t - last);
            last = t;
        }
        longest
    }

    /// Acknowledgements received.
    pub fn len(&self) -> usize {
        self.by_offset.len() + self.overwritten.len()
    }
}

/// Acknowledged records, shared with a producing task.
pub type Acked = std::sync::Arc<std::sync::Mutex<AckLog>>;

/// Produces with acks=all until `stop`, one record at a time round-robin over `partitions`,
/// recording every acknowledgement; returns the number of failed sends.
pub fn keep_producing(
    bootstrap: String,
    topic: &'static str,
    partitions: i32,
    acked: Acked,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    produce_until(bootstrap, topic, partitions, acked, stop, false, 1)
}

/// Every acknowledged record is in the log at its offset, as a consumer reads it afterwards,
/// and no offset was acknowledged for two records.
pub fn check_acknowledged(bootstrap: &str, topic: &str, partitions: i32, acked: &Acked) {
    let log = acked.lock().expect("lock").clone();
    assert!(
        log.overwritten.is_empty(),
        "{} acknowledged records lost: their offsets were acknowledged again for other records, \
         e.g. (partition, offset, first, second) {:?}",
        log.overwritten.len(),
        &log.overwritten[..log.overwritten.len().min(5)]
    );
    let acked = log.by_offset;
    let consumer = assigned_consumer(bootstrap, topic, partitions);
    let mut read: BTreeMap<(i32, i64), String> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !acked.keys().all(|k| read.contains_key(k)) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let value = String::from_utf8(m.payload().unwrap_or_default().to_vec()).expect("utf8");
            read.insert((m.partition(), m.offset()), value);
        }
    }
    let mut lost = Vec::new();
    for (key, value) in &acked {
        if read.get(key) != Some(value) {
            lost.push((key, value, read.get(key)));
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost or changed, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    for p in 0..partitions {
        let offsets: Vec<i64> = read
            .keys()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order"
        );
    }
}

/// Produces with an idempotent producer (acks=all, up to five requests in flight per
/// connection) until `stop`, in waves of 30 concurrent sends round-robin over `partitions`.
/// Records every acknowledgement; returns the number of failed sends.
pub fn keep_producing_idempotent(
    bootstrap: String,
    topic: &'static str,
    partitions: i32,
    acked: Acked,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    produce_until(bootstrap, topic, partitions, acked, stop, true, 30)
}

/// Produces at acks=all (idempotent or not) until `stop`, in waves of `wave` concurrent sends
/// round-robin over `partitions`; each partition's values carry an increasing sequence
/// ("p<partition>-<n>"). Records every acknowledgement; returns the number of failed sends.
fn produce_until(
    bootstrap: String,
    topic: &'static str,
    partitions: i32,
    acked: Acked,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    idempotent: bool,
    wave: u64,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let p = producer(
            &bootstrap,
            &[
                (
                    "enable.idempotence",
                    if idempotent { "true" } else { "false" },
                ),
                ("acks", "all"),
                (
                    "message.timeout.ms",
                    if idempotent { "120000" } else { "60000" },
                ),
                ("retry.backoff.ms", "100"),
            ],
        );
        let mut failures = 0;
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let sends: Vec<_> = (i..i + wave)
                .map(|n| {
                    let partition = (n % partitions as u64) as i32;
                    let value = format!("p{partition}-{:07}", n / partitions as u64);
                    let p = p.clone();
                    async move {
                        let sent = p
                            .send(
                                FutureRecord::to(topic)
                                    .partition(partition)
                                    .key(&value)
                                    .payload(&value),
                                Duration::from_secs(120),
                            )
                            .await;
                        (value, sent)
                    }
                })
                .collect();
            for (value, sent) in futures::future::join_all(sends).await {
                match sent {
                    Ok(delivery) => {
                        acked
                            .lock()
                            .expect("lock")
                            .insert((delivery.partition, delivery.offset), value);
                    }
                    Err((e, _)) => {
                        failures += 1;
                        eprintln!("produce failed (not acknowledged, so not checked): {e}");
                    }
                }
            }
            i += wave;
        }
        failures
    })
}

/// What a checker found, per partition, reading everything back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExactlyOnce {
    pub acknowledged: usize,
    pub read: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub reordered: usize,
    /// The same counts for each partition.
    pub by_partition: BTreeMap<i32, PartitionCounts>,
}

/// One partition's share of [`ExactlyOnce`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionCounts {
    pub acknowledged: usize,
    pub read: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub reordered: usize,
}

/// [`exactly_once_counts`], panicking with the counts unless lost, duplicated and reordered
/// are all zero.
pub fn check_exactly_once(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    acked: &Acked,
) -> ExactlyOnce {
    let found = exactly_once_counts(bootstrap, topic, partitions, acked);
    assert_eq!(
        (found.lost, found.duplicated, found.reordered),
        (0, 0, 0),
        "{found:?}"
    );
    found
}

/// Reads every partition to its high watermark and compares it with the acknowledgements of
/// [`keep_producing_idempotent`]: acknowledged records missing or not at their offset (lost),
/// values read more than once (duplicated), values out of send order (reordered).
pub fn exactly_once_counts(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    acked: &Acked,
) -> ExactlyOnce {
    let log = acked.lock().expect("lock").clone();
    let consumer = assigned_consumer(bootstrap, topic, partitions);
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        ends.insert(p, high);
    }
    let mut read: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = |read: &BTreeMap<i32, Vec<(i64, String)>>| {
        ends.iter().all(|(p, end)| {
            *end == 0
                || read
                    .get(p)
                    .and_then(|r| r.last())
                    .is_some_and(|(o, _)| o + 1 >= *end)
        })
    };
    while !done(&read) {
        assert!(
            Instant::now() < deadline,
            "could not read every partition to its end"
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let value = String::from_utf8(m.payload().unwrap_or_default().to_vec()).expect("utf8");
            read.entry(m.partition())
                .or_default()
                .push((m.offset(), value));
        }
    }
    let mut by_partition: BTreeMap<i32, PartitionCounts> = (0..partitions)
        .map(|p| (p, PartitionCounts::default()))
        .collect();
    for ((p, _), _, _) in &log.overwritten {
        let counts = by_partition.entry(*p).or_default();
        counts.acknowledged += 1;
        counts.lost += 1;
    }
    let at: BTreeMap<(i32, i64), &String> = read
        .iter()
        .flat_map(|(p, records)| records.iter().map(move |(o, v)| ((*p, *o), v)))
        .collect();
    for (key, value) in &log.by_offset {
        let counts = by_partition.entry(key.0).or_default();
        counts.acknowledged += 1;
        if at.get(key) != Some(&value) {
            counts.lost += 1;
        }
    }
    for (p, records) in &read {
        let counts = by_partition.entry(*p).or_default();
        counts.read = records.len();
        let mut seen = std::collections::BTreeSet::new();
        let mut last = None;
        for (_, value) in records {
            if !seen.insert(value.clone()) {
                counts.duplicated += 1;
            }
            let sequence: Option<u64> = value.rsplit('-').next().and_then(|n| n.parse().ok());
            if sequence.is_some() && last.is_some() && sequence <= last {
                counts.reordered += 1;
            }
            last = last.max(sequence);
        }
    }
    let sum = |f: fn(&PartitionCounts) -> usize| by_partition.values().map(f).sum();
    let found = ExactlyOnce {
        acknowledged: sum(|c| c.acknowledged),
        read: sum(|c| c.read),
        lost: sum(|c| c.lost),
        duplicated: sum(|c| c.duplicated),
        reordered: sum(|c| c.reordered),
        by_partition,
    };
    eprintln!("exactly-once check of {topic}: {found:?}");
    found
}

/// A size-limited tmpfs mounted at a directory (a filesystem that fills: ENOSPC), unmounted
/// on drop. Mounting needs root, which the test machines have.
pub struct TmpfsMount {
    pub path: PathBuf,
}

impl TmpfsMount {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. "2m") at `path`, creating it.
    pub fn new(path: &Path, size: &str) -> TmpfsMount {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (the storage fault tests need root): {status}",
            path.display()
        );
        TmpfsMount {
            path: path.to_path_buf(),
        }
    }

    /// Gives the filesystem a new size, keeping its files (frees space).
    pub fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "remount {}: {status}",
            self.path.display()
        );
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// `records` as uncompressed v2 batches (one when their `offset - sequence` is constant).
pub fn encode_uncompressed(records: &[kafka_protocol::records::Record]) -> bytes::Bytes {
    use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode");
    buf.freeze()
}

/// One uncompressed v2 batch of `records` (key, value), timestamps 1,700,000,000,000 ms,
/// marked as control records and/or transactional (producer id 4, epoch 0) if asked.
pub fn record_batch(
    records: &[(Option<&[u8]>, &[u8])],
    control: bool,
    transactional: bool,
) -> bytes::Bytes {
    use bytes::Bytes;
    use kafka_protocol::records::{Record, TimestampType};
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional,
            control,
            partition_leader_epoch: 0,
            producer_id: if transactional { 4 } else { -1 },
            producer_epoch: if transactional { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_700_000_000_000,
            key: key.map(Bytes::copy_from_slice),
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    encode_uncompressed(&records)
}

/// One uncompressed v2 batch of an idempotent producer: `values` from sequence
/// `base_sequence`, each keyed by its value.
pub fn idempotent_record_batch(
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    values: &[&str],
) -> bytes::Bytes {
    producer_record_batch(producer_id, producer_epoch, base_sequence, values, false)
}

/// [`idempotent_record_batch`], transactional or not.
pub fn producer_record_batch(
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    values: &[&str],
    transactional: bool,
) -> bytes::Bytes {
    use bytes::Bytes;
    use kafka_protocol::records::{Record, TimestampType};
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional,
            control: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: base_sequence + i as i32,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::copy_from_slice(value.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    encode_uncompressed(&records)
}

/// Produce v9 to `topic` of `partitions` (index, records) with `acks`, on a new connection.
pub fn produce_raw(
    port: u16,
    topic: &str,
    partitions: Vec<(i32, bytes::Bytes)>,
    acks: i16,
) -> kafka_protocol::messages::ProduceResponse {
    produce_raw_at(port, topic, partitions, acks, 9)
}

/// Produce at `version` (3 to 12: by topic name) to `topic` of `partitions` (index, records)
/// with `acks`, on a new connection.
pub fn produce_raw_at(
    port: u16,
    topic: &str,
    partitions: Vec<(i32, bytes::Bytes)>,
    acks: i16,
    version: i16,
) -> kafka_protocol::messages::ProduceResponse {
    let request = produce_request(topic, partitions, acks);
    raw_request(
        port,
        kafka_protocol::messages::ApiKey::Produce,
        version,
        &request,
    )
}

/// A Produce request (by topic name) of `partitions` (index, records) with `acks`.
pub fn produce_request(
    topic: &str,
    partitions: Vec<(i32, bytes::Bytes)>,
    acks: i16,
) -> kafka_protocol::messages::ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(
                partitions
                    .into_iter()
                    .map(|(index, records)| {
                        PartitionProduceData::default()
                            .with_index(index)
                            .with_records(Some(records))
                    })
                    .collect(),
            )])
}
