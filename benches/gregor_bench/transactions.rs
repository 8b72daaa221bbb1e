//! Phase 8, transactions: librdkafka transactional producers writing transactions of 100 and
//! of 1,000 records of 100 B, or of `--transaction-record-bytes` (begin, send, `commit_transaction`, which flushes) against an
//! idempotent producer at acks=all in the same run, alternating, on the same topic; and one
//! consumer reading what they wrote at read_committed against read_uncommitted. Issue 14's
//! targets: transactions of 100 records ≥ 0.5× and of 1,000 records ≥ 0.8× the idempotent
//! throughput; read_committed ≥ 0.9× read_uncommitted.
//!
//! The transactional runs are made twice: with one producer, whose transactions run one after
//! another (a transaction is a few round trips, so one producer is bound by latency, not by the
//! broker), and with [`CONCURRENT_PRODUCERS`] producers at once, each with its own
//! transactional id and share of the records, as a stream processor runs one per task.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::{
    client_config, create_topics_with, produce_phase_with, self_cpu, send_blocking, BenchResult,
    Deliveries, ProduceRun, Server, PARTITIONS, PRODUCE_SEND_BOUND,
};

/// The phase's topic.
pub(super) const TOPIC_TRANSACTIONS: &str = "bench-transactions";
/// Record size unless `--transaction-record-bytes` says otherwise.
pub(super) const DEFAULT_VALUE_BYTES: usize = 100;
/// Transaction sizes measured.
pub(super) const TRANSACTION_SIZES: [u64; 2] = [100, 1000];
/// Issue 14's targets, by transaction size, as a fraction of the idempotent throughput.
pub(super) const TARGETS: [f64; 2] = [0.5, 0.8];
/// Producers of the concurrent transactional runs.
pub(super) const CONCURRENT_PRODUCERS: usize = 8;
/// Issue 14's target for read_committed against read_uncommitted consumption.
pub(super) const READ_COMMITTED_TARGET: f64 = 0.9;

fn median(mut values: Vec<f64>) -> f64 {
    super::median(&mut values)
}

/// The phase's runs.
#[derive(Debug, Default)]
pub(super) struct TransactionRuns {
    /// Record size.
    pub(super) value_bytes: usize,
    pub(super) idempotent: Vec<ProduceRun>,
    /// One producer, by transaction size, in the order of [`TRANSACTION_SIZES`].
    pub(super) transactional: [Vec<ProduceRun>; 2],
    /// [`CONCURRENT_PRODUCERS`] producers, by transaction size.
    pub(super) concurrent: [Vec<ProduceRun>; 2],
    /// Records per second read at read_uncommitted and at read_committed.
    pub(super) read_uncommitted: Vec<f64>,
    pub(super) read_committed: Vec<f64>,
}

impl TransactionRuns {
    /// Median records/s of runs.
    fn median_rate(runs: &[ProduceRun]) -> f64 {
        median(runs.iter().map(ProduceRun::records_per_second).collect())
    }

    /// The median transactional throughput of size index `i` (one producer, or
    /// [`CONCURRENT_PRODUCERS`]) over the median idempotent one.
    pub(super) fn ratio(&self, i: usize, concurrent: bool) -> f64 {
        Self::median_rate(self.runs(i, concurrent)) / Self::median_rate(&self.idempotent)
    }

    fn runs(&self, i: usize, concurrent: bool) -> &[ProduceRun] {
        if concurrent {
            &self.concurrent[i]
        } else {
            &self.transactional[i]
        }
    }

    /// Median read_committed over median read_uncommitted.
    pub(super) fn read_ratio(&self) -> f64 {
        median(self.read_committed.clone()) / median(self.read_uncommitted.clone())
    }

    /// The report's lines.
    pub(super) fn lines(&self) -> Vec<String> {
        if self.idempotent.is_empty() {
            return Vec::new();
        }
        let rates = |runs: &[ProduceRun]| {
            runs.iter()
                .map(|r| format!("{:.0}", r.records_per_second()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut lines = vec![
            format!("\ntransactions against the idempotent producer, {} B records, acks=all, same topic, alternating (idempotent linger.ms=5; transactional linger.ms=0, as librdkafka's commit flush):", self.value_bytes),
            format!(
                "  idempotent, one producer: {} rec/s (runs: {}; broker {:.3} µs/rec, client {:.3} µs/rec)",
                Self::median_rate(&self.idempotent).round(),
                rates(&self.idempotent),
                median(self.idempotent.iter().map(ProduceRun::server_cpu_per_record_us).collect()),
                median(self.idempotent.iter().map(ProduceRun::client_cpu_per_record_us).collect()),
            ),
        ];
        for concurrent in [false, true] {
            for (i, size) in TRANSACTION_SIZES.iter().enumerate() {
                let runs = self.runs(i, concurrent);
                if runs.is_empty() {
                    continue;
                }
                lines.push(format!(
                    "  transactions of {size}, {} producer(s): {} rec/s, {:.0} transactions/s, {:.1}% of idempotent (target ≥ {:.0}%; runs: {}; broker {:.3} µs/rec, clients {:.3} µs/rec)",
                    if concurrent { CONCURRENT_PRODUCERS } else { 1 },
                    Self::median_rate(runs).round(),
                    Self::median_rate(runs) / *size as f64,
                    self.ratio(i, concurrent) * 100.0,
                    TARGETS[i] * 100.0,
                    rates(runs),
                    median(runs.iter().map(ProduceRun::server_cpu_per_record_us).collect()),
                    median(runs.iter().map(ProduceRun::client_cpu_per_record_us).collect()),
                ));
            }
        }
        if !self.read_committed.is_empty() {
            lines.push(format!(
                "  consume: read_committed {:.0} rec/s, read_uncommitted {:.0} rec/s: {:.1}% (target ≥ {:.0}%)",
                median(self.read_committed.clone()),
                median(self.read_uncommitted.clone()),
                self.read_ratio() * 100.0,
                READ_COMMITTED_TARGET * 100.0,
            ));
        }
        lines
    }
}

/// Creates the phase's topic.
pub(super) fn create(server: &Server) -> BenchResult<()> {
    create_topics_with(server, &[TOPIC_TRANSACTIONS], PARTITIONS)
}

/// `rounds` rounds of: the idempotent producer, then transactions of each size (the order of
/// the three alternates by round), `count` records each; then the topic read back at both
/// isolation levels.
pub(super) fn run(
    server: &Server,
    rounds: usize,
    count: u64,
    value_bytes: usize,
) -> BenchResult<TransactionRuns> {
    let mut runs = TransactionRuns {
        value_bytes,
        ..TransactionRuns::default()
    };
    for round in 1..=rounds {
        // None: idempotent; Some((size index, producers)).
        let mut order: Vec<Option<(usize, usize)>> = vec![
            None,
            Some((0, 1)),
            Some((1, 1)),
            Some((0, CONCURRENT_PRODUCERS)),
            Some((1, CONCURRENT_PRODUCERS)),
        ];
        if round % 2 == 0 {
            order.reverse();
        }
        for which in order {
            super::write_back_page_cache();
            let run = match which {
                None => {
                    produce_phase_with(server, TOPIC_TRANSACTIONS, value_bytes, count, "all", true)?
                }
                Some((i, producers)) => transactional(
                    server,
                    count,
                    TRANSACTION_SIZES[i],
                    round,
                    producers,
                    value_bytes,
                )?,
            };
            eprintln!(
                "round {round}: {:<36} {:>10.0} rec/s server {:.3} µs/rec",
                match which {
                    None => "idempotent".to_string(),
                    Some((i, producers)) => {
                        format!(
                            "transactions of {}, {producers} producer(s)",
                            TRANSACTION_SIZES[i]
                        )
                    }
                },
                run.records_per_second(),
                run.server_cpu_per_record_us(),
            );
            match which {
                None => runs.idempotent.push(run),
                Some((i, 1)) => runs.transactional[i].push(run),
                Some((i, _)) => runs.concurrent[i].push(run),
            }
        }
    }
    for round in 1..=rounds {
        for committed in [round % 2 == 0, round % 2 != 0] {
            let rate = consume(server, committed)?;
            eprintln!(
                "round {round}: consume {:<16} {rate:>10.0} rec/s",
                if committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                }
            );
            if committed {
                runs.read_committed.push(rate);
            } else {
                runs.read_uncommitted.push(rate);
            }
        }
    }
    Ok(runs)
}

/// `count` records in transactions of `size`, round-robin over the partitions, from
/// `producers` producers at once (each its own transactional id and thread, `count /
/// producers` records each). The clock runs from the first begin to the last commit;
/// `init_transactions` and one warm-up transaction per producer come before it.
fn transactional(
    server: &Server,
    count: u64,
    size: u64,
    round: usize,
    producers: usize,
    value_bytes: usize,
) -> BenchResult<ProduceRun> {
    let share = count / producers as u64;
    let ready = std::sync::Barrier::new(producers + 1);
    let server_cpu = std::sync::Mutex::new(None);
    let outcomes: Vec<BenchResult<(u64, u64, bool)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..producers)
            .map(|p| {
                let ready = &ready;
                scope.spawn(move || {
                    let id = format!("bench-tx-{size}-{round}-{producers}-{p}");
                    let prepared = one_producer(server, &id);
                    ready.wait();
                    let producer = prepared?;
                    run_transactions(&producer, share, size, value_bytes)
                })
            })
            .collect();
        ready.wait();
        if let Ok(mut cpu) = server_cpu.lock() {
            *cpu = Some((server.cpu(), self_cpu(), Instant::now()));
        }
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("producer thread panicked".into()))
            })
            .collect()
    });
    let (server_start, client_start, start) = server_cpu
        .into_inner()
        .ok()
        .flatten()
        .ok_or("no start time")?;
    let elapsed = start.elapsed();
    let mut run = ProduceRun {
        delivered: 0,
        failed: 0,
        elapsed,
        value_bytes,
        server_cpu: server.cpu().since(server_start),
        client_cpu: self_cpu().since(client_start),
        stopped_early: false,
        load: Default::default(),
    };
    for outcome in outcomes {
        let (delivered, failed, stopped_early) = outcome?;
        run.delivered += delivered;
        run.failed += failed;
        run.stopped_early |= stopped_early;
    }
    Ok(run)
}

/// A transactional producer with `id`, initialised, with one warm-up transaction (one record
/// per partition) behind it.
fn one_producer(server: &Server, id: &str) -> BenchResult<BaseProducer<Deliveries>> {
    let producer: BaseProducer<Deliveries> = client_config(&server.bootstrap)
        .set("transactional.id", id)
        // librdkafka's own commit (`rd_kafka_commit_transaction`, what confluent-kafka calls)
        // flushes with linger.ms waived, so a transaction's last batches go at once; this
        // bench drains them itself before committing (see `transaction`), so it waives linger
        // the only way left to it.
        .set("linger.ms", "0")
        .set("batch.size", "1000000")
        .set("compression.type", "none")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Deliveries::default())
        .map_err(|e| format!("transactional producer: {e}"))?;
    producer
        .init_transactions(TIMEOUT)
        .map_err(|e| format!("init_transactions: {e}"))?;
    transaction(&producer, 0, PARTITIONS as u64, DEFAULT_VALUE_BYTES)?;
    producer.context().delivered.store(0, Ordering::Relaxed);
    Ok(producer)
}

/// How long one transaction step may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One transaction of `records` records of `value_bytes` from record number `first`.
fn transaction(
    producer: &BaseProducer<Deliveries>,
    first: u64,
    records: u64,
    value_bytes: usize,
) -> BenchResult<()> {
    let value: Vec<u8> = (0..value_bytes).map(|i| (i % 251) as u8).collect();
    producer
        .begin_transaction()
        .map_err(|e| format!("begin_transaction: {e}"))?;
    for i in first..first + records {
        send_blocking(
            producer,
            TOPIC_TRANSACTIONS,
            (i % PARTITIONS as u64) as i32,
            &value,
        )?;
    }
    // rdkafka's `commit_transaction` flushes first, and its flush polls in steps of up to
    // 100 ms, which would make every transaction last 100 ms: the delivery reports are served
    // here as they come, so that flush finds nothing left. rdkafka 0.39's `poll(t)` serves
    // events until `t` has passed (spinning on the clock for a t of 1 ms: 40% of the bench's
    // CPU in a profile), so it is called with no timeout and the thread naps between calls.
    let drained = Instant::now();
    while producer.in_flight_count() > 0 && drained.elapsed() < TIMEOUT {
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() > 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    producer
        .commit_transaction(TIMEOUT)
        .map_err(|e| format!("commit_transaction: {e}"))
}

/// `count` records of `value_bytes` in transactions of `size`; (delivered, failed, stopped
/// early).
fn run_transactions(
    producer: &BaseProducer<Deliveries>,
    count: u64,
    size: u64,
    value_bytes: usize,
) -> BenchResult<(u64, u64, bool)> {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut stopped_early = false;
    while sent < count {
        if start.elapsed() > PRODUCE_SEND_BOUND {
            stopped_early = true;
            break;
        }
        let records = size.min(count - sent);
        transaction(producer, sent, records, value_bytes)?;
        sent += records;
    }
    let context = producer.context();
    Ok((
        context.delivered.load(Ordering::Relaxed),
        context.failed.load(Ordering::Relaxed),
        stopped_early,
    ))
}

/// Reads the whole topic from the beginning at one isolation level; records/s.
fn consume(server: &Server, read_committed: bool) -> BenchResult<f64> {
    let consumer: BaseConsumer = client_config(&server.bootstrap)
        .set("group.id", "bench-transactions-reader")
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .set("fetch.wait.max.ms", "10")
        .set("queued.min.messages", "1000000")
        .set("fetch.queue.backoff.ms", "0")
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    let mut tpl = TopicPartitionList::new();
    let mut end = 0i64;
    for partition in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(TOPIC_TRANSACTIONS, partition, Duration::from_secs(10))
            .map_err(|e| format!("watermarks: {e}"))?;
        end += high;
        tpl.add_partition_offset(TOPIC_TRANSACTIONS, partition, Offset::Beginning)
            .map_err(|e| format!("assign: {e}"))?;
    }
    consumer.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
    // Every record of the topic is committed (aborted ones there are none), so both levels
    // read the same records; markers take offsets but are not delivered.
    let start = Instant::now();
    let mut records = 0u64;
    let mut idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(2) && start.elapsed() < Duration::from_secs(120) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                records += 1;
                idle = Instant::now();
                let _ = m.offset();
            }
            Some(Err(e)) => return Err(format!("consume: {e}")),
            None => {}
        }
    }
    let elapsed = start.elapsed().saturating_sub(idle.elapsed());
    if records == 0 || records as i64 > end {
        return Err(format!("read {records} records of at most {end}"));
    }
    Ok(records as f64 / elapsed.as_secs_f64().max(1e-9))
}
