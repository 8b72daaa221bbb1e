//! gregor's throughput, latency and cost benchmark, with a no-op ceiling.
//!
//! `cargo bench --bench gregor_bench [-- --quick] [-- --markdown]` runs, in one process
//! (`-- --help` lists the options; docs/BENCHMARKS.md has results and how to read them):
//!
//! 1. Producer throughput (records/s, MB/s of record values) for 100 B and 1 KiB records at
//!    acks=1 (`--acks all` to change), one librdkafka producer, linger.ms=5, batch.size=1000000, no compression, a topic
//!    of [`PARTITIONS`] partitions; against gregor and against the no-op ceiling, interleaved
//!    (which server goes first alternates by round), over several rounds; medians reported.
//! 2. Consumer throughput: one librdkafka consumer, partitions assigned (no group), reading
//!    back everything phase 1 wrote to gregor.
//! 3. End-to-end latency at a fixed 2,000 records/s of 100 B for ~10 s: the producer
//!    (linger.ms=0) stamps the send time into the payload, the consumer (fetch.wait.max.ms=1,
//!    `--fetch-wait-ms` to change) records receive − send in an HDR histogram; the producer's
//!    delivery reports give the Produce round trip alone (send → ack) for comparison.
//! 4. Broker cost: gregor runs as a child process (`target/release/gregor dev`, which cargo
//!    builds for this bench; `GREGOR_BENCH_BROKER=/path/to/gregor` measures another build) on a
//!    fresh temp data dir. Its CPU time (utime + stime of `/proc/<pid>/stat`, in clock ticks of
//!    `getconf CLK_TCK`) is read before and after every phase, and its peak RSS (`VmHWM`) at the
//!    end. A paced phase (2,000 records/s, linger.ms=0, so one Produce request per record)
//!    gives the cost per small request, against the no-op server too.
//! 5. The ceiling: the same producer phases against a no-op Kafka server built on gregor's own
//!    codec (`noop` below). It runs as a child process too (this binary with `--noop-server`),
//!    so its CPU is measured the same way. It answers ApiVersions, Metadata and Produce and
//!    stores nothing: what is left is the cost of the client, the sockets and the codec.
//! 6. The cluster against one broker (`--brokers 3 --acks all --versus-one-broker`): a second
//!    gregor, one broker at acks=1, runs alongside and its producer rounds are interleaved with
//!    the cluster's, so each round's pair saw the same machine state; the report gives the
//!    ratio of the medians and of each pair (issue 4's target is at least 50%).
//!    `--warm-memory SIZE` writes and frees SIZE of memory before every producer run, for VMs
//!    that charge for first touches of memory they took back (docs/BENCHMARKS.md).
//! 7. The idempotent producer (`idempotence`): idempotent against plain produce at acks=all
//!    in the same run, and the memory cost of 1,000 producers' state in 100 partitions.
//! 8. Transactions (`transactions`): transactions of 100 and 1,000 records against the
//!    idempotent producer in the same run, and read_committed against read_uncommitted.
//!
//! Client and servers share the machine's cores, so every figure includes that contention. The
//! report names the machine, the date and the load average, and, per phase, how many cores
//! other processes kept busy (from `/proc/stat`) and how many kernel threads did (page-cache
//! writeback, which is the broker's cost but not charged to its process): a phase with other
//! load is not a clean measurement. Every phase has a time bound, so a slow broker makes a slow
//! report, not a hung bench.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[path = "gregor_bench/idempotence.rs"]
mod idempotence;
#[path = "gregor_bench/transactions.rs"]
mod transactions;

/// Partitions of every bench topic.
const PARTITIONS: i32 = 8;
/// Longest a producer phase may send before it stops early (then it still drains).
const PRODUCE_SEND_BOUND: Duration = Duration::from_secs(40);
/// Longest a producer phase waits for outstanding deliveries after its last send.
const PRODUCE_DRAIN_BOUND: Duration = Duration::from_secs(20);
/// Longest the consumer phase of one topic may run.
const CONSUME_BOUND: Duration = Duration::from_secs(40);
/// Fixed rate of the latency phase.
const LATENCY_RATE_PER_SECOND: u64 = 2_000;
/// Records sent before the latency phase starts recording (connections, metadata, first
/// fetches).
const LATENCY_WARMUP: Duration = Duration::from_secs(1);
/// Record value size of the latency phase.
const LATENCY_RECORD_BYTES: usize = 100;
/// Bytes of the latency payload that carry the send time and the sequence number.
const LATENCY_STAMP_BYTES: usize = 16;

const TOPIC_SMALL: &str = "bench-100b";
const TOPIC_LARGE: &str = "bench-1k";
const TOPIC_LATENCY: &str = "bench-latency";
const TOPIC_PACED: &str = "bench-paced";

// Targets the issue sets.
const TARGET_CEILING_RATIO: f64 = 0.90;
const TARGET_CPU_PER_SMALL_RECORD_US: f64 = 1.0;
const TARGET_P99_US: u64 = 2_000;
const TARGET_PEAK_RSS_MB: f64 = 100.0;
/// Issue 4: RF=3 acks=all produce throughput against one broker at acks=1.
const TARGET_VERSUS_ONE_BROKER_RATIO: f64 = 0.50;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--noop-server") {
        noop::serve_from_args(&args[1..]);
        return;
    }
    let options = match Options::parse(&args) {
        Ok(options) => options,
        Err(message) if message == "help" => {
            println!("{USAGE}");
            return;
        }
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(error) = run(&options) {
        eprintln!("gregor_bench failed: {error}");
        std::process::exit(1);
    }
}

const USAGE: &str = "usage: cargo bench --bench gregor_bench -- [--quick] [--markdown] \
[--rounds N] [--latency-seconds S] [--paced-seconds S] [--fetch-wait-ms N] [--no-ceiling] [--phases LIST] [--brokers N] [--acks A] [--versus-one-broker] [--warm-memory SIZE] [--transaction-record-bytes N]
  --quick            smaller counts, one round, 3 s latency phase (a smoke run)
  --markdown         also print the results as markdown (for docs/BENCHMARKS.md)
  --rounds N         producer rounds per size and server; the median is reported (default 3)
  --latency-seconds  recorded seconds of the latency phase (default 10)
  --paced-seconds    seconds of each paced (per-request cost) phase (default 3)
  --fetch-wait-ms N  fetch.wait.max.ms of the latency consumer (default 1)
  --no-ceiling       skip the no-op server
  --phases LIST      comma-separated subset of produce,consume,paced,latency,groups,idempotent,transactions
                     (default all; consume reads what produce wrote)
  --brokers N        run gregor as an N-broker cluster (one process, gregor dev --brokers N)
                     with default.replication.factor=N (default 1)
  --acks A           the producers' acks: 1 or all (default 1)
  --versus-one-broker
                     with --brokers N > 1: also run a one-broker gregor at acks=1 and interleave
                     its producer rounds with the cluster's (the issue's RF=3 target compares
                     the two; paired rounds see the same machine state)
  --warm-memory SIZE
                     before every producer run, touch and free SIZE (e.g. 4G) of memory, so the
                     run's page cache starts in memory the machine has backed (see
                     docs/BENCHMARKS.md: a VM that gives freed memory back to its host);
                     only with --phases produce and/or idempotent
  --transaction-record-bytes N
                     record size of the transactions phase, both its idempotent baseline and
                     its transactions (default 100)";

#[derive(Debug, Clone)]
struct Options {
    small_records: u64,
    large_records: u64,
    rounds: usize,
    latency: Duration,
    paced: Duration,
    phases: Vec<Phase>,
    fetch_wait_ms: u64,
    ceiling: bool,
    markdown: bool,
    quick: bool,
    versus_one_broker: bool,
    /// `--warm-memory`, in bytes.
    warm_memory: Option<u64>,
    /// `--transaction-record-bytes`: the transactions phase's record size.
    transaction_record_bytes: usize,
}

/// `--brokers` and `--acks`, read where servers and producers are made.
static BROKERS: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
static ACKS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn brokers() -> u16 {
    BROKERS.get().copied().unwrap_or(1)
}

/// Server names in the report.
const GREGOR: &str = "gregor";
const ONE_BROKER: &str = "gregor-1";
const NOOP: &str = "no-op";

fn acks_setting() -> &'static str {
    ACKS.get().map_or("1", String::as_str)
}

impl Options {
    fn runs(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }

    fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            small_records: 2_000_000,
            large_records: 500_000,
            // Three rounds write about 2.1 GB. More rounds grow the page cache into memory this
            // kind of VM has not backed yet, where every first touch costs ~10x (see
            // docs/BENCHMARKS.md), which penalizes gregor's writes and not the no-op server.
            rounds: 3,
            latency: Duration::from_secs(10),
            paced: Duration::from_secs(3),
            fetch_wait_ms: 1,
            phases: Phase::ALL.to_vec(),
            ceiling: true,
            markdown: false,
            quick: false,
            versus_one_broker: false,
            warm_memory: None,
            transaction_record_bytes: transactions::DEFAULT_VALUE_BYTES,
        };
        let mut rounds = None;
        let mut latency_seconds = None;
        let mut paced_seconds = None;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            match arg.as_str() {
                // cargo bench passes --bench to harness-less benches.
                "--bench" => {}
                "--quick" => options.quick = true,
                "--markdown" => options.markdown = true,
                "--no-ceiling" => options.ceiling = false,
                "--versus-one-broker" => options.versus_one_broker = true,
                "--warm-memory" => {
                    let value = iter.next().ok_or("--warm-memory needs a size")?;
                    options.warm_memory = Some(parse_size(value)?);
                }
                "--phases" => {
                    let list = iter.next().ok_or("--phases needs a list")?;
                    options.phases = list
                        .split(',')
                        .map(Phase::parse)
                        .collect::<Result<_, _>>()?;
                }
                "--fetch-wait-ms" => {
                    options.fetch_wait_ms = parse_number(iter.next(), "--fetch-wait-ms")?
                }
                "--rounds" => rounds = Some(parse_number(iter.next(), "--rounds")?),
                "--transaction-record-bytes" => {
                    options.transaction_record_bytes =
                        parse_number(iter.next(), "--transaction-record-bytes")? as usize
                }
                "--paced-seconds" => {
                    paced_seconds = Some(parse_number(iter.next(), "--paced-seconds")?)
                }
                "--latency-seconds" => {
                    latency_seconds = Some(parse_number(iter.next(), "--latency-seconds")?)
                }
                "--brokers" => {
                    let n = parse_number(iter.next(), "--brokers")?;
                    let n = u16::try_from(n.clamp(1, 9)).unwrap_or(1);
                    let _ = BROKERS.set(n);
                }
                "--acks" => {
                    let value = iter.next().ok_or("--acks needs 1 or all")?;
                    if value != "1" && value != "all" {
                        return Err("--acks needs 1 or all".to_string());
                    }
                    let _ = ACKS.set(value.clone());
                }
                "-h" | "--help" => return Err("help".to_string()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if options.quick {
            options.small_records = 200_000;
            options.large_records = 50_000;
            options.rounds = 1;
            options.paced = Duration::from_secs(1);
            options.latency = Duration::from_secs(3);
        }
        if options.warm_memory.is_some()
            && [Phase::Latency, Phase::Paced, Phase::Groups]
                .iter()
                .any(|phase| options.runs(*phase))
        {
            // Measured: p99.9 20–35 ms instead of 3–6 ms, the VM taking the freed memory back.
            return Err(
                "--warm-memory stalls the latency, paced and groups phases that follow it (the \
                        VM takes the freed memory back meanwhile): use it with --phases produce \
                        and measure latency in a run of its own"
                    .to_string(),
            );
        }
        if options.versus_one_broker && brokers() < 2 {
            return Err("--versus-one-broker needs --brokers N with N > 1".to_string());
        }
        if let Some(rounds) = rounds {
            options.rounds = usize::try_from(rounds.max(1)).unwrap_or(1);
        }
        if let Some(seconds) = paced_seconds {
            options.paced = Duration::from_secs(seconds.max(1));
        }
        if let Some(seconds) = latency_seconds {
            options.latency = Duration::from_secs(seconds.max(1));
        }
        Ok(options)
    }
}

/// The phases, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Produce,
    Consume,
    Paced,
    Latency,
    Groups,
    Idempotent,
    Transactions,
}

impl Phase {
    const ALL: [Phase; 7] = [
        Phase::Produce,
        Phase::Consume,
        Phase::Paced,
        Phase::Latency,
        Phase::Groups,
        Phase::Idempotent,
        Phase::Transactions,
    ];

    fn parse(name: &str) -> Result<Phase, String> {
        match name {
            "produce" => Ok(Phase::Produce),
            "consume" => Ok(Phase::Consume),
            "paced" => Ok(Phase::Paced),
            "latency" => Ok(Phase::Latency),
            "groups" => Ok(Phase::Groups),
            "idempotent" => Ok(Phase::Idempotent),
            "transactions" => Ok(Phase::Transactions),
            other => Err(format!("unknown phase {other:?}")),
        }
    }
}

/// `1073741824`, `1024M`, `1G`: bytes, with an optional K, M or G (binary) suffix.
fn parse_size(value: &str) -> Result<u64, String> {
    let (digits, unit) = match value.char_indices().last() {
        Some((i, 'K' | 'k')) => (&value[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&value[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&value[..i], 1 << 30),
        _ => (value, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{value:?} is not a size like 1G"))
}

fn parse_number(value: Option<&String>, flag: &str) -> Result<u64, String> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{flag} needs a number"))
}

type BenchResult<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// One producer phase against one server.
#[derive(Debug, Clone)]
struct ProduceRun {
    delivered: u64,
    failed: u64,
    elapsed: Duration,
    value_bytes: usize,
    server_cpu: Cpu,
    client_cpu: Cpu,
    stopped_early: bool,
    load: Load,
}

impl ProduceRun {
    fn records_per_second(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }
    fn megabytes_per_second(&self) -> f64 {
        self.records_per_second() * self.value_bytes as f64 / 1e6
    }
    fn server_cpu_per_record_us(&self) -> f64 {
        per_record_us(self.server_cpu, self.delivered)
    }
    fn client_cpu_per_record_us(&self) -> f64 {
        per_record_us(self.client_cpu, self.delivered)
    }
}

#[derive(Debug, Clone)]
struct ConsumeRun {
    topic: &'static str,
    value_bytes: usize,
    records: u64,
    expected: u64,
    elapsed: Duration,
    server_cpu: Cpu,
    client_cpu: Cpu,
    load: Load,
}

#[derive(Debug, Clone)]
struct PacedRun {
    server: &'static str,
    sent: u64,
    late_sends: u64,
    elapsed: Duration,
    server_cpu: Cpu,
    client_cpu: Cpu,
    load: Load,
}

#[derive(Debug)]
struct LatencyRun {
    histogram: Histogram<u64>,
    /// Send → delivery report (the Produce round trip, at the configured acks).
    acks: Histogram<u64>,
    sent: u64,
    received_total: u64,
    late_sends: u64,
    elapsed: Duration,
    server_cpu: Cpu,
    load: Load,
}

struct Report {
    machine: Machine,
    broker_binary: String,
    source: String,
    load_after: String,
    date: String,
    options: Options,
    produce: Vec<(usize, &'static str, Vec<ProduceRun>)>,
    consume: Vec<ConsumeRun>,
    paced: Vec<PacedRun>,
    latency: Option<LatencyRun>,
    groups: Option<GroupsRun>,
    idempotence: Vec<idempotence::IdempotenceRuns>,
    producer_state: Option<idempotence::StateCost>,
    transactions: Option<transactions::TransactionRuns>,
    gregor_peak_rss_kb: Option<u64>,
    one_broker_peak_rss_kb: Option<u64>,
    noop_peak_rss_kb: Option<u64>,
    wall: Duration,
}

fn run(options: &Options) -> BenchResult<()> {
    let wall = Instant::now();
    let machine = Machine::describe();
    let clock_ticks = clock_ticks_per_second();
    eprintln!(
        "machine: {} cores, {}, Linux {}; load average {}",
        machine.cores, machine.cpu_model, machine.kernel, machine.load_before
    );

    let gregor = Server::start_gregor(clock_ticks, GREGOR, brokers(), acks_setting())?;
    let one_broker = if options.versus_one_broker {
        Some(Server::start_gregor(clock_ticks, ONE_BROKER, 1, "1")?)
    } else {
        None
    };
    let noop = if options.ceiling {
        Some(Server::start_noop(clock_ticks)?)
    } else {
        None
    };
    let mut servers: Vec<&Server> = vec![&gregor];
    servers.extend(one_broker.as_ref());
    servers.extend(noop.as_ref());
    for server in servers.iter().filter(|s| s.replication > 0) {
        create_topics(
            server,
            &[TOPIC_SMALL, TOPIC_LARGE, TOPIC_LATENCY, TOPIC_PACED],
        )?;
    }

    // 1 and 5: producers, interleaved per round so load changes hit both servers alike.
    let sizes: [(usize, u64, &'static str); 2] = [
        (100, options.small_records, TOPIC_SMALL),
        (1024, options.large_records, TOPIC_LARGE),
    ];
    let mut produce: Vec<(usize, &'static str, Vec<ProduceRun>)> = Vec::new();
    for &(size, _, _) in &sizes {
        for server in &servers {
            produce.push((size, server.name, Vec::new()));
        }
    }
    let rounds = if options.runs(Phase::Produce) {
        options.rounds
    } else {
        0
    };
    for round in 1..=rounds {
        for &(size, count, topic) in &sizes {
            // Alternate which server goes first, so drifts in the machine's state (page cache,
            // other load) do not always favour the same one.
            let mut order: Vec<&Server> = servers.clone();
            if round % 2 == 0 {
                order.reverse();
            }
            for server in order {
                let synced = write_back_page_cache();
                if let Some(bytes) = options.warm_memory {
                    warm_memory(bytes);
                }
                let meter = Meter::start(&servers);
                let mut result = produce_phase(server, topic, size, count)?;
                result.load = meter.load(&servers);
                eprintln!(
                    "round {round}: produce {size:>4} B -> {:<6} {:>10.0} rec/s {:>7.1} MB/s \
                     server {:.3} µs/rec client {:.3} µs/rec, load: kernel threads {:.2} other {:.2} cores, \
                     sync before {:.2} s{}",
                    server.name,
                    result.records_per_second(),
                    result.megabytes_per_second(),
                    result.server_cpu_per_record_us(),
                    result.client_cpu_per_record_us(),
                    result.load.kernel,
                    result.load.other,
                    synced.as_secs_f64(),
                    if result.stopped_early {
                        " (stopped at the time bound)"
                    } else {
                        ""
                    },
                );
                if let Some(entry) = produce
                    .iter_mut()
                    .find(|(s, name, _)| *s == size && *name == server.name)
                {
                    entry.2.push(result);
                }
            }
        }
    }

    // 2: read back everything written to gregor.
    let mut consume = Vec::new();
    for &(size, _, topic) in sizes.iter().filter(|_| options.runs(Phase::Consume)) {
        let meter = Meter::start(&servers);
        let mut result = consume_phase(&gregor, topic, size)?;
        result.load = meter.load(&servers);
        eprintln!(
            "consume {size:>4} B: {} of {} records in {:.2} s",
            result.records,
            result.expected,
            result.elapsed.as_secs_f64()
        );
        consume.push(result);
    }

    // 4 and 5 for small requests: broker CPU per request at a low, fixed rate.
    let mut paced = Vec::new();
    for server in servers.iter().filter(|_| options.runs(Phase::Paced)) {
        write_back_page_cache();
        let meter = Meter::start(&servers);
        let mut result = paced_produce_phase(server, options.paced)?;
        result.load = meter.load(&servers);
        eprintln!(
            "paced produce -> {:<6} {} records in {:.2} s ({} sends >1 ms late), server {:.2} µs/rec",
            server.name,
            result.sent,
            result.elapsed.as_secs_f64(),
            result.late_sends,
            per_record_us(result.server_cpu, result.sent)
        );
        paced.push(result);
    }

    // 3: latency at a fixed rate.
    let latency = if options.runs(Phase::Latency) {
        // So it does not measure the writeback of what the throughput phases wrote.
        write_back_page_cache();
        let meter = Meter::start(&servers);
        let mut result = latency_phase(&gregor, options.latency, options.fetch_wait_ms)?;
        result.load = meter.load(&servers);
        eprintln!(
            "latency: {} samples, p99 {} µs",
            result.histogram.len(),
            result.histogram.value_at_quantile(0.99)
        );
        Some(result)
    } else {
        None
    };

    // 6: consumer groups: join -> Stable, and offset commits.
    let groups = if options.runs(Phase::Groups) {
        let result = groups_phase(&gregor, options.quick)?;
        eprintln!(
            "groups: join p50 {} µs, 10 members {} ms, {:.0} sync commits/s",
            result.join.value_at_quantile(0.5),
            result.ten_members.as_millis(),
            result.commits_per_second()
        );
        Some(result)
    } else {
        None
    };

    // 7: the idempotent producer.
    let (idempotence, producer_state) = if options.runs(Phase::Idempotent) {
        idempotence::create(&gregor)?;
        let sizes: Vec<(usize, u64)> = sizes
            .iter()
            .map(|&(size, count, _)| (size, count))
            .collect();
        let runs = idempotence::throughput(&gregor, options.rounds, &sizes, options.warm_memory)?;
        let cost = idempotence::state_cost(&gregor)?;
        eprintln!(
            "producer state: {} producers x {} partitions in {:.1} s, RSS {} -> {} KiB ({:.0} B per producer per partition)",
            cost.producers,
            cost.partitions,
            cost.elapsed.as_secs_f64(),
            cost.rss_before_kb,
            cost.rss_after_kb,
            cost.bytes_per_entry()
        );
        (runs, Some(cost))
    } else {
        (Vec::new(), None)
    };

    // 8: transactions.
    let transactions = if options.runs(Phase::Transactions) {
        transactions::create(&gregor)?;
        let count = if options.quick { 20_000 } else { 200_000 };
        let runs = transactions::run(
            &gregor,
            options.rounds,
            count,
            options.transaction_record_bytes,
        )?;
        for line in runs.lines() {
            eprintln!("{line}");
        }
        Some(runs)
    } else {
        None
    };

    // 4: peak memory, then a clean stop.
    let gregor_peak_rss_kb = gregor.peak_rss_kb();
    let one_broker_peak_rss_kb = one_broker.as_ref().and_then(Server::peak_rss_kb);
    let noop_peak_rss_kb = noop.as_ref().and_then(Server::peak_rss_kb);
    gregor.stop();
    if let Some(one_broker) = one_broker {
        one_broker.stop();
    }
    if let Some(noop) = noop {
        noop.stop();
    }

    let report = Report {
        machine,
        broker_binary: broker_binary().display().to_string(),
        source: source_version(),
        load_after: load_average(),
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        options: options.clone(),
        produce,
        consume,
        paced,
        latency,
        groups,
        idempotence,
        producer_state,
        transactions,
        gregor_peak_rss_kb,
        one_broker_peak_rss_kb,
        noop_peak_rss_kb,
        wall: wall.elapsed(),
    };
    print!("{}", report.plain());
    if options.markdown {
        print!("\n{}", report.markdown());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Servers under test: child processes, measured through /proc
// ---------------------------------------------------------------------------------------------

struct Server {
    name: &'static str,
    /// The producers' acks against this server.
    acks: &'static str,
    /// Replication factor of its topics; 0 for the no-op server (it has no topics to create).
    replication: i32,
    child: Mutex<Child>,
    pid: u32,
    bootstrap: String,
    clock_ticks: u64,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// gregor as cargo built it for this bench (the bench profile inherits release), `brokers`
    /// of them in one process, every topic replicated to all.
    fn start_gregor(
        clock_ticks: u64,
        name: &'static str,
        brokers: u16,
        acks: &'static str,
    ) -> BenchResult<Server> {
        let binary = broker_binary();
        let dir = tempfile::Builder::new()
            .prefix("gregor-bench-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("broker.log"))
            .map_err(|e| format!("broker log: {e}"))?;
        let mut command = Command::new(&binary);
        command.args([
            "dev",
            "--brokers",
            &brokers.to_string(),
            "--port",
            &port.to_string(),
        ]);
        if brokers > 1 {
            // Consecutive ports from two probed ones: good enough for a bench on a quiet box.
            command
                .args(["--internal-port", &free_port()?.to_string()])
                .env("GREGOR_DEFAULT_REPLICATION_FACTOR", brokers.to_string());
        }
        let child = command
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("GREGOR_NUM_PARTITIONS", PARTITIONS.to_string())
            // The groups phase measures the broker, not Kafka's default 3 s wait for more
            // members before a new group's first rebalance.
            .env("GREGOR_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut server = Server::wrap(name, child, port, clock_ticks, Some(dir));
        server.acks = acks;
        server.replication = i32::from(brokers);
        eprintln!(
            "{name} ({brokers} broker(s), acks={acks}): pid {}, {} ({}), data {}",
            server.pid,
            server.bootstrap,
            binary.display(),
            server
                ._dir
                .as_ref()
                .map_or(Path::new(""), |d| d.path())
                .display()
        );
        server.wait_until_listening()?;
        Ok(server)
    }

    /// This binary in `--noop-server` mode.
    fn start_noop(clock_ticks: u64) -> BenchResult<Server> {
        let binary = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
        let port = free_port()?;
        let child = Command::new(&binary)
            .args(["--noop-server", &port.to_string(), &PARTITIONS.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the no-op server: {e}"))?;
        let mut server = Server::wrap(NOOP, child, port, clock_ticks, None);
        // The ceiling's producers are configured as the ones against gregor.
        server.acks = acks_setting();
        eprintln!("no-op server: pid {}, {}", server.pid, server.bootstrap);
        server.wait_until_listening()?;
        Ok(server)
    }

    fn wrap(
        name: &'static str,
        child: Child,
        port: u16,
        clock_ticks: u64,
        dir: Option<tempfile::TempDir>,
    ) -> Server {
        Server {
            name,
            acks: "1",
            replication: 0,
            pid: child.id(),
            child: Mutex::new(child),
            bootstrap: format!("127.0.0.1:{port}"),
            clock_ticks,
            _dir: dir,
        }
    }

    fn wait_until_listening(&self) -> BenchResult<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect(&self.bootstrap).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.lock_child().try_wait() {
                return Err(format!("{} exited at start: {status}", self.name));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "{} did not listen on {}",
            self.name, self.bootstrap
        ))
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// utime + stime of the whole process (every thread).
    fn cpu(&self) -> Cpu {
        process_cpu(&format!("/proc/{}/stat", self.pid), self.clock_ticks)
    }

    fn peak_rss_kb(&self) -> Option<u64> {
        status_kb(&format!("/proc/{}/status", self.pid), "VmHWM:")
    }

    /// SIGTERM (a clean stop), then SIGKILL if it does not exit within 15 s.
    fn stop(self) {
        let mut child = self.lock_child();
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let mut child = self.lock_child();
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The broker under test: `GREGOR_BENCH_BROKER` if set (to compare two builds), else the
/// `gregor` binary cargo built for this bench (the bench profile inherits release).
fn broker_binary() -> PathBuf {
    std::env::var_os("GREGOR_BENCH_BROKER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_gregor")))
}

/// Which source the default broker binary was built from: the commit, whether `src/` had
/// uncommitted changes, and whether `src/` changed after the binary was built (possible when
/// the bench binary is run directly instead of through `cargo bench`).
fn source_version() -> String {
    if std::env::var_os("GREGOR_BENCH_BROKER").is_some() {
        return "GREGOR_BENCH_BROKER".to_string();
    }
    let dir = env!("CARGO_MANIFEST_DIR");
    let commit = command_output("git", &["-C", dir, "rev-parse", "--short", "HEAD"]);
    if commit.is_empty() {
        return "unknown source".to_string();
    }
    let dirty =
        !command_output("git", &["-C", dir, "status", "--porcelain", "--", "src"]).is_empty();
    let built = std::fs::metadata(broker_binary())
        .and_then(|m| m.modified())
        .ok();
    let stale =
        built.is_some_and(|built| newest_modification(Path::new(dir).join("src")) > Some(built));
    format!(
        "commit {commit}{}{}",
        if dirty {
            " plus uncommitted changes in src/"
        } else {
            ""
        },
        if stale {
            "; src/ changed after this binary was built"
        } else {
            ""
        }
    )
}

/// The latest modification time of any file under `path`.
fn newest_modification(path: PathBuf) -> Option<std::time::SystemTime> {
    let metadata = std::fs::metadata(&path).ok()?;
    if !metadata.is_dir() {
        return metadata.modified().ok();
    }
    std::fs::read_dir(&path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| newest_modification(entry.path()))
        .max()
}

fn free_port() -> BenchResult<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn create_topics(server: &Server, topics: &[&str]) -> BenchResult<()> {
    create_topics_with(server, topics, PARTITIONS)
}

/// [`create_topics`] with `partitions` partitions each.
fn create_topics_with(server: &Server, topics: &[&str], partitions: i32) -> BenchResult<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(&server.bootstrap)
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(server.replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    // A cluster answers as soon as one broker listens; until every broker has registered,
    // asking for a replica on each is INVALID_REPLICATION_FACTOR. Ask again for a while.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut pending = new_topics;
    loop {
        let results = futures::executor::block_on(admin.create_topics(&pending, &options))
            .map_err(|e| format!("create topics: {e}"))?;
        let mut retry = Vec::new();
        for (result, topic) in results.into_iter().zip(pending) {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::InvalidReplicationFactor))
                    if Instant::now() < deadline =>
                {
                    retry.push(topic)
                }
                Err((name, code)) => return Err(format!("create topic {name}: {code}")),
            }
        }
        if retry.is_empty() {
            return Ok(());
        }
        pending = retry;
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

/// `sync(1)`, timed: every producer, paced and latency run starts with no dirty page cache, so
/// none pays for the writeback of an earlier one. (The kernel throttles writers once dirty
/// pages pass half-way between `vm.dirty_background_ratio` and `vm.dirty_ratio`; three copies
/// of every record reach that in the second round of an RF=3 run, one copy never does.)
fn write_back_page_cache() -> Duration {
    let start = Instant::now();
    if let Err(e) = Command::new("sync").status() {
        eprintln!("sync: {e}");
    }
    start.elapsed()
}

/// `--warm-memory`: writes every page of `bytes` of fresh memory, then frees it, so the kernel
/// hands recently backed pages to the next run's page cache. On a VM whose balloon takes freed
/// memory back (free page reporting), a page's first touch after that costs several times a
/// warm one; elsewhere this only costs the time of the writes.
fn warm_memory(bytes: u64) {
    let Ok(len) = usize::try_from(bytes) else {
        return;
    };
    let mut memory: Vec<u8> = Vec::new();
    if memory.try_reserve_exact(len).is_err() {
        eprintln!("--warm-memory: cannot allocate {bytes} bytes; running without");
        return;
    }
    memory.resize(len, 1);
    std::hint::black_box(&memory);
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("socket.nagle.disable", "true");
    config
}

/// Counts delivery reports; with `acks`, also records how long each stamped record took from
/// its send to its delivery report.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    acks: Option<AckLatency>,
}

/// Send → delivery report of the stamped records of the latency phase.
struct AckLatency {
    origin: Instant,
    warmup_records: u64,
    histogram: Mutex<Histogram<u64>>,
}

/// (send time in ns since the phase's origin, sequence number) of a stamped payload.
fn read_stamp(payload: Option<&[u8]>) -> Option<(u64, u64)> {
    let payload = payload.filter(|p| p.len() >= LATENCY_STAMP_BYTES)?;
    let sent_ns = u64::from_be_bytes(payload[..8].try_into().ok()?);
    let sequence = u64::from_be_bytes(payload[8..LATENCY_STAMP_BYTES].try_into().ok()?);
    Some((sent_ns, sequence))
}

fn latency_histogram() -> BenchResult<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| format!("histogram: {e}"))
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(acks) = &self.acks {
                    let now_ns = acks.origin.elapsed().as_nanos() as u64;
                    if let Some((sent_ns, sequence)) = read_stamp(message.payload()) {
                        if sequence >= acks.warmup_records {
                            let micros = now_ns.saturating_sub(sent_ns) / 1_000;
                            acks.histogram
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .saturating_record(micros.max(1));
                        }
                    }
                }
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                if first.is_none() {
                    *first = Some(error.to_string());
                }
            }
        }
    }
}

fn throughput_producer(
    server: &Server,
    acks: &str,
    idempotent: bool,
) -> BenchResult<BaseProducer<Deliveries>> {
    client_config(&server.bootstrap)
        .set("acks", acks)
        .set(
            "enable.idempotence",
            if idempotent { "true" } else { "false" },
        )
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("compression.type", "none")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "60000")
        .create_with_context(Deliveries::default())
        .map_err(|e| format!("producer: {e}"))
}

/// Sends `count` records of `value_bytes` round-robin over the partitions and waits for every
/// delivery report. The clock runs from the first send to the last report; connections and
/// metadata are set up before it starts (one warm-up record per partition, flushed).
fn produce_phase(
    server: &Server,
    topic: &str,
    value_bytes: usize,
    count: u64,
) -> BenchResult<ProduceRun> {
    produce_phase_with(server, topic, value_bytes, count, server.acks, false)
}

/// [`produce_phase`] with the producer's `acks` and `enable.idempotence` given.
fn produce_phase_with(
    server: &Server,
    topic: &str,
    value_bytes: usize,
    count: u64,
    acks: &str,
    idempotent: bool,
) -> BenchResult<ProduceRun> {
    let producer = throughput_producer(server, acks, idempotent)?;
    let value: Vec<u8> = (0..value_bytes).map(|i| (i % 251) as u8).collect();
    for partition in 0..PARTITIONS {
        send_blocking(&producer, topic, partition, &value)?;
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| format!("{}: warm-up flush: {e}", server.name))?;
    check_no_failures(producer.context(), server.name)?;
    let warmup_delivered = producer.context().delivered.load(Ordering::Relaxed);

    let server_cpu = server.cpu();
    let client_cpu = self_cpu();
    let start = Instant::now();
    let mut stopped_early = false;
    for i in 0..count {
        if i % 4096 == 0 && start.elapsed() > PRODUCE_SEND_BOUND {
            stopped_early = true;
            break;
        }
        send_blocking(&producer, topic, (i % PARTITIONS as u64) as i32, &value)?;
    }
    let flushed = producer.flush(PRODUCE_DRAIN_BOUND);
    let elapsed = start.elapsed();
    let server_cpu = server.cpu().since(server_cpu);
    let client_cpu = self_cpu().since(client_cpu);
    if let Err(e) = flushed {
        eprintln!("{}: flush did not finish: {e}", server.name);
    }
    let context = producer.context();
    let failed = context.failed.load(Ordering::Relaxed);
    if let Some(error) = context
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        eprintln!(
            "{}: {failed} deliveries failed, first: {error}",
            server.name
        );
    }
    Ok(ProduceRun {
        delivered: context.delivered.load(Ordering::Relaxed) - warmup_delivered,
        failed,
        elapsed,
        value_bytes,
        server_cpu,
        client_cpu,
        stopped_early,
        load: Load::default(),
    })
}

/// Enqueues one record, serving delivery reports while librdkafka's queue is full.
fn send_blocking<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    topic: &str,
    partition: i32,
    value: &[u8],
) -> BenchResult<()> {
    let mut record = BaseRecord::<(), [u8]>::to(topic)
        .payload(value)
        .partition(partition);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(format!("send: {error}")),
        }
    }
}

fn check_no_failures(context: &Deliveries, name: &str) -> BenchResult<()> {
    match context
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        Some(error) => Err(format!("{name}: delivery failed: {error}")),
        None => Ok(()),
    }
}

/// Reads `topic` from the beginning of every partition up to the high watermarks seen at the
/// start, with a consumer tuned not to throttle itself (see the module doc of the bench notes:
/// librdkafka pauses fetching for `fetch.queue.backoff.ms` once `queued.min.messages` or
/// `queued.max.messages.kbytes` are buffered).
fn consume_phase(
    server: &Server,
    topic: &'static str,
    value_bytes: usize,
) -> BenchResult<ConsumeRun> {
    let consumer: BaseConsumer = client_config(&server.bootstrap)
        .set("group.id", "gregor-bench-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("queued.min.messages", "10000000")
        .set("queued.max.messages.kbytes", "2097151")
        .set("fetch.queue.backoff.ms", "1")
        .set("fetch.wait.max.ms", "100")
        .create()
        .map_err(|e| format!("consumer: {e}"))?;
    let mut expected = 0u64;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(|e| format!("watermarks of {topic}-{partition}: {e}"))?;
        expected += u64::try_from(high - low).unwrap_or(0);
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .map_err(|e| format!("assign: {e}"))?;
    }
    let server_cpu = server.cpu();
    let client_cpu = self_cpu();
    let start = Instant::now();
    consumer
        .assign(&assignment)
        .map_err(|e| format!("assign: {e}"))?;
    let mut records = 0u64;
    while records < expected && start.elapsed() < CONSUME_BOUND {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                if message.payload().map_or(0, <[u8]>::len) != value_bytes {
                    return Err(format!("{topic}: a record of the wrong size came back"));
                }
                records += 1;
            }
            Some(Err(error)) => return Err(format!("{topic}: consume: {error}")),
            None => {}
        }
    }
    let elapsed = start.elapsed();
    Ok(ConsumeRun {
        topic,
        value_bytes,
        records,
        expected,
        elapsed,
        server_cpu: server.cpu().since(server_cpu),
        client_cpu: self_cpu().since(client_cpu),
        load: Load::default(),
    })
}

/// Fixed-rate 100 B records; each payload starts with its send time (ns since `origin`) and
/// its sequence number. Records of the warm-up second are not recorded.
fn latency_phase(
    server: &Server,
    recorded: Duration,
    fetch_wait_ms: u64,
) -> BenchResult<LatencyRun> {
    let consumer: BaseConsumer = client_config(&server.bootstrap)
        .set("group.id", "gregor-bench-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .set("fetch.min.bytes", "1")
        .set("fetch.queue.backoff.ms", "1")
        .set("queued.min.messages", "1000000")
        .create()
        .map_err(|e| format!("latency consumer: {e}"))?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC_LATENCY, partition, Offset::Beginning)
            .map_err(|e| format!("assign: {e}"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("assign: {e}"))?;
    // Let the consumer connect and start fetching before the first record.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(500) {
        if let Some(Err(error)) = consumer.poll(Duration::from_millis(50)) {
            return Err(format!("latency consumer: {error}"));
        }
    }

    let warmup_records = LATENCY_WARMUP.as_millis() as u64 * LATENCY_RATE_PER_SECOND / 1000;
    let total = warmup_records + recorded.as_millis() as u64 * LATENCY_RATE_PER_SECOND / 1000;
    let origin = Instant::now();
    let acks = AckLatency {
        origin,
        warmup_records,
        histogram: Mutex::new(latency_histogram()?),
    };
    let producer = paced_producer(server, Some(acks))?;
    producer
        .client()
        .fetch_metadata(Some(TOPIC_LATENCY), Duration::from_secs(10))
        .map_err(|e| format!("latency producer metadata: {e}"))?;
    let done = Arc::new(AtomicBool::new(false));
    let server_cpu = server.cpu();

    let sender = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || -> BenchResult<(u64, u64, Histogram<u64>)> {
            let late_sends = paced_send(&producer, TOPIC_LATENCY, total, origin)?;
            let flushed = producer.flush(Duration::from_secs(10));
            done.store(true, Ordering::Release);
            flushed.map_err(|e| format!("latency flush: {e}"))?;
            check_no_failures(producer.context(), "latency producer")?;
            let acks = match &producer.context().acks {
                Some(acks) => acks
                    .histogram
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
                None => latency_histogram()?,
            };
            Ok((total, late_sends, acks))
        })
    };

    let mut histogram = latency_histogram()?;
    let mut received_total = 0u64;
    let mut drain_deadline: Option<Instant> = None;
    while received_total < total {
        if done.load(Ordering::Acquire) {
            let deadline =
                *drain_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(5));
            if Instant::now() > deadline {
                break;
            }
        }
        match consumer.poll(Duration::from_millis(10)) {
            Some(Ok(message)) => {
                let received_ns = origin.elapsed().as_nanos() as u64;
                let Some((sent_ns, sequence)) = read_stamp(message.payload()) else {
                    return Err("latency record without a stamp".to_string());
                };
                received_total += 1;
                if sequence >= warmup_records {
                    let micros = received_ns.saturating_sub(sent_ns) / 1_000;
                    histogram.saturating_record(micros.max(1));
                }
            }
            Some(Err(error)) => return Err(format!("latency consume: {error}")),
            None => {}
        }
    }
    let elapsed = origin.elapsed();
    let server_cpu = server.cpu().since(server_cpu);
    let (sent, late_sends, acks) = sender
        .join()
        .map_err(|_| "latency producer thread panicked".to_string())??;
    Ok(LatencyRun {
        histogram,
        acks,
        sent,
        received_total,
        late_sends,
        elapsed,
        server_cpu,
        load: Load::default(),
    })
}

/// Sends `total` records of [`LATENCY_RECORD_BYTES`] at [`LATENCY_RATE_PER_SECOND`], round-robin
/// over the partitions; each payload starts with its send time (ns since `origin`, big-endian)
/// and its sequence number. Returns how many sends were more than 1 ms behind schedule.
fn paced_send(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    total: u64,
    origin: Instant,
) -> BenchResult<u64> {
    let interval = Duration::from_nanos(1_000_000_000 / LATENCY_RATE_PER_SECOND);
    let mut value = vec![0u8; LATENCY_RECORD_BYTES];
    let mut late_sends = 0u64;
    let start = Instant::now();
    for sequence in 0..total {
        let due = start + interval.mul_f64(sequence as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_millis(1) {
            late_sends += 1;
        }
        let sent_ns = origin.elapsed().as_nanos() as u64;
        value[..8].copy_from_slice(&sent_ns.to_be_bytes());
        value[8..LATENCY_STAMP_BYTES].copy_from_slice(&sequence.to_be_bytes());
        let partition = (sequence % PARTITIONS as u64) as i32;
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .payload(&value)
            .partition(partition);
        // The producer's own thread serves delivery reports, so they are timely.
        while let Err((error, back)) = producer.send(record) {
            if !matches!(
                error,
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
            ) {
                return Err(format!("send: {error}"));
            }
            record = back;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(late_sends)
}

fn paced_producer(
    server: &Server,
    acks: Option<AckLatency>,
) -> BenchResult<ThreadedProducer<Deliveries>> {
    client_config(&server.bootstrap)
        .set("acks", server.acks)
        .set("linger.ms", "0")
        .set("compression.type", "none")
        .set("message.timeout.ms", "30000")
        .create_with_context(Deliveries {
            acks,
            ..Deliveries::default()
        })
        .map_err(|e| format!("paced producer: {e}"))
}

/// Per-request cost: records of 100 B at 2,000/s with linger.ms=0, so (almost) every record is
/// a Produce request of its own; no consumer. The server's CPU per record is then its cost per
/// small request, which the no-op server bounds from below.
fn paced_produce_phase(server: &Server, duration: Duration) -> BenchResult<PacedRun> {
    let producer = paced_producer(server, None)?;
    // Connections and metadata first, outside the measurement.
    paced_send(&producer, TOPIC_PACED, PARTITIONS as u64, Instant::now())?;
    producer
        .flush(Duration::from_secs(10))
        .map_err(|e| format!("{}: paced warm-up: {e}", server.name))?;
    let total = duration.as_millis() as u64 * LATENCY_RATE_PER_SECOND / 1000;
    let server_cpu = server.cpu();
    let client_cpu = self_cpu();
    let start = Instant::now();
    let late_sends = paced_send(&producer, TOPIC_PACED, total, start)?;
    producer
        .flush(Duration::from_secs(10))
        .map_err(|e| format!("{}: paced flush: {e}", server.name))?;
    let elapsed = start.elapsed();
    check_no_failures(producer.context(), server.name)?;
    Ok(PacedRun {
        server: server.name,
        sent: total,
        late_sends,
        elapsed,
        server_cpu: server.cpu().since(server_cpu),
        client_cpu: self_cpu().since(client_cpu),
        load: Load::default(),
    })
}

// ---------------------------------------------------------------------------------------------
// /proc readings and the machine
// ---------------------------------------------------------------------------------------------

/// What else ran on the machine during a phase, in cores (1.0 = one core busy all along).
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    /// Kernel threads (children of kthreadd): mostly page-cache writeback of what the broker
    /// wrote, which is the broker's cost but is not charged to its process.
    kernel: f64,
    /// Everything else that is neither this bench, its servers nor a kernel thread: the other
    /// engineers' compiles and fuzzers, which share the cores with the client and the broker.
    other: f64,
}

/// Measures a phase's [`Load`] from the machine's busy time in `/proc/stat`, the CPU of this
/// process and its servers, and the CPU of every kernel thread.
struct Meter {
    start: Instant,
    machine_busy: Duration,
    ours: Duration,
    kernel_threads: HashMap<u32, Duration>,
}

impl Meter {
    fn start(servers: &[&Server]) -> Meter {
        Meter {
            start: Instant::now(),
            machine_busy: machine_busy(),
            ours: our_cpu(servers),
            kernel_threads: kernel_threads_cpu(),
        }
    }

    fn load(&self, servers: &[&Server]) -> Load {
        let busy = machine_busy().saturating_sub(self.machine_busy);
        let ours = our_cpu(servers).saturating_sub(self.ours);
        let kernel: Duration = kernel_threads_cpu()
            .into_iter()
            .map(|(pid, cpu)| {
                cpu.saturating_sub(self.kernel_threads.get(&pid).copied().unwrap_or_default())
            })
            .sum();
        let seconds = self.start.elapsed().as_secs_f64();
        Load {
            kernel: kernel.as_secs_f64() / seconds,
            other: busy
                .saturating_sub(ours)
                .saturating_sub(kernel)
                .as_secs_f64()
                / seconds,
        }
    }
}

/// utime + stime of every kernel thread, by pid.
fn kernel_threads_cpu() -> HashMap<u32, Duration> {
    let ticks = clock_ticks_per_second_cached();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            // Field 4 (index 1 after the name) is the parent pid; kthreadd is pid 2.
            (fields.get(1)? == &"2").then_some(())?;
            let cpu = process_cpu(&format!("/proc/{pid}/stat"), ticks).total();
            Some((pid, cpu))
        })
        .collect()
}

fn our_cpu(servers: &[&Server]) -> Duration {
    servers
        .iter()
        .map(|s| s.cpu().total())
        .fold(self_cpu().total(), |sum, cpu| sum + cpu)
}

/// Busy time of every CPU (user, nice, system, irq, softirq, steal) from `/proc/stat`.
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .find(|line| line.starts_with("cpu "))
        .map(|line| {
            line.split_whitespace()
                .skip(1)
                .enumerate()
                // user nice system idle iowait irq softirq steal: skip idle and iowait.
                .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6 | 7))
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_nanos(ticks * 1_000_000_000 / clock_ticks_per_second_cached())
}

fn clock_ticks_per_second() -> u64 {
    command_output("getconf", &["CLK_TCK"])
        .parse()
        .ok()
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// CPU time of a process, every thread included.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    user: Duration,
    system: Duration,
}

impl Cpu {
    fn total(self) -> Duration {
        self.user + self.system
    }
    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
    /// Share of the time spent in the kernel, in percent.
    fn system_percent(self) -> Option<f64> {
        // Below ~10 ticks the kernel's sampled split says little (it can even be 0% or 100%).
        (self.total() >= Duration::from_millis(100))
            .then(|| 100.0 * self.system.as_secs_f64() / self.total().as_secs_f64())
    }
}

/// utime and stime (fields 14 and 15 of `/proc/<pid>/stat`) of every thread of the process.
fn process_cpu(stat_path: &str, clock_ticks: u64) -> Cpu {
    let Ok(stat) = std::fs::read_to_string(stat_path) else {
        return Cpu::default();
    };
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let Some(after_name) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Cpu::default();
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> Duration {
        let ticks: u64 = fields.get(index).and_then(|f| f.parse().ok()).unwrap_or(0);
        Duration::from_nanos(ticks * 1_000_000_000 / clock_ticks)
    };
    Cpu {
        user: ticks(11),
        system: ticks(12),
    }
}

fn self_cpu() -> Cpu {
    process_cpu("/proc/self/stat", clock_ticks_per_second_cached())
}

fn clock_ticks_per_second_cached() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(clock_ticks_per_second)
}

fn status_kb(path: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

fn per_record_us(cpu: Cpu, records: u64) -> f64 {
    if records == 0 {
        return f64::NAN;
    }
    cpu.total().as_secs_f64() * 1e6 / records as f64
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_string())
}

struct Machine {
    cores: String,
    cpu_model: String,
    kernel: String,
    load_before: String,
}

impl Machine {
    fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, model)| model.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".to_string());
        Machine {
            cores: command_output("nproc", &[]),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| k.trim().to_string())
                .unwrap_or_default(),
            load_before: load_average(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Median figures of one producer series.
struct ProduceSummary {
    size: usize,
    server: &'static str,
    records: u64,
    records_per_second: f64,
    low: f64,
    high: f64,
    megabytes_per_second: f64,
    server_cpu_us: f64,
    server_system_percent: Option<f64>,
    client_cpu_us: f64,
    load: Load,
    failed: u64,
    stopped_early: bool,
}

/// One line of the results table.
struct Row {
    phase: String,
    server: &'static str,
    records: u64,
    records_per_second: f64,
    range: String,
    megabytes_per_second: f64,
    server_cpu_us: f64,
    /// None where too little CPU was used for the kernel's tick-sampled split to mean anything.
    server_system_percent: Option<f64>,
    client_cpu_us: f64,
    load: Load,
    versus: String,
    note: String,
}

const COLUMNS: [&str; 13] = [
    "phase",
    "server",
    "records",
    "records/s",
    "rounds' range",
    "MB/s",
    "broker µs/rec",
    "broker sys%",
    "client µs/rec",
    "kthreads",
    "other load",
    "vs no-op",
    "note",
];

impl Row {
    fn cells(&self) -> [String; 13] {
        [
            self.phase.clone(),
            self.server.to_string(),
            thousands(self.records as f64),
            thousands(self.records_per_second),
            self.range.clone(),
            format!("{:.1}", self.megabytes_per_second),
            format!("{:.3}", self.server_cpu_us),
            self.server_system_percent
                .map_or(String::new(), |p| format!("{p:.0}%")),
            format!("{:.3}", self.client_cpu_us),
            format!("{:.2}", self.load.kernel),
            format!("{:.2}", self.load.other),
            self.versus.clone(),
            self.note.clone(),
        ]
    }
}

fn size_label(bytes: usize) -> String {
    if bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_string();
    }
    let digits = format!("{value:.0}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn megabytes(kb: Option<u64>) -> String {
    kb.map_or("n/a".to_string(), |kb| {
        format!("{:.1} MiB", kb as f64 / 1024.0)
    })
}

impl Report {
    fn summaries(&self) -> Vec<ProduceSummary> {
        self.produce
            .iter()
            .filter(|(_, _, runs)| !runs.is_empty())
            .map(|(size, server, runs)| {
                let series =
                    |f: fn(&ProduceRun) -> f64| -> Vec<f64> { runs.iter().map(f).collect() };
                let mut rates = series(ProduceRun::records_per_second);
                let records_per_second = median(&mut rates);
                ProduceSummary {
                    size: *size,
                    server,
                    records: runs[0].delivered,
                    records_per_second,
                    low: rates.first().copied().unwrap_or(f64::NAN),
                    high: rates.last().copied().unwrap_or(f64::NAN),
                    megabytes_per_second: median(&mut series(ProduceRun::megabytes_per_second)),
                    server_cpu_us: median(&mut series(ProduceRun::server_cpu_per_record_us)),
                    server_system_percent: {
                        let mut shares: Vec<f64> = runs
                            .iter()
                            .filter_map(|r| r.server_cpu.system_percent())
                            .collect();
                        (!shares.is_empty()).then(|| median(&mut shares))
                    },
                    client_cpu_us: median(&mut series(ProduceRun::client_cpu_per_record_us)),
                    load: Load {
                        kernel: median(&mut series(|r| r.load.kernel)),
                        other: runs.iter().map(|r| r.load.other).fold(0.0, f64::max),
                    },
                    failed: runs.iter().map(|r| r.failed).sum(),
                    stopped_early: runs.iter().any(|r| r.stopped_early),
                }
            })
            .collect()
    }

    fn ceiling_of(summaries: &[ProduceSummary], size: usize) -> Option<&ProduceSummary> {
        summaries
            .iter()
            .find(|s| s.size == size && s.server == NOOP)
    }

    fn rows(&self, summaries: &[ProduceSummary]) -> Vec<Row> {
        let mut rows = Vec::new();
        for s in summaries {
            let versus = match (s.server, Report::ceiling_of(summaries, s.size)) {
                (GREGOR, Some(c)) => {
                    format!(
                        "{:.1}%",
                        100.0 * s.records_per_second / c.records_per_second
                    )
                }
                _ => String::new(),
            };
            let mut notes = Vec::new();
            if s.failed > 0 {
                notes.push(format!("{} failed", s.failed));
            }
            if s.stopped_early {
                notes.push("stopped at the time bound".to_string());
            }
            rows.push(Row {
                phase: format!("produce {}", size_label(s.size)),
                server: s.server,
                records: s.records,
                records_per_second: s.records_per_second,
                range: format!("{}–{}", thousands(s.low), thousands(s.high)),
                megabytes_per_second: s.megabytes_per_second,
                server_cpu_us: s.server_cpu_us,
                server_system_percent: s.server_system_percent,
                client_cpu_us: s.client_cpu_us,
                load: s.load,
                versus,
                note: notes.join(", "),
            });
        }
        for c in &self.consume {
            let rate = c.records as f64 / c.elapsed.as_secs_f64();
            rows.push(Row {
                phase: format!("consume {}", size_label(c.value_bytes)),
                server: GREGOR,
                records: c.records,
                records_per_second: rate,
                range: String::new(),
                megabytes_per_second: rate * c.value_bytes as f64 / 1e6,
                server_cpu_us: per_record_us(c.server_cpu, c.records),
                server_system_percent: c.server_cpu.system_percent(),
                client_cpu_us: per_record_us(c.client_cpu, c.records),
                load: c.load,
                versus: String::new(),
                note: if c.records < c.expected {
                    format!("only {} of {} of {}", c.records, c.expected, c.topic)
                } else {
                    String::new()
                },
            });
        }
        let noop = self.paced.iter().find(|p| p.server == NOOP);
        for p in &self.paced {
            let rate = p.sent as f64 / p.elapsed.as_secs_f64();
            let versus = match (p.server, noop) {
                (GREGOR, Some(noop)) if !noop.server_cpu.total().is_zero() => format!(
                    "{:.1}× CPU",
                    per_record_us(p.server_cpu, p.sent) / per_record_us(noop.server_cpu, noop.sent)
                ),
                _ => String::new(),
            };
            rows.push(Row {
                phase: "paced 100 B".to_string(),
                server: p.server,
                records: p.sent,
                records_per_second: rate,
                range: String::new(),
                megabytes_per_second: rate * LATENCY_RECORD_BYTES as f64 / 1e6,
                server_cpu_us: per_record_us(p.server_cpu, p.sent),
                server_system_percent: None,
                client_cpu_us: per_record_us(p.client_cpu, p.sent),
                load: p.load,
                versus,
                note: if p.late_sends > 0 {
                    format!("{} sends >1 ms late", p.late_sends)
                } else {
                    String::new()
                },
            });
        }
        rows
    }

    /// (label, met, detail) for every target the issue sets.
    fn targets(&self, summaries: &[ProduceSummary]) -> Vec<(String, bool, String)> {
        let mut out = Vec::new();
        for s in summaries.iter().filter(|s| s.server == GREGOR) {
            if let Some(ceiling) = Report::ceiling_of(summaries, s.size) {
                let ratio = s.records_per_second / ceiling.records_per_second;
                out.push((
                    format!(
                        "produce {} records/s ≥ 90% of the no-op ceiling",
                        size_label(s.size)
                    ),
                    ratio >= TARGET_CEILING_RATIO,
                    format!("{:.1}%", ratio * 100.0),
                ));
            }
        }
        out.extend(self.versus_one_broker_targets(summaries));
        for runs in &self.idempotence {
            out.push((
                format!(
                    "idempotent produce {} ≥ 95% of plain produce (acks=all, same run, median of round ratios, broker-bound raw producer)",
                    size_label(runs.value_bytes)
                ),
                runs.raw_ratio() >= idempotence::TARGET_IDEMPOTENT_RATIO,
                format!("{:.1}%", runs.raw_ratio() * 100.0),
            ));
            out.push((
                format!(
                    "idempotent produce {} ≥ 95% of plain produce (acks=all, same run, median of round ratios, librdkafka)",
                    size_label(runs.value_bytes)
                ),
                runs.ratio() >= idempotence::TARGET_IDEMPOTENT_RATIO,
                format!("{:.1}%", runs.ratio() * 100.0),
            ));
        }
        if let Some(s) = summaries
            .iter()
            .find(|s| s.server == GREGOR && s.size == 100)
        {
            out.push((
                "broker CPU < 1 µs per 100 B record (produce)".to_string(),
                s.server_cpu_us < TARGET_CPU_PER_SMALL_RECORD_US,
                format!("{:.3} µs", s.server_cpu_us),
            ));
        }
        if let Some(latency) = &self.latency {
            let p99 = latency.histogram.value_at_quantile(0.99);
            out.push((
                "end-to-end p99 < 2 ms at 2,000 records/s".to_string(),
                p99 < TARGET_P99_US,
                format!("{:.2} ms", p99 as f64 / 1000.0),
            ));
        }
        if let Some(kb) = self.gregor_peak_rss_kb {
            let megabytes = kb as f64 / 1024.0;
            out.push((
                "broker peak RSS < 100 MB".to_string(),
                megabytes < TARGET_PEAK_RSS_MB,
                format!("{megabytes:.1} MiB"),
            ));
        }
        out
    }

    /// The cluster's producer throughput against one broker at acks=1 (`--versus-one-broker`),
    /// per size: the ratio of the medians, and of each round's pair (both servers ran in the
    /// same round, one after the other, so a pair saw the same machine state).
    fn versus_one_broker_targets(
        &self,
        summaries: &[ProduceSummary],
    ) -> Vec<(String, bool, String)> {
        let mut out = Vec::new();
        for s in summaries.iter().filter(|s| s.server == GREGOR) {
            let Some(single) = summaries
                .iter()
                .find(|o| o.server == ONE_BROKER && o.size == s.size)
            else {
                continue;
            };
            let runs = |name: &str| {
                self.produce
                    .iter()
                    .find(|(size, server, _)| *size == s.size && *server == name)
                    .map(|(_, _, runs)| runs.as_slice())
                    .unwrap_or_default()
            };
            let pairs: Vec<String> = runs(GREGOR)
                .iter()
                .zip(runs(ONE_BROKER))
                .map(|(cluster, one)| {
                    format!(
                        "{:.0}%",
                        100.0 * cluster.records_per_second() / one.records_per_second()
                    )
                })
                .collect();
            let ratio = s.records_per_second / single.records_per_second;
            out.push((
                format!(
                    "produce {}: {} brokers at acks={} ≥ {:.0}% of one broker at acks=1",
                    size_label(s.size),
                    brokers(),
                    acks_setting(),
                    TARGET_VERSUS_ONE_BROKER_RATIO * 100.0
                ),
                ratio >= TARGET_VERSUS_ONE_BROKER_RATIO,
                format!(
                    "{:.1}% ({} vs {} records/s; per round {})",
                    ratio * 100.0,
                    thousands(s.records_per_second),
                    thousands(single.records_per_second),
                    pairs.join(", ")
                ),
            ));
        }
        out
    }

    fn header_lines(&self) -> Vec<String> {
        let o = &self.options;
        let mut lines = vec![
            format!(
                "machine: {} cores (nproc), {}, Linux {}; client and servers share these cores",
                self.machine.cores, self.machine.cpu_model, self.machine.kernel
            ),
            format!(
                "date: {}; load average (1/5/15 min) before {}, after {}; bench wall time {:.0} s",
                self.date,
                self.machine.load_before,
                self.load_after,
                self.wall.as_secs_f64()
            ),
            format!(
                "broker: {} ({}); clients: librdkafka {}; topics of {} partitions; broker CPU = \
                 utime+stime of the server process from /proc, per record (sys% = the kernel's \
                 tick-sampled share of it, left blank where too small to mean anything); kthreads = cores \
                 busy in kernel threads (page-cache writeback of what the broker wrote), other \
                 load = cores busy with other processes (median / worst round)",
                self.broker_binary,
                self.source,
                rdkafka::util::get_rdkafka_version().1,
                PARTITIONS,
            ),
        ];
        if brokers() > 1 {
            lines.push(format!(
                "gregor: {} brokers in one process (gregor dev --brokers {}), every topic \
                 replicated to all of them (default.replication.factor={}); CPU and RSS are the \
                 whole cluster's",
                brokers(),
                brokers(),
                brokers()
            ));
        }
        if let Some(bytes) = o.warm_memory {
            lines.push(format!(
                "memory: before every producer run the bench wrote and freed {} MiB of memory \
                 (--warm-memory), so each run's page cache starts in memory the VM has backed",
                bytes >> 20
            ));
        }
        if o.versus_one_broker {
            lines.push(format!(
                "{ONE_BROKER}: a second gregor, one broker at acks=1 (the issue's reference for \
                 the cluster target), its producer rounds interleaved with the cluster's; both \
                 run all along, so each one's CPU figures include nothing of the other's"
            ));
        }
        if o.runs(Phase::Produce) {
            lines.push(format!(
                "produce: one producer, acks={}, linger.ms=5, batch.size=1000000, no compression; \
                 {} × 100 B and {} × 1 KiB per run; {} round(s) per server, median shown{}",
                acks_setting(),
                thousands(o.small_records as f64),
                thousands(o.large_records as f64),
                o.rounds,
                if o.quick { " (--quick)" } else { "" }
            ));
        }
        if o.runs(Phase::Consume) {
            lines.push(
                "consume: one consumer, partitions assigned from the beginning (no group), \
                 everything the produce runs wrote; queued.min.messages=10000000, \
                 fetch.queue.backoff.ms=1"
                    .to_string(),
            );
        }
        if o.runs(Phase::Paced) {
            lines.push(format!(
                "paced: {} records/s of 100 B with linger.ms=0 for {} s, so about one Produce \
                 request per record: the broker's cost per small request",
                LATENCY_RATE_PER_SECOND,
                o.paced.as_secs()
            ));
        }
        lines
    }

    /// The latency title and its rows: (what, p50, p99, p99.9, max).
    fn latency_lines(&self) -> Option<(String, Vec<[String; 5]>)> {
        let l = self.latency.as_ref()?;
        let title = format!(
            "latency: 100 B at {} records/s, {} s recorded after {} s warm-up, producer \
             linger.ms=0, consumer fetch.wait.max.ms={} fetch.min.bytes=1; {} samples, {} of {} \
             records received, {} sends >1 ms late; phase {:.1} s, broker CPU {:.1} µs/record; \
             kernel threads {:.2} cores, other load {:.2} cores",
            LATENCY_RATE_PER_SECOND,
            self.options.latency.as_secs(),
            LATENCY_WARMUP.as_secs(),
            self.options.fetch_wait_ms,
            l.histogram.len(),
            l.received_total,
            l.sent,
            l.late_sends,
            l.elapsed.as_secs_f64(),
            per_record_us(l.server_cpu, l.sent),
            l.load.kernel,
            l.load.other,
        );
        let row = |what: &str, h: &Histogram<u64>| -> [String; 5] {
            let micros = |v: u64| format!("{v} µs");
            [
                what.to_string(),
                micros(h.value_at_quantile(0.50)),
                micros(h.value_at_quantile(0.99)),
                micros(h.value_at_quantile(0.999)),
                micros(h.max()),
            ]
        };
        Some((
            title,
            vec![
                row("end to end (send → consumer poll)", &l.histogram),
                row("produce ack (send → delivery report)", &l.acks),
            ],
        ))
    }

    fn plain(&self) -> String {
        let summaries = self.summaries();
        let rows = self.rows(&summaries);
        let mut out = String::new();
        let _ = writeln!(out, "\n== gregor_bench ==");
        for line in self.header_lines() {
            let _ = writeln!(out, "{line}");
        }
        if !rows.is_empty() {
            let cells: Vec<[String; 13]> = rows.iter().map(Row::cells).collect();
            let mut widths = COLUMNS.map(|c| c.chars().count());
            for row in &cells {
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(cell.chars().count());
                }
            }
            let line = |cells: &[String]| -> String {
                let mut text = String::new();
                for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
                    let pad = " ".repeat(width - cell.chars().count());
                    // Text columns left-aligned, figures right-aligned.
                    if i < 2 || i == COLUMNS.len() - 1 {
                        let _ = write!(text, "{cell}{pad}  ");
                    } else {
                        let _ = write!(text, "{pad}{cell}  ");
                    }
                }
                text.trim_end().to_string()
            };
            let _ = writeln!(out);
            let _ = writeln!(out, "{}", line(&COLUMNS.map(str::to_string)));
            for row in &cells {
                let _ = writeln!(out, "{}", line(row));
            }
        }
        if let Some((title, rows)) = self.latency_lines() {
            let _ = writeln!(out, "\n{title}");
            for [what, p50, p99, p999, max] in rows {
                let _ = writeln!(
                    out,
                    "  {what:<38} p50 {p50:>9}   p99 {p99:>9}   p99.9 {p999:>9}   max {max:>9}"
                );
            }
        }
        let _ = writeln!(
            out,
            "\npeak RSS (VmHWM at the end): gregor {}{}, no-op {}",
            megabytes(self.gregor_peak_rss_kb),
            self.one_broker_rss_text(),
            megabytes(self.noop_peak_rss_kb)
        );
        if self.produce.iter().any(|(_, _, runs)| !runs.is_empty()) {
            let _ = writeln!(out, "\nproduce records/s per round:");
            for (size, server, runs) in &self.produce {
                let rates: Vec<String> = runs
                    .iter()
                    .map(|r| thousands(r.records_per_second()))
                    .collect();
                let _ = writeln!(
                    out,
                    "  {:<6} {:<7} {}",
                    size_label(*size),
                    server,
                    rates.join("  ")
                );
            }
        }
        if let Some(groups) = &self.groups {
            let _ = writeln!(
                out,
                "\nconsumer groups (group.initial.rebalance.delay.ms=0):"
            );
            for [what, value] in groups.rows() {
                let _ = writeln!(out, "  {what:<58} {value}");
            }
        }
        for line in self.idempotence_lines() {
            let _ = writeln!(out, "{line}");
        }
        for line in self.transactions.iter().flat_map(|t| t.lines()) {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "\ntargets:");
        for (label, met, detail) in self.targets(&summaries) {
            let verdict = if met { "met" } else { "MISSED" };
            let _ = writeln!(out, "  {verdict:<6} {label}: {detail}");
        }
        out
    }

    /// The idempotent phase's lines (plain text; markdown list items with a "- " prefix).
    fn idempotence_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.idempotence.is_empty() {
            lines.push(
                "\nidempotent against plain produce, acks=all, same topic, alternating (librdkafka; raw = pre-encoded batches, 5 requests in flight):"
                    .to_string(),
            );
            let pairs = |plain: &[ProduceRun], idempotent: &[ProduceRun]| -> Vec<String> {
                plain
                    .iter()
                    .zip(idempotent)
                    .map(|(p, i)| {
                        format!(
                            "{:.0}%",
                            i.records_per_second() / p.records_per_second() * 100.0
                        )
                    })
                    .collect()
            };
            for runs in &self.idempotence {
                let rates = |runs: &[ProduceRun]| {
                    runs.iter()
                        .map(|r| thousands(r.records_per_second()))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let median_of = |runs: &[ProduceRun], f: fn(&ProduceRun) -> f64| {
                    median(&mut runs.iter().map(f).collect::<Vec<_>>())
                };
                let cpu =
                    |runs: &[ProduceRun]| median_of(runs, ProduceRun::server_cpu_per_record_us);
                let client =
                    |runs: &[ProduceRun]| median_of(runs, ProduceRun::client_cpu_per_record_us);
                let rate = |runs: &[ProduceRun]| median_of(runs, ProduceRun::records_per_second);
                for (label, plain, idempotent) in [
                    ("", &runs.plain, &runs.idempotent),
                    (" raw", &runs.raw_plain, &runs.raw_idempotent),
                ] {
                    let paired = idempotence::IdempotenceRuns::paired_ratio(plain, idempotent);
                    lines.push(format!(
                        "  {:<6}{label} plain {} rec/s (broker {:.3}, client {:.3} µs/rec), idempotent {} rec/s (broker {:.3}, client {:.3} µs/rec): median of round ratios {:.1}%, ratio of medians {:.1}%, per round {} [rounds: plain {} | idempotent {}]",
                        size_label(runs.value_bytes),
                        thousands(rate(plain)),
                        cpu(plain),
                        client(plain),
                        thousands(rate(idempotent)),
                        cpu(idempotent),
                        client(idempotent),
                        paired * 100.0,
                        rate(idempotent) / rate(plain) * 100.0,
                        pairs(plain, idempotent).join(" "),
                        rates(plain),
                        rates(idempotent),
                    ));
                }
            }
        }
        if let Some(cost) = &self.producer_state {
            lines.push(format!(
                "\nproducer state: {} idempotent producers x {} partitions ({} entries) in {:.1} s: RSS {} -> {} ({:.0} bytes per producer per partition)",
                cost.producers,
                cost.partitions,
                cost.producers * cost.partitions as usize,
                cost.elapsed.as_secs_f64(),
                megabytes(Some(cost.rss_before_kb)),
                megabytes(Some(cost.rss_after_kb)),
                cost.bytes_per_entry()
            ));
        }
        lines
    }

    fn one_broker_rss_text(&self) -> String {
        if self.options.versus_one_broker {
            format!(", {ONE_BROKER} {}", megabytes(self.one_broker_peak_rss_kb))
        } else {
            String::new()
        }
    }

    fn markdown(&self) -> String {
        let summaries = self.summaries();
        let rows = self.rows(&summaries);
        let mut out = String::new();
        for line in self.header_lines() {
            let _ = writeln!(out, "- {line}");
        }
        if !rows.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "| {} |", COLUMNS.join(" | "));
            let _ = writeln!(
                out,
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
            );
            for row in &rows {
                let _ = writeln!(out, "| {} |", row.cells().join(" | "));
            }
        }
        if let Some((title, rows)) = self.latency_lines() {
            let _ = writeln!(out, "\n{title}.\n");
            let _ = writeln!(out, "| latency | p50 | p99 | p99.9 | max |");
            let _ = writeln!(out, "|---|---:|---:|---:|---:|");
            for row in rows {
                let _ = writeln!(out, "| {} |", row.join(" | "));
            }
        }
        for line in self.idempotence_lines() {
            let _ = writeln!(out, "{line}");
        }
        for line in self.transactions.iter().flat_map(|t| t.lines()) {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(
            out,
            "\nPeak RSS (VmHWM at the end): gregor {}{}, no-op {}.",
            megabytes(self.gregor_peak_rss_kb),
            self.one_broker_rss_text(),
            megabytes(self.noop_peak_rss_kb)
        );
        if self.produce.iter().any(|(_, _, runs)| !runs.is_empty()) {
            let _ = writeln!(out, "\nProduce records/s per round:\n");
            for (size, server, runs) in &self.produce {
                let rates: Vec<String> = runs
                    .iter()
                    .map(|r| thousands(r.records_per_second()))
                    .collect();
                let _ = writeln!(
                    out,
                    "- {} {}: {}",
                    size_label(*size),
                    server,
                    rates.join(", ")
                );
            }
        }
        if let Some(groups) = &self.groups {
            let _ = writeln!(
                out,
                "\nConsumer groups (broker with `group.initial.rebalance.delay.ms=0`):\n"
            );
            let _ = writeln!(out, "| measurement | result |");
            let _ = writeln!(out, "|---|---:|");
            for [what, value] in groups.rows() {
                let _ = writeln!(out, "| {what} | {value} |");
            }
        }
        let _ = writeln!(out, "\n| target | result | measured |");
        let _ = writeln!(out, "|---|---|---:|");
        for (label, met, detail) in self.targets(&summaries) {
            let verdict = if met { "met" } else { "**missed**" };
            let _ = writeln!(out, "| {label} | {verdict} | {detail} |");
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The no-op ceiling server
// ---------------------------------------------------------------------------------------------

mod noop {
    //! A Kafka server that stores nothing: ApiVersions from `gregor::api::SUPPORTED`, Metadata
    //! naming itself as the one broker and leader of every partition of any topic asked for,
    //! and Produce answered with error 0 and base offsets counted per topic-partition.
    //! Framing is the cheapest possible (one task per connection, every response of a read
    //! written with one `write_all`); decoding and encoding are gregor's own codec, so what
    //! gregor adds on top is its handlers, its log and its connection machinery.

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use bytes::{Buf, BytesMut};
    use gregor::api::{supported_versions, SUPPORTED};
    use gregor::protocol::codec::{decode_request, encode_response, Decoded};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{
        ApiKey, ApiVersionsResponse, BrokerId, MetadataRequest, MetadataResponse, ProduceRequest,
        ProduceResponse, RequestKind, ResponseKind,
    };
    use kafka_protocol::protocol::StrBytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use uuid::Uuid;

    const NODE_ID: i32 = 1;

    struct State {
        port: u16,
        partitions: i32,
        /// Next offset per (topic name or id, partition).
        next_offsets: Mutex<HashMap<(String, i32), i64>>,
    }

    /// `--noop-server PORT PARTITIONS`: serves until killed.
    pub fn serve_from_args(args: &[String]) {
        let port: u16 = args.first().and_then(|p| p.parse().ok()).unwrap_or(0);
        let partitions: i32 = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(1);
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("no-op server: runtime: {e}");
                std::process::exit(1);
            }
        };
        let state = Arc::new(State {
            port,
            partitions,
            next_offsets: Mutex::new(HashMap::new()),
        });
        let result: std::io::Result<()> = runtime.block_on(async move {
            let listener = TcpListener::bind(("127.0.0.1", port)).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &state).await {
                        eprintln!("no-op server: connection closed: {e}");
                    }
                });
            }
        });
        if let Err(e) = result {
            eprintln!("no-op server: {e}");
            std::process::exit(1);
        }
    }

    async fn connection(mut stream: TcpStream, state: &State) -> Result<(), String> {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
        loop {
            while buf.len() >= 4 {
                let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                let size = usize::try_from(size).map_err(|_| "negative frame size")?;
                if buf.len() < 4 + size {
                    buf.reserve(4 + size - buf.len());
                    break;
                }
                buf.advance(4);
                let frame = buf.split_to(size).freeze();
                if let Some(response) = answer(frame, state)? {
                    // The no-op server's frames are all in memory.
                    let bytes = response.to_contiguous().map_err(|e| e.to_string())?;
                    out.extend_from_slice(&bytes);
                }
            }
            if !out.is_empty() {
                stream.write_all(&out).await.map_err(|e| e.to_string())?;
                out.clear();
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(64 * 1024);
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn answer(
        frame: bytes::Bytes,
        state: &State,
    ) -> Result<Option<gregor::protocol::Frame>, String> {
        let (correlation_id, api_key, version, body) =
            match decode_request(frame, supported_versions).map_err(|e| e.to_string())? {
                Decoded::Request {
                    header,
                    api_key,
                    version,
                    body,
                } => (header.correlation_id, api_key, version, body),
                Decoded::ApiVersionsUnsupported { correlation_id, .. } => {
                    let body = ResponseKind::ApiVersions(api_versions().with_error_code(35));
                    return encode_response(correlation_id, ApiKey::ApiVersions, 0, &body)
                        .map(Some)
                        .map_err(|e| e.to_string());
                }
            };
        let response = match body {
            RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions()),
            RequestKind::Metadata(request) => {
                ResponseKind::Metadata(metadata(&request, version, state))
            }
            RequestKind::Produce(request) => {
                let acks = request.acks;
                let response = produce(request, version, state);
                if acks == 0 {
                    return Ok(None);
                }
                ResponseKind::Produce(response)
            }
            _ => return Err(format!("the no-op server does not answer {api_key:?}")),
        };
        encode_response(correlation_id, api_key, version, &response)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    fn api_versions() -> ApiVersionsResponse {
        ApiVersionsResponse::default().with_api_keys(
            SUPPORTED
                .iter()
                .map(|(key, range)| {
                    ApiVersion::default()
                        .with_api_key(*key as i16)
                        .with_min_version(range.min)
                        .with_max_version(range.max)
                })
                .collect(),
        )
    }

    /// A stable non-nil id per topic name (FNV-1a), for Metadata v10+ and Produce v13+.
    fn topic_id(name: &str) -> Uuid {
        let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
        for byte in name.bytes() {
            hash ^= u128::from(byte);
            hash = hash.wrapping_mul(0x0000000001000000000000000000013B);
        }
        Uuid::from_u128(hash | 1)
    }

    fn metadata(request: &MetadataRequest, version: i16, state: &State) -> MetadataResponse {
        let topics = request
            .topics
            .iter()
            .flatten()
            .filter_map(|t| t.name.as_ref())
            .map(|name| {
                let partitions = (0..state.partitions)
                    .map(|index| {
                        let mut partition = MetadataResponsePartition::default()
                            .with_partition_index(index)
                            .with_leader_id(BrokerId(NODE_ID))
                            .with_replica_nodes(vec![BrokerId(NODE_ID)])
                            .with_isr_nodes(vec![BrokerId(NODE_ID)]);
                        if version >= 7 {
                            partition.leader_epoch = 0;
                        }
                        partition
                    })
                    .collect();
                let mut topic = MetadataResponseTopic::default()
                    .with_name(Some(name.clone()))
                    .with_partitions(partitions);
                if version >= 10 {
                    topic.topic_id = topic_id(name.as_str());
                }
                topic
            })
            .collect();
        let mut response = MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(NODE_ID))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(i32::from(state.port))])
            .with_topics(topics);
        if version >= 1 {
            response.controller_id = BrokerId(NODE_ID);
        }
        if version >= 2 {
            response.cluster_id = Some(StrBytes::from_static_str("gregor-bench-noop"));
        }
        response
    }

    /// Records in back-to-back v2 batches: lastOffsetDelta + 1 of each (bytes 23..27), batch
    /// after batch by batchLength (bytes 8..12).
    fn record_count(records: &[u8]) -> i64 {
        let mut position = 0usize;
        let mut count = 0i64;
        while position + 27 <= records.len() {
            let at = |from: usize| {
                i32::from_be_bytes([
                    records[position + from],
                    records[position + from + 1],
                    records[position + from + 2],
                    records[position + from + 3],
                ])
            };
            count += i64::from(at(23)) + 1;
            position += 12 + usize::try_from(at(8)).unwrap_or(records.len());
        }
        count
    }

    fn produce(request: ProduceRequest, version: i16, state: &State) -> ProduceResponse {
        let mut next_offsets = state.next_offsets.lock().unwrap_or_else(|e| e.into_inner());
        let responses = request
            .topic_data
            .into_iter()
            .map(|topic| {
                let key = if version >= 13 {
                    topic.topic_id.to_string()
                } else {
                    topic.name.as_str().to_string()
                };
                let partitions = topic
                    .partition_data
                    .iter()
                    .map(|data| {
                        let count = data.records.as_deref().map_or(0, record_count);
                        let next = next_offsets.entry((key.clone(), data.index)).or_insert(0);
                        let base_offset = *next;
                        *next += count;
                        let mut response = PartitionProduceResponse::default()
                            .with_index(data.index)
                            .with_base_offset(base_offset);
                        if version >= 5 {
                            response.log_start_offset = 0;
                        }
                        response
                    })
                    .collect();
                let mut response =
                    TopicProduceResponse::default().with_partition_responses(partitions);
                if version >= 13 {
                    response.topic_id = topic.topic_id;
                } else {
                    response.name = topic.name;
                }
                response
            })
            .collect();
        ProduceResponse::default().with_responses(responses)
    }
}

// ---------------------------------------------------------------------------------------------
// Consumer groups
// ---------------------------------------------------------------------------------------------

/// Topic of the groups phase.
const TOPIC_GROUPS: &str = "bench-groups";
/// Members of the "many join at once" measurement.
const GROUP_MEMBERS: usize = 10;

/// What the groups phase measured.
struct GroupsRun {
    /// subscribe() -> first assignment of a lone member of a new group, µs.
    join: Histogram<u64>,
    /// subscribe() of 10 members at once -> every member assigned.
    ten_members: Duration,
    /// A member joining a Stable group of 5 -> all 6 hold their new assignment.
    sixth_member: Duration,
    /// Synchronous commits of 8 partitions: latency (µs) of each.
    commit_latency: Histogram<u64>,
    commit_elapsed: Duration,
    /// Broker CPU during the commit loop.
    commit_server_cpu: Cpu,
}

impl GroupsRun {
    fn commits_per_second(&self) -> f64 {
        self.commit_latency.len() as f64 / self.commit_elapsed.as_secs_f64().max(1e-9)
    }

    fn rows(&self) -> Vec<[String; 2]> {
        let us = |v: u64| format!("{:.2} ms", v as f64 / 1000.0);
        vec![
            [
                format!(
                    "lone member: subscribe -> assigned ({} new groups)",
                    self.join.len()
                ),
                format!(
                    "p50 {}, p99 {}, max {}",
                    us(self.join.value_at_quantile(0.5)),
                    us(self.join.value_at_quantile(0.99)),
                    us(self.join.max())
                ),
            ],
            [
                format!("{GROUP_MEMBERS} members subscribe at once -> all assigned"),
                format!("{} ms", self.ten_members.as_millis()),
            ],
            [
                "6th member joins a Stable group of 5 -> all 6 reassigned".to_string(),
                format!("{} ms", self.sixth_member.as_millis()),
            ],
            [
                "sync OffsetCommit of 8 partitions, one consumer".to_string(),
                format!(
                    "{} commits/s; p50 {}, p99 {}",
                    thousands(self.commits_per_second()),
                    us(self.commit_latency.value_at_quantile(0.5)),
                    us(self.commit_latency.value_at_quantile(0.99))
                ),
            ],
            [
                "broker CPU per commit (8 partitions)".to_string(),
                format!(
                    "{:.1} µs",
                    per_record_us(self.commit_server_cpu, self.commit_latency.len())
                ),
            ],
        ]
    }
}

/// Counts assignments seen by one member.
#[derive(Default)]
struct Assignments {
    assigned: AtomicU64,
}

impl ClientContext for Assignments {}

impl rdkafka::consumer::ConsumerContext for Assignments {
    fn post_rebalance(
        &self,
        _consumer: &BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Assign(_) = rebalance {
            self.assigned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn group_member(bootstrap: &str, group: &str) -> BenchResult<BaseConsumer<Assignments>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        // The rebalance of a Stable group starts when members learn of it from a heartbeat
        // response; a short interval keeps that client-side wait small.
        .set("heartbeat.interval.ms", "100")
        .create_with_context(Assignments::default())
        .map_err(|e| format!("group consumer: {e}"))
}

fn member_assignment(m: &BaseConsumer<Assignments>) -> usize {
    m.assignment().map(|a| a.count()).unwrap_or(0)
}

/// Polls `members` until `done` or `bound`; returns the elapsed time since `start`.
fn poll_members(
    members: &[BaseConsumer<Assignments>],
    start: Instant,
    bound: Duration,
    what: &str,
    done: impl Fn(&[BaseConsumer<Assignments>]) -> bool,
) -> BenchResult<Duration> {
    loop {
        for m in members {
            let _ = m.poll(Duration::from_millis(1));
        }
        if done(members) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > bound {
            return Err(format!("groups phase: timed out waiting for {what}"));
        }
    }
}

fn groups_phase(server: &Server, quick: bool) -> BenchResult<GroupsRun> {
    create_topics(server, &[TOPIC_GROUPS])?;
    let bound = Duration::from_secs(30);
    // 1: a lone member of a new group (the first one also creates __consumer_offsets).
    let mut join = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let rounds = if quick { 5 } else { 20 };
    for round in 0..=rounds {
        let m = group_member(&server.bootstrap, &format!("bench-join-{round}"))?;
        let start = Instant::now();
        m.subscribe(&[TOPIC_GROUPS])
            .map_err(|e| format!("subscribe: {e}"))?;
        let members = [m];
        let took = poll_members(&members, start, bound, "a lone member", |ms| {
            member_assignment(&ms[0]) > 0
        })?;
        if round > 0 {
            join.record(took.as_micros() as u64)
                .map_err(|e| e.to_string())?;
        }
    }
    // 2: ten members at once.
    let members: Vec<_> = (0..GROUP_MEMBERS)
        .map(|_| group_member(&server.bootstrap, "bench-ten"))
        .collect::<BenchResult<_>>()?;
    let start = Instant::now();
    for m in &members {
        m.subscribe(&[TOPIC_GROUPS])
            .map_err(|e| format!("subscribe: {e}"))?;
    }
    // 8 partitions over 10 members: 8 members hold one each; every member has had an
    // assignment (possibly empty) delivered.
    let ten_members = poll_members(&members, start, bound, "ten members", |ms| {
        ms.iter()
            .all(|m| m.context().assigned.load(Ordering::SeqCst) > 0)
            && ms.iter().map(member_assignment).sum::<usize>() == PARTITIONS as usize
    })?;
    drop(members);
    // 3: a sixth member joining a Stable group of five.
    let mut members: Vec<_> = (0..5)
        .map(|_| group_member(&server.bootstrap, "bench-six"))
        .collect::<BenchResult<_>>()?;
    for m in &members {
        m.subscribe(&[TOPIC_GROUPS])
            .map_err(|e| format!("subscribe: {e}"))?;
    }
    poll_members(&members, Instant::now(), bound, "five members", |ms| {
        ms.iter().map(member_assignment).sum::<usize>() == PARTITIONS as usize
            && ms
                .iter()
                .all(|m| m.context().assigned.load(Ordering::SeqCst) > 0)
    })?;
    let before: Vec<u64> = members
        .iter()
        .map(|m| m.context().assigned.load(Ordering::SeqCst))
        .collect();
    let sixth = group_member(&server.bootstrap, "bench-six")?;
    let start = Instant::now();
    sixth
        .subscribe(&[TOPIC_GROUPS])
        .map_err(|e| format!("subscribe: {e}"))?;
    members.push(sixth);
    let sixth_member = poll_members(&members, start, bound, "the sixth member", |ms| {
        ms.iter()
            .zip(&before)
            .all(|(m, b)| m.context().assigned.load(Ordering::SeqCst) > *b)
            && ms[5].context().assigned.load(Ordering::SeqCst) > 0
            && ms.iter().map(member_assignment).sum::<usize>() == PARTITIONS as usize
    })?;
    drop(members);
    // 4: synchronous commits of every partition by one member.
    let m = group_member(&server.bootstrap, "bench-commit")?;
    m.subscribe(&[TOPIC_GROUPS])
        .map_err(|e| format!("subscribe: {e}"))?;
    let members = [m];
    poll_members(&members, Instant::now(), bound, "the committer", |ms| {
        member_assignment(&ms[0]) == PARTITIONS as usize
    })?;
    let m = &members[0];
    let mut commit_latency = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let run_for = if quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    let cpu_before = server.cpu();
    let start = Instant::now();
    let mut offset = 0i64;
    while start.elapsed() < run_for {
        offset += 1;
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(TOPIC_GROUPS, p, Offset::Offset(offset))
                .map_err(|e| e.to_string())?;
        }
        let sent = Instant::now();
        m.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .map_err(|e| format!("commit: {e}"))?;
        commit_latency
            .record(sent.elapsed().as_micros() as u64)
            .map_err(|e| e.to_string())?;
    }
    let commit_elapsed = start.elapsed();
    let commit_server_cpu = server.cpu().since(cpu_before);
    Ok(GroupsRun {
        join,
        ten_members,
        sixth_member,
        commit_latency,
        commit_elapsed,
        commit_server_cpu,
    })
}
