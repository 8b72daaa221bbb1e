//! The idempotent producer's cost (issue 12): `--phases idempotent`.
//!
//! 1. Throughput: per round and record size, one librdkafka producer with
//!    `enable.idempotence=true` and one without, both at acks=all (idempotence requires it) on
//!    the same topic of gregor, in alternating order; the report gives the median of the
//!    rounds' ratios (target: at least [`TARGET_IDEMPOTENT_RATIO`]) and the ratio of the medians.
//!    The librdkafka client costs more than the broker per small record and shares the two
//!    cores with it, so this ratio is mostly the client's. Hence also:
//! 2. Broker-bound throughput: the same comparison with a raw producer that sends batches
//!    encoded before the clock starts (one per partition per Produce request, five requests in
//!    flight, as an idempotent client may have), so the client's work per record is a socket
//!    write and the broker is the bottleneck. The target is judged on this pair.
//! 3. State cost: [`STATE_PRODUCERS`] producers (raw InitProducerId) each write one idempotent
//!    batch to every partition of a [`STATE_PARTITIONS`]-partition topic (one raw Produce each),
//!    so every partition keeps state for every producer; the broker's resident memory before
//!    and after gives the cost per producer per partition.

use std::io::{Read, Write};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{
    create_topics_with, median, produce_phase_with, status_kb, BenchResult, ProduceRun, Server,
};

/// Issue 12: idempotent produce throughput against plain produce, same run, same acks.
pub(super) const TARGET_IDEMPOTENT_RATIO: f64 = 0.95;
/// Producers of the state-cost case.
pub(super) const STATE_PRODUCERS: usize = 1000;
/// Partitions of the state-cost case.
pub(super) const STATE_PARTITIONS: i32 = 100;

pub(super) const TOPIC_IDEMPOTENT_SMALL: &str = "bench-idempotent-100b";
pub(super) const TOPIC_IDEMPOTENT_LARGE: &str = "bench-idempotent-1k";
const TOPIC_STATE: &str = "bench-producer-state";

/// One record size's rounds.
#[derive(Debug)]
pub(super) struct IdempotenceRuns {
    pub(super) value_bytes: usize,
    pub(super) plain: Vec<ProduceRun>,
    pub(super) idempotent: Vec<ProduceRun>,
    /// The raw producer's runs (part 2).
    pub(super) raw_plain: Vec<ProduceRun>,
    pub(super) raw_idempotent: Vec<ProduceRun>,
}

impl IdempotenceRuns {
    /// The median of the rounds' ratios (each round runs the pair back to back, so a
    /// disturbance that slows a round slows both of its runs): the statistic the target is
    /// judged on. The ratio of the medians is reported beside it; one busy stretch of the
    /// machine moves it by tens of percent.
    pub(super) fn ratio(&self) -> f64 {
        Self::paired_ratio(&self.plain, &self.idempotent)
    }
    /// [`IdempotenceRuns::ratio`] of the raw producer's rounds.
    pub(super) fn raw_ratio(&self) -> f64 {
        Self::paired_ratio(&self.raw_plain, &self.raw_idempotent)
    }
    /// The median of the rounds' ratios idempotent / plain.
    pub(super) fn paired_ratio(plain: &[ProduceRun], idempotent: &[ProduceRun]) -> f64 {
        median(
            &mut plain
                .iter()
                .zip(idempotent)
                .map(|(p, i)| i.records_per_second() / p.records_per_second())
                .collect::<Vec<_>>(),
        )
    }
}

/// The state-cost case's measurement.
#[derive(Debug)]
pub(super) struct StateCost {
    pub(super) producers: usize,
    pub(super) partitions: i32,
    pub(super) rss_before_kb: u64,
    pub(super) rss_after_kb: u64,
    pub(super) elapsed: Duration,
}

impl StateCost {
    /// Resident bytes added per producer per partition.
    pub(super) fn bytes_per_entry(&self) -> f64 {
        let entries = self.producers as f64 * f64::from(self.partitions);
        (self.rss_after_kb.saturating_sub(self.rss_before_kb) * 1024) as f64 / entries
    }
}

use std::time::{Duration, Instant};

/// Creates the phase's topics on `server`.
pub(super) fn create(server: &Server) -> BenchResult<()> {
    create_topics_with(
        server,
        &[TOPIC_IDEMPOTENT_SMALL, TOPIC_IDEMPOTENT_LARGE],
        super::PARTITIONS,
    )?;
    create_topics_with(server, &[TOPIC_STATE], STATE_PARTITIONS)
}

/// Part 1: plain and idempotent producers, alternating, `rounds` times per size.
pub(super) fn throughput(
    server: &Server,
    rounds: usize,
    sizes: &[(usize, u64)],
    warm_memory: Option<u64>,
) -> BenchResult<Vec<IdempotenceRuns>> {
    let mut results: Vec<IdempotenceRuns> = sizes
        .iter()
        .map(|&(value_bytes, _)| IdempotenceRuns {
            value_bytes,
            plain: Vec::new(),
            idempotent: Vec::new(),
            raw_plain: Vec::new(),
            raw_idempotent: Vec::new(),
        })
        .collect();
    for round in 1..=rounds {
        for (&(size, count), runs) in sizes.iter().zip(results.iter_mut()) {
            let topic = if size <= 100 {
                TOPIC_IDEMPOTENT_SMALL
            } else {
                TOPIC_IDEMPOTENT_LARGE
            };
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for raw in [false, true] {
                for idempotent in order {
                    super::write_back_page_cache();
                    if let Some(bytes) = warm_memory {
                        super::warm_memory(bytes);
                    }
                    let run = if raw {
                        raw_produce(server, topic, size, count, idempotent)?
                    } else {
                        produce_phase_with(server, topic, size, count, "all", idempotent)?
                    };
                    eprintln!(
                        "round {round}: {:<7} {size:>4} B acks=all {:<12} {:>10.0} rec/s server {:.3} µs/rec client {:.3} µs/rec",
                        if raw { "raw" } else { "produce" },
                        if idempotent { "idempotent" } else { "plain" },
                        run.records_per_second(),
                        run.server_cpu_per_record_us(),
                        run.client_cpu_per_record_us(),
                    );
                    match (raw, idempotent) {
                        (false, false) => runs.plain.push(run),
                        (false, true) => runs.idempotent.push(run),
                        (true, false) => runs.raw_plain.push(run),
                        (true, true) => runs.raw_idempotent.push(run),
                    }
                }
            }
        }
    }
    Ok(results)
}

/// Bytes of records per batch of the raw producer (librdkafka's batches here held about as much).
const RAW_BATCH_BYTES: usize = 100_000;
/// Bytes of records one raw run writes at least (they are encoded in memory first).
const RAW_RUN_BYTES: u64 = 800_000_000;
/// Produce requests the raw producer keeps in flight (the most an idempotent client may).
const RAW_IN_FLIGHT: usize = 5;

/// Part 2: `count` records of `value_bytes` from a raw producer, idempotent (one producer id,
/// a sequence per partition) or plain, in requests encoded before the clock starts.
fn raw_produce(
    server: &Server,
    topic: &str,
    value_bytes: usize,
    count: u64,
    idempotent: bool,
) -> BenchResult<ProduceRun> {
    let mut stream = connect(server)?;
    let producer_id = if idempotent {
        init_producer_id(&mut stream)?
    } else {
        -1
    };
    // The broker takes records from this producer several times faster than from librdkafka:
    // write at least RAW_RUN_BYTES so a run lasts long enough for its CPU ticks to mean
    // something.
    let count = count.max(RAW_RUN_BYTES / (value_bytes as u64 + 10));
    let per_batch = (RAW_BATCH_BYTES / (value_bytes + 10)).max(1);
    let per_request = per_batch as u64 * super::PARTITIONS as u64;
    let requests = count.div_ceil(per_request).max(1);
    let value: Bytes = (0..value_bytes).map(|i| (i % 251) as u8).collect();
    let mut frames = Vec::with_capacity(requests as usize);
    for index in 0..requests {
        let sequence = if idempotent {
            i32::try_from(index * per_batch as u64).map_err(|_| "sequence overflow")?
        } else {
            -1
        };
        let batch = records_batch(producer_id, sequence, per_batch, &value)?;
        let produce = produce_to_all(topic, super::PARTITIONS, &batch);
        frames.push(frame(ApiKey::Produce, RAW_PRODUCE_VERSION, &produce)?);
    }
    let mut reader = stream.try_clone().map_err(|e| format!("clone: {e}"))?;
    let (slots, freed) = std::sync::mpsc::sync_channel::<()>(RAW_IN_FLIGHT);
    let server_cpu = server.cpu();
    let client_cpu = super::self_cpu();
    let start = Instant::now();
    let responses = std::thread::spawn(move || -> BenchResult<(u64, String)> {
        let mut refused = 0;
        let mut first_error = String::new();
        for _ in 0..requests {
            let response: ProduceResponse =
                read_response(&mut reader, ApiKey::Produce, RAW_PRODUCE_VERSION)?;
            for p in response
                .responses
                .iter()
                .flat_map(|t| &t.partition_responses)
                .filter(|p| p.error_code != 0)
            {
                refused += 1;
                if first_error.is_empty() {
                    first_error = format!("{} ({:?})", p.error_code, p.error_message);
                }
            }
            if freed.recv().is_err() {
                break;
            }
        }
        Ok((refused, first_error))
    });
    for frame in &frames {
        if slots.send(()).is_err() {
            break;
        }
        stream.write_all(frame).map_err(|e| format!("write: {e}"))?;
    }
    let (refused, first_error) = responses
        .join()
        .map_err(|_| "raw producer's reader panicked")??;
    let elapsed = start.elapsed();
    let server_cpu = server.cpu().since(server_cpu);
    let client_cpu = super::self_cpu().since(client_cpu);
    if refused > 0 {
        return Err(format!(
            "raw producer: {refused} partition batches refused, the first with error {first_error}"
        ));
    }
    Ok(ProduceRun {
        delivered: requests * per_request,
        failed: 0,
        elapsed,
        value_bytes,
        server_cpu,
        client_cpu,
        stopped_early: false,
        load: super::Load::default(),
    })
}

/// The raw producer's Produce version (librdkafka 2.x sends 7-10; 9 is the first flexible one).
const RAW_PRODUCE_VERSION: i16 = 9;

/// Part 3: many producers' state in many partitions.
pub(super) fn state_cost(server: &Server) -> BenchResult<StateCost> {
    let mut stream = connect(server)?;
    let rss = || status_kb(&format!("/proc/{}/status", server.pid), "VmRSS:").unwrap_or(0);
    let rss_before_kb = rss();
    let start = Instant::now();
    let value = Bytes::from_static(&[7u8; 100]);
    for producer in 0..STATE_PRODUCERS {
        let batch = one_record_batch(init_producer_id(&mut stream)?, &value)?;
        let produce = produce_to_all(TOPIC_STATE, STATE_PARTITIONS, &batch);
        let response: ProduceResponse = request(&mut stream, ApiKey::Produce, 9, &produce)?;
        let failed = response
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .filter(|p| p.error_code != 0)
            .count();
        if failed > 0 {
            return Err(format!("producer {producer}: {failed} partitions refused"));
        }
    }
    let elapsed = start.elapsed();
    // Let the broker's allocator settle before reading.
    std::thread::sleep(Duration::from_millis(500));
    Ok(StateCost {
        producers: STATE_PRODUCERS,
        partitions: STATE_PARTITIONS,
        rss_before_kb,
        rss_after_kb: rss(),
        elapsed,
    })
}

fn one_record_batch(producer_id: i64, value: &Bytes) -> BenchResult<Bytes> {
    records_batch(producer_id, 0, 1, value)
}

/// A batch of `count` records of `value` from `producer_id` (-1: no producer) starting at
/// `base_sequence`.
fn records_batch(
    producer_id: i64,
    base_sequence: i32,
    count: usize,
    value: &Bytes,
) -> BenchResult<Bytes> {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: if producer_id < 0 { -1 } else { 0 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch where offset minus sequence changes, and takes
            // the first record's as the batch's base sequence (-1 for a plain producer).
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp,
            key: None,
            value: Some(value.clone()),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("encode: {e}"))?;
    Ok(buf.freeze())
}

/// An acks=all Produce request carrying `batch` to each of `partitions` partitions of `topic`.
fn produce_to_all(topic: &str, partitions: i32, batch: &Bytes) -> ProduceRequest {
    let partitions = (0..partitions)
        .map(|index| {
            PartitionProduceData::default()
                .with_index(index)
                .with_records(Some(batch.clone()))
        })
        .collect();
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(partitions)])
}

/// A new idempotent producer id (InitProducerId v4 without a transactional id).
fn init_producer_id(stream: &mut std::net::TcpStream) -> BenchResult<i64> {
    let init: InitProducerIdResponse = request(
        stream,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
    )?;
    if init.error_code != 0 {
        return Err(format!("InitProducerId: error {}", init.error_code));
    }
    Ok(init.producer_id.0)
}

/// A connection to `server`'s bootstrap port with a 30 s read timeout.
fn connect(server: &Server) -> BenchResult<std::net::TcpStream> {
    let port: u16 = server
        .bootstrap
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("bootstrap port")?;
    let stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| format!("timeout: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    Ok(stream)
}

fn request<Req: Encodable, Resp: Decodable>(
    stream: &mut std::net::TcpStream,
    api_key: ApiKey,
    version: i16,
    body: &Req,
) -> BenchResult<Resp> {
    stream
        .write_all(&frame(api_key, version, body)?)
        .map_err(|e| format!("write: {e}"))?;
    read_response(stream, api_key, version)
}

/// One request frame, size prefix included.
fn frame<Req: Encodable>(api_key: ApiKey, version: i16, body: &Req) -> BenchResult<Bytes> {
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[0; 4]);
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .encode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| format!("encode header: {e}"))?;
    body.encode(&mut frame, version)
        .map_err(|e| format!("encode body: {e}"))?;
    let size = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame.freeze())
}

/// Reads one response frame and decodes it.
fn read_response<Resp: Decodable>(
    stream: &mut std::net::TcpStream,
    api_key: ApiKey,
    version: i16,
) -> BenchResult<Resp> {
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .map_err(|e| format!("read: {e}"))?;
    let mut response = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
    stream
        .read_exact(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let mut response = Bytes::from(response);
    ResponseHeader::decode(&mut response, api_key.response_header_version(version))
        .map_err(|e| format!("decode header: {e}"))?;
    Resp::decode(&mut response, version).map_err(|e| format!("decode: {e}"))
}
