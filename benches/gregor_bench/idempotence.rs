//! The idempotent producer's cost (issue 12): `--phases idempotent`.
//!
//! 1. Throughput: per round and record size, one librdkafka producer with
//!    `enable.idempotence=true` and one without, both at acks=all (idempotence requires it) on
//!    the same topic of gregor, in alternating order; the report gives the ratio of the medians
//!    (target: at least [`TARGET_IDEMPOTENT_RATIO`]).
//! 2. State cost: [`STATE_PRODUCERS`] producers (raw InitProducerId) each write one idempotent
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
}

impl IdempotenceRuns {
    fn median_rate(runs: &[ProduceRun]) -> f64 {
        median(
            &mut runs
                .iter()
                .map(ProduceRun::records_per_second)
                .collect::<Vec<_>>(),
        )
    }
    pub(super) fn plain_rate(&self) -> f64 {
        Self::median_rate(&self.plain)
    }
    pub(super) fn idempotent_rate(&self) -> f64 {
        Self::median_rate(&self.idempotent)
    }
    pub(super) fn ratio(&self) -> f64 {
        self.idempotent_rate() / self.plain_rate()
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
            for idempotent in order {
                super::write_back_page_cache();
                if let Some(bytes) = warm_memory {
                    super::warm_memory(bytes);
                }
                let run = produce_phase_with(server, topic, size, count, "all", idempotent)?;
                eprintln!(
                    "round {round}: produce {size:>4} B acks=all {:<12} {:>10.0} rec/s server {:.3} µs/rec client {:.3} µs/rec",
                    if idempotent { "idempotent" } else { "plain" },
                    run.records_per_second(),
                    run.server_cpu_per_record_us(),
                    run.client_cpu_per_record_us(),
                );
                if idempotent {
                    runs.idempotent.push(run);
                } else {
                    runs.plain.push(run);
                }
            }
        }
    }
    Ok(results)
}

/// Part 2: many producers' state in many partitions.
pub(super) fn state_cost(server: &Server) -> BenchResult<StateCost> {
    let port: u16 = server
        .bootstrap
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("bootstrap port")?;
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| format!("timeout: {e}"))?;
    let rss = || status_kb(&format!("/proc/{}/status", server.pid), "VmRSS:").unwrap_or(0);
    let rss_before_kb = rss();
    let start = Instant::now();
    let value = Bytes::from_static(&[7u8; 100]);
    for producer in 0..STATE_PRODUCERS {
        let init: InitProducerIdResponse = request(
            &mut stream,
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
        )?;
        if init.error_code != 0 {
            return Err(format!("InitProducerId: error {}", init.error_code));
        }
        let batch = one_record_batch(init.producer_id.0, &value)?;
        let partitions = (0..STATE_PARTITIONS)
            .map(|index| {
                PartitionProduceData::default()
                    .with_index(index)
                    .with_records(Some(batch.clone()))
            })
            .collect();
        let produce = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC_STATE)))
                .with_partition_data(partitions)]);
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
    let record = Record {
        transactional: false,
        control: false,
        partition_leader_epoch: 0,
        producer_id,
        producer_epoch: 0,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: 0,
        timestamp: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        key: None,
        value: Some(value.clone()),
        headers: Default::default(),
        delete_horizon: false,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &[record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("encode: {e}"))?;
    Ok(buf.freeze())
}

fn request<Req: Encodable, Resp: Decodable>(
    stream: &mut std::net::TcpStream,
    api_key: ApiKey,
    version: i16,
    body: &Req,
) -> BenchResult<Resp> {
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
    stream
        .write_all(&frame)
        .map_err(|e| format!("write: {e}"))?;
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
