//! Replica fetchers: how a follower keeps its copy of a partition up to date.
//!
//! One task per leader broker this broker follows anything from. Each round it sends the
//! leader one Fetch request (Kafka's own, v12, with this broker's `replica_id`) for every
//! partition it follows from it, each from its log end offset; the leader answers with the
//! batches after that offset (up to its log end, not its high watermark) and its high watermark.
//! The follower appends the batches as they are (offsets, leader epochs and CRCs as the leader
//! stored them) and takes the leader's high watermark, capped at its own log end. The fetch
//! offset of the next round is what tells the leader how far this copy goes.
//!
//! The connection goes to the leader's internal listener (its registered internal address),
//! opened with [`REPLICA_MAGIC`] and the `cluster.secret` handshake
//! ([`peer_auth`](crate::server::peer_auth)), then carrying ordinary Kafka frames; only such
//! connections may fetch as a replica. A fetcher with nothing
//! to follow idles; the set of partitions is read again every round, so metadata changes (a new
//! leader, a new topic) take effect at the next round without any bookkeeping here, and a
//! change to the partitions it follows cuts a long poll short (the new leader of a partition
//! that moved here waits for this follower before it acknowledges acks=all). A round whose
//! only errors are UNKNOWN_LEADER_EPOCH (the leader has not applied its own election yet) is
//! retried after 50 ms; any other failure waits `replica.fetch.backoff.ms`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{FetchedFromLeader, FollowerApply, Partition, ReplicaManager};
use crate::cluster::MetadataImage;
use crate::server::peer_auth::ClusterSecret;
use crate::server::peer_client::{self, Call};

/// The first bytes of a replica-fetch connection on the internal listener.
pub const REPLICA_MAGIC: &[u8; 4] = b"GKFK";
/// The Fetch version followers send.
const FETCH_VERSION: i16 = 12;
/// Kafka's FINAL_EPOCH: a full fetch, no fetch session.
const FINAL_EPOCH: i32 = -1;

/// What a fetcher needs to know beyond the partitions.
#[derive(Debug, Clone)]
pub struct FetcherSettings {
    /// `cluster.secret`, proven to the leader's internal listener.
    pub secret: ClusterSecret,
    /// `internal.socket.request.max.bytes`: the largest fetch response read.
    pub frame_max_bytes: usize,
    /// This broker's node id (the `replica_id` of its fetches).
    pub node_id: i32,
    /// `replica.fetch.max.bytes`: per partition.
    pub partition_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`: per response.
    pub response_max_bytes: i32,
    /// `replica.fetch.wait.max.ms`: the long poll.
    pub max_wait_ms: i32,
    /// `replica.fetch.backoff.ms`: the pause after a failed round.
    pub backoff: Duration,
}

/// The fetcher tasks of one broker, one per leader followed.
#[derive(Debug, Default)]
pub struct ReplicaFetchers {
    tasks: Mutex<HashMap<i32, JoinHandle<()>>>,
}

impl ReplicaFetchers {
    /// Starts a fetcher for every leader this broker follows a partition from and has none yet.
    pub fn ensure(
        &self,
        replicas: &Arc<ReplicaManager>,
        images: &watch::Receiver<Arc<MetadataImage>>,
        settings: &FetcherSettings,
        shutdown: &watch::Receiver<bool>,
    ) {
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        for leader in replicas.leaders_followed() {
            if tasks.contains_key(&leader) {
                continue;
            }
            tracing::debug!(leader, "starting a replica fetcher");
            let task = tokio::spawn(run(
                leader,
                replicas.clone(),
                images.clone(),
                settings.clone(),
                shutdown.clone(),
            ));
            tasks.insert(leader, task);
        }
    }

    /// Waits for every fetcher to stop (after the broker's shutdown signal).
    pub async fn join(&self) {
        let tasks: Vec<JoinHandle<()>> = match self.tasks.lock() {
            Ok(mut tasks) => tasks.drain().map(|(_, t)| t).collect(),
            Err(_) => Vec::new(),
        };
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Waits `d`, or less if the broker stops. Returns true when stopping.
async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

async fn run(
    leader: i32,
    replicas: Arc<ReplicaManager>,
    images: watch::Receiver<Arc<MetadataImage>>,
    settings: FetcherSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connection: Option<(String, TcpStream)> = None;
    let mut correlation_id = 0i32;
    // Responses land here; once a round's batches are appended and dropped, the next round
    // reuses the same memory instead of faulting in fresh pages.
    let mut received = BytesMut::new();
    let mut reconciled = replicas.subscribe_reconciled();
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Each with the leader epoch it is fetched at: the answer applies only while that holds.
        let partitions: Vec<(Arc<Partition>, i32)> = replicas
            .followed_from(leader)
            .into_iter()
            .map(|p| {
                let epoch = p.leader_epoch();
                (p, epoch)
            })
            .collect();
        if partitions.is_empty() {
            connection = None;
            if pause(Duration::from_millis(200), &mut shutdown).await {
                return;
            }
            continue;
        }
        let addr = images
            .borrow()
            .registrations
            .get(&leader)
            .map(|r| r.internal_addr.clone());
        let Some(addr) = addr else {
            if pause(settings.backoff, &mut shutdown).await {
                return;
            }
            continue;
        };
        if connection.as_ref().is_some_and(|(a, _)| *a != addr) {
            connection = None;
        }
        correlation_id = correlation_id.wrapping_add(1);
        let request = fetch_request(&partitions, &settings);
        let round = async {
            if connection.is_none() {
                let stream = peer_client::connect(&addr, &settings.secret, REPLICA_MAGIC).await?;
                connection = Some((addr.clone(), stream));
            }
            match connection.as_mut() {
                Some((_, stream)) => {
                    peer_client::exchange::<FetchRequest, FetchResponse>(
                        stream,
                        Call {
                            api_key: ApiKey::Fetch,
                            version: FETCH_VERSION,
                            correlation_id,
                            client_id: "gregor-replica-fetcher",
                        },
                        &request,
                        &mut received,
                        settings.frame_max_bytes,
                    )
                    .await
                }
                None => Err(std::io::Error::other("no connection")),
            }
        };
        let limit = Duration::from_millis(u64::try_from(settings.max_wait_ms.max(0)).unwrap_or(0))
            + Duration::from_secs(10);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(limit, round) => outcome,
            _ = shutdown.changed() => return,
            () = followed_changed(&mut reconciled, &replicas, leader, &partitions) => {
                // A partition moved to this leader (or away, or to a new epoch) during the
                // long poll: its new leader's acks=all producers wait for this follower, so
                // the round starts over with it now (the answer in flight is dropped with the
                // connection; the next fetch asks again from the log end).
                tracing::debug!(leader, "followed partitions changed; fetching again at once");
                connection = None;
                continue;
            }
        };
        let response = match outcome {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                tracing::debug!(leader, %addr, error = %e, "replica fetch failed");
                connection = None;
                if pause(settings.backoff, &mut shutdown).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                tracing::debug!(leader, %addr, "replica fetch timed out");
                connection = None;
                continue;
            }
        };
        let (mut outcome, flushes) = apply(leader, &partitions, response);
        // flush.messages reached: durable before the next fetch reports these offsets held.
        for (partition, offset) in flushes {
            if let Err(e) = partition.flush_to(offset).await {
                tracing::warn!(leader, topic = partition.topic(), partition = partition.index(), error = %e, "flushing replicated batches failed");
                outcome = Round::Failed;
            }
        }
        let wait = match outcome {
            Round::Healthy => continue,
            // The leader has not applied the metadata that made it leader yet; it will within
            // a quorum heartbeat or two.
            Round::LeaderCatchingUp => settings.backoff.min(LEADER_CATCH_UP_PAUSE),
            Round::Failed => settings.backoff,
        };
        if pause(wait, &mut shutdown).await {
            return;
        }
    }
}

/// Resolves once the partitions this broker follows from `leader` (or their leader epochs)
/// differ from `fetching`; pending while they stay the same.
async fn followed_changed(
    reconciled: &mut watch::Receiver<u64>,
    replicas: &ReplicaManager,
    leader: i32,
    fetching: &[(Arc<Partition>, i32)],
) {
    loop {
        if reconciled.changed().await.is_err() {
            return std::future::pending().await;
        }
        let now = replicas.followed_from(leader);
        let same = now.len() == fetching.len()
            && now.iter().all(|p| {
                fetching
                    .iter()
                    .any(|(f, epoch)| Arc::ptr_eq(f, p) && *epoch == p.leader_epoch())
            });
        if !same {
            return;
        }
    }
}

/// The pause after a round whose only errors were UNKNOWN_LEADER_EPOCH.
const LEADER_CATCH_UP_PAUSE: Duration = Duration::from_millis(50);

/// How a fetch round went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Every partition answered.
    Healthy,
    /// Only UNKNOWN_LEADER_EPOCH errors: the leader lags this follower's metadata.
    LeaderCatchingUp,
    /// Anything else: back off `replica.fetch.backoff.ms`.
    Failed,
}

fn fetch_request(partitions: &[(Arc<Partition>, i32)], settings: &FetcherSettings) -> FetchRequest {
    let mut by_topic: Vec<FetchTopic> = Vec::new();
    for (p, epoch) in partitions {
        let entry = FetchPartition::default()
            .with_partition(p.index())
            .with_current_leader_epoch(*epoch)
            .with_fetch_offset(p.log().log_end_offset())
            .with_last_fetched_epoch(p.log().latest_epoch().unwrap_or(-1))
            .with_log_start_offset(p.log().log_start_offset())
            .with_partition_max_bytes(settings.partition_max_bytes);
        match by_topic.iter_mut().find(|t| t.topic.as_str() == p.topic()) {
            Some(topic) => topic.partitions.push(entry),
            None => by_topic.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(p.topic().to_string())))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(settings.node_id))
        .with_max_wait_ms(settings.max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(settings.response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(FINAL_EPOCH)
        .with_topics(by_topic)
}

/// Appends what the leader sent. Returns false when something went wrong (the caller backs
/// off before the next round), and the partitions to flush (and to which offset).
fn apply(
    leader: i32,
    partitions: &[(Arc<Partition>, i32)],
    response: FetchResponse,
) -> (Round, Vec<(Arc<Partition>, i64)>) {
    let mut flushes = Vec::new();
    if response.error_code != 0 {
        tracing::debug!(leader, code = response.error_code, "replica fetch refused");
        return (Round::Failed, flushes);
    }
    let mut round = Round::Healthy;
    for topic in response.responses {
        for data in topic.partitions {
            let Some((partition, epoch)) = partitions.iter().find(|(p, _)| {
                p.topic() == topic.topic.as_str() && p.index() == data.partition_index
            }) else {
                continue;
            };
            let fetched = if data.error_code == ResponseError::OffsetOutOfRange.code() {
                // Retention at the leader passed this copy (or it is beyond the leader's end):
                // the partition recovers on its own (see `Partition::apply_from_leader`).
                Some(FetchedFromLeader::OutOfRange {
                    log_start_offset: data.log_start_offset,
                    high_watermark: data.high_watermark,
                })
            } else {
                None
            };
            if data.error_code != 0 && fetched.is_none() {
                // NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH...: the metadata moves this
                // partition to another fetcher or makes this broker its leader.
                tracing::debug!(
                    leader,
                    topic = partition.topic(),
                    partition = data.partition_index,
                    code = data.error_code,
                    "replica fetch error"
                );
                round = match round {
                    Round::Healthy | Round::LeaderCatchingUp
                        if data.error_code == ResponseError::UnknownLeaderEpoch.code() =>
                    {
                        Round::LeaderCatchingUp
                    }
                    _ => Round::Failed,
                };
                continue;
            }
            // Kafka's encoding of "no divergence" is (-1, -1).
            let fetched = if let Some(fetched) = fetched {
                fetched
            } else if data.diverging_epoch.end_offset >= 0 || data.diverging_epoch.epoch >= 0 {
                FetchedFromLeader::Diverging {
                    epoch: data.diverging_epoch.epoch,
                    end_offset: data.diverging_epoch.end_offset,
                }
            } else {
                FetchedFromLeader::Records {
                    records: data.records.unwrap_or_default(),
                    high_watermark: data.high_watermark,
                }
            };
            match partition.apply_from_leader(leader, *epoch, fetched) {
                Ok(FollowerApply::Applied { flush_to }) => {
                    if let Some(offset) = flush_to {
                        flushes.push((partition.clone(), offset));
                    }
                }
                Ok(FollowerApply::Stale) => tracing::debug!(
                    leader,
                    topic = partition.topic(),
                    partition = data.partition_index,
                    "dropped a fetch answer from a leadership that is over"
                ),
                Err(e) => {
                    tracing::warn!(leader, topic = partition.topic(), partition = data.partition_index, error = %e, "applying fetched batches failed");
                    round = Round::Failed;
                }
            }
        }
    }
    (round, flushes)
}
