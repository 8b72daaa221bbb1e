//! Only brokers are replicas (issue 11, item 2): the internal listener (Raft and replica
//! fetches) admits only peers that prove they hold `cluster.secret`, closes idle connections
//! and oversized frames; a fetch as a replica from the client listener is refused.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{free_port, raw_request, raw_request_on, request_frame, TestBroker};
use gregor::server::peer_auth::{self, ClusterSecret};
use gregor::server::peer_client::{PeerPool, PeerRequest};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rdkafka::producer::FutureRecord;
use tokio::io::AsyncWriteExt;

const SECRET: &str = "internal-listener-test-secret";
const REPLICA_MAGIC: &[u8; 4] = b"GKFK";
const QUORUM_MAGIC: &[u8; 4] = b"GRFT";

/// A one-broker cluster that still has an internal listener (it is its own one voter).
async fn broker(extra: &[(&str, &str)]) -> (TestBroker, u16) {
    let internal = free_port();
    let voters = format!("1@127.0.0.1:{internal}");
    let mut settings = vec![
        ("controller.quorum.voters", voters.as_str()),
        ("cluster.secret", SECRET),
    ];
    settings.extend_from_slice(extra);
    let broker = TestBroker::start(&settings).await;
    let producer = common::producer(&broker.bootstrap, &[("acks", "1")]);
    for i in 0..3 {
        producer
            .send(
                FutureRecord::<str, str>::to("t").payload(&format!("v{i}")),
                Duration::from_secs(10),
            )
            .await
            .expect("produce");
    }
    (broker, internal)
}

/// A Fetch of `t`-0 from offset 0; as replica `replica_id` (at v15+ in `replica_state`).
fn fetch(version: i16, replica_id: i32) -> FetchRequest {
    let mut request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_partition_max_bytes(1 << 20)
                .with_last_fetched_epoch(-1)])]);
    if version >= 15 {
        request.replica_state = ReplicaState::default().with_replica_id(BrokerId(replica_id));
    } else {
        request.replica_id = BrokerId(replica_id);
    }
    request
}

fn partition(response: &FetchResponse) -> (i16, usize) {
    let p = &response.responses[0].partitions[0];
    (p.error_code, p.records.as_ref().map_or(0, |r| r.len()))
}

/// CPU time (user + system) this process has used so far.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
    // The fields after the command name (which ends with ')'): utime and stime are the 12th
    // and 13th, in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().expect("ticks"))
        .collect();
    Duration::from_millis((ticks[0] + ticks[1]) * 10)
}

/// Reads until the peer closes or `within` passes; returns the bytes and whether it closed.
fn read_until_closed(stream: &mut std::net::TcpStream, within: Duration) -> (Vec<u8>, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => {}
        }
    }
    (got, false)
}

/// An internal connection opened with `magic` that proved `secret`, as a blocking stream.
async fn authenticated(port: u16, magic: &[u8; 4], secret: &str) -> std::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(magic).await.expect("magic");
    peer_auth::connect(&mut stream, &ClusterSecret::new(secret), magic)
        .await
        .expect("handshake");
    let stream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_peers_holding_the_cluster_secret_get_in() {
    let (_broker, internal) = broker(&[]).await;

    // A Kafka replica fetch written straight after the magic, as before the handshake existed:
    // the listener sends its challenge, finds no valid proof in the frame, and closes without
    // a response.
    tokio::task::block_in_place(|| {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", internal)).expect("connect");
        stream.write_all(REPLICA_MAGIC).expect("magic");
        stream
            .write_all(&request_frame(ApiKey::Fetch, 12, &fetch(12, 2)))
            .expect("fetch");
        let (got, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
        assert!(
            closed,
            "the connection stayed open ({} bytes answered)",
            got.len()
        );
        assert_eq!(
            got.len(),
            32,
            "only the challenge was sent, no Fetch response"
        );
    });

    // The wrong secret, on either kind of internal connection: refused.
    for magic in [REPLICA_MAGIC, QUORUM_MAGIC] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", internal))
            .await
            .expect("connect");
        stream.write_all(magic).await.expect("magic");
        let wrong = ClusterSecret::new("not-this-clusters-secret");
        assert!(peer_auth::connect(&mut stream, &wrong, magic)
            .await
            .is_err());
    }

    // The right secret: a broker, which may fetch as a replica (to the log end).
    let mut stream = authenticated(internal, REPLICA_MAGIC, SECRET).await;
    let response: FetchResponse = tokio::task::block_in_place(|| {
        raw_request_on(&mut stream, ApiKey::Fetch, 12, &fetch(12, 2))
    });
    let (code, bytes) = partition(&response);
    assert_eq!(code, 0);
    assert!(bytes > 0, "the replica fetch returned the records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_fetch_as_a_replica() {
    let (broker, _) = broker(&[]).await;
    let port = broker.port();
    tokio::task::block_in_place(|| {
        for (version, replica_id) in [(12, 2), (15, 2), (12, 1)] {
            let response: FetchResponse =
                raw_request(port, ApiKey::Fetch, version, &fetch(version, replica_id));
            assert_eq!(
                partition(&response),
                (ResponseError::TopicAuthorizationFailed.code(), 0),
                "v{version} as replica {replica_id}"
            );
        }
        // As a consumer it reads the records.
        let response: FetchResponse = raw_request(port, ApiKey::Fetch, 12, &fetch(12, -1));
        let (code, bytes) = partition(&response);
        assert_eq!(code, 0);
        assert!(bytes > 0);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_and_oversized_internal_frames_are_refused() {
    let (broker, internal) = broker(&[
        ("connections.max.idle.ms", "400"),
        ("internal.socket.request.max.bytes", "4096"),
    ])
    .await;
    let port = broker.port();

    // A long poll longer than the idle limit is in flight, not idle: it gets its answer.
    let mut parked = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    parked
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut long_poll = fetch(12, -1).with_max_wait_ms(3000).with_min_bytes(1 << 20);
    long_poll.topics[0].partitions[0].fetch_offset = 3;
    let started = Instant::now();
    let cpu_before = process_cpu();
    let response: FetchResponse =
        tokio::task::block_in_place(|| raw_request_on(&mut parked, ApiKey::Fetch, 12, &long_poll));
    let cpu = process_cpu() - cpu_before;
    assert_eq!(partition(&response).0, 0);
    assert!(started.elapsed() >= Duration::from_millis(2900));
    // Waiting out the idle timer while a request is in flight costs nothing: no spinning.
    assert!(
        cpu < Duration::from_millis(1500),
        "the process used {cpu:?} of CPU during a 3 s long poll"
    );

    // Then nothing moves on it, nor on a fresh client connection or an authenticated quorum
    // connection: all three are closed.
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut quorum = authenticated(internal, QUORUM_MAGIC, SECRET).await;
    tokio::task::block_in_place(|| {
        for (what, stream) in [
            ("the long-poll connection", &mut parked),
            ("a client connection", &mut client),
            ("a quorum connection", &mut quorum),
        ] {
            let (_, closed) = read_until_closed(stream, Duration::from_secs(5));
            assert!(closed, "{what} stayed open past connections.max.idle.ms");
        }
    });

    // Frames over internal.socket.request.max.bytes close the connection, whatever it carries.
    for magic in [REPLICA_MAGIC, QUORUM_MAGIC] {
        let mut stream = authenticated(internal, magic, SECRET).await;
        tokio::task::block_in_place(|| {
            use std::io::Write;
            stream.write_all(&100_000u32.to_be_bytes()).expect("size");
            stream.write_all(&[0u8; 64]).expect("bytes");
            let (got, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
            assert!(closed && got.is_empty(), "an oversized frame was taken");
        });
    }
}

/// A broker's pooled connections to its peers (markers, KIP-890 verification) outlive the
/// other side closing them: the peer closes internal connections idle past its
/// `connections.max.idle.ms`, and the next request on the pool still gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_peer_connections_outlive_the_other_side_closing_them() {
    let (_broker, internal) = broker(&[("connections.max.idle.ms", "400")]).await;
    // A pool that would keep connections for 5 minutes: the peer closes them long before.
    let pool = PeerPool::new(
        Some(ClusterSecret::new(SECRET)),
        REPLICA_MAGIC,
        1 << 20,
        Duration::from_secs(600),
    );
    let addr = format!("127.0.0.1:{internal}");
    let what = PeerRequest {
        api_key: ApiKey::ApiVersions,
        version: 0,
        client_id: "pool-test",
    };
    for round in 0..3 {
        let response: ApiVersionsResponse = pool
            .send(
                1,
                &addr,
                what,
                &ApiVersionsRequest::default(),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|e| panic!("request {round}: {e}"));
        assert_eq!(response.error_code, 0);
        assert!(response
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Fetch as i16));
        // Past the peer's idle limit: it closes the pooled connection.
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}
