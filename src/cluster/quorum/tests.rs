//! Quorum tests: openraft's storage conformance suite on the file log and state machine, and
//! three voters on the in-memory network (tokio's paused clock, so elections and timeouts run
//! in virtual time) through leader loss, partitions, restarts, snapshots and a seeded random
//! schedule of cut links; then three voters over real TCP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use uuid::Uuid;

use super::log_store::FileLogStore;
use super::network::{serve_connection, Limits, MemoryNetwork, TcpTransport, Transport, MAGIC};
use super::state_machine::MetadataStateMachine;
use super::*;
use crate::cluster::metadata::{BrokerInfo, BrokerRegistration, PartitionInfo, TopicInfo};
use crate::server::peer_auth;
use crate::testing::SplitMix;

// ------------------------------------------------------------------------------ storage suite

struct Builder;

impl openraft::testing::StoreBuilder<types::TypeConfig, FileLogStore, MetadataStateMachine, TempDir>
    for Builder
{
    async fn build(
        &self,
    ) -> Result<(TempDir, FileLogStore, MetadataStateMachine), openraft::StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let log = FileLogStore::open(dir.path()).unwrap();
        let sm = MetadataStateMachine::open(dir.path(), "test").unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    openraft::testing::Suite::test_all(Builder).unwrap();
}

#[tokio::test]
async fn log_store_cuts_a_torn_tail_and_keeps_vote_and_entries() {
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftLogReader, Vote};

    let dir = tempfile::tempdir().unwrap();
    let entry = |index: u64| openraft::Entry::<types::TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(MetadataCommand::FenceBroker {
            node_id: index as i32,
        }),
    };
    {
        let mut log = FileLogStore::open(dir.path()).unwrap();
        log.blocking_append((1..=5).map(entry)).await.unwrap();
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 5))
            .await
            .unwrap();
    }
    // A crash mid-append leaves half a frame behind.
    let path = dir.path().join("raft.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&[0, 0, 1, 0, 9, 9, 9]);
    std::fs::write(&path, &bytes).unwrap();

    let mut log = FileLogStore::open(dir.path()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, whole);
    let entries = log.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    // Appends go after the cut and survive another reopen.
    log.blocking_append([entry(5)]).await.unwrap();
    drop(log);
    let mut log = FileLogStore::open(dir.path()).unwrap();
    assert_eq!(log.try_get_log_entries(0..100).await.unwrap().len(), 5);
}

// ------------------------------------------------------------------------------ in-memory cluster

const VOTERS: [i32; 3] = [1, 2, 3];

struct Cluster {
    net: MemoryNetwork,
    root: TempDir,
    nodes: BTreeMap<i32, Option<Arc<Quorum>>>,
    snapshot_every: u64,
    propose_timeout: Duration,
}

impl Cluster {
    async fn start(snapshot_every: u64) -> Cluster {
        let mut cluster = Cluster {
            net: MemoryNetwork::new(),
            root: tempfile::tempdir().unwrap(),
            nodes: BTreeMap::new(),
            snapshot_every,
            propose_timeout: Duration::from_secs(5),
        };
        for id in VOTERS {
            cluster.up(id).await;
        }
        cluster
    }

    fn config(&self, id: i32) -> QuorumConfig {
        let voters = VOTERS.iter().map(|v| (*v, format!("node-{v}"))).collect();
        let mut config = QuorumConfig::new(
            id,
            voters,
            self.root.path().join(format!("n{id}")),
            "test-cluster",
        );
        config.heartbeat_interval = Duration::from_millis(50);
        config.election_timeout = Duration::from_millis(300);
        // Voters' own entry; where an observer (an id outside VOTERS) is reached.
        config.address = format!("node-{id}");
        config.snapshot_every = self.snapshot_every;
        config.propose_timeout = self.propose_timeout;
        config
    }

    async fn up(&mut self, id: i32) {
        let transport: Arc<dyn Transport> = Arc::new(self.net.clone());
        let quorum = Quorum::start(self.config(id), transport).await.unwrap();
        self.net.attach(raft_id(id).unwrap(), quorum.handler());
        self.nodes.insert(id, Some(quorum));
    }

    async fn down(&mut self, id: i32) {
        self.net.detach(raft_id(id).unwrap());
        if let Some(Some(q)) = self.nodes.insert(id, None) {
            q.shutdown().await;
        }
    }

    fn node(&self, id: i32) -> &Arc<Quorum> {
        self.nodes[&id].as_ref().unwrap()
    }

    fn live(&self) -> Vec<&Arc<Quorum>> {
        self.nodes.values().flatten().collect()
    }

    async fn leader(&self) -> i32 {
        for _ in 0..200 {
            let leaders: Vec<Option<i32>> = self.live().iter().map(|q| q.leader()).collect();
            if let Some(Some(l)) = leaders.first() {
                if leaders.iter().all(|x| *x == Some(*l)) && self.nodes[l].is_some() {
                    return *l;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no agreed leader");
    }

    /// Waits until every live voter has applied the same index, and returns their images.
    async fn converged(&self) -> Arc<MetadataImage> {
        for _ in 0..400 {
            let applied: Vec<Option<u64>> = self.live().iter().map(|q| q.applied_index()).collect();
            if applied.iter().all(|a| *a == applied[0]) {
                let images: Vec<String> = self
                    .live()
                    .iter()
                    .map(|q| serde_json::to_string(&*q.image()).unwrap())
                    .collect();
                if images.iter().all(|i| *i == images[0]) {
                    return self.live()[0].image();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("voters did not converge");
    }
}

fn register(node_id: i32) -> MetadataCommand {
    MetadataCommand::RegisterBroker {
        broker: BrokerInfo {
            node_id,
            host: "127.0.0.1".into(),
            port: 9091 + node_id as u16,
            rack: None,
        },
        registration: BrokerRegistration {
            incarnation: Uuid::new_v4(),
            internal_addr: format!("node-{node_id}"),
            fenced: false,
            partitions_max: None,
            offline_replicas: Default::default(),
            shutting_down: false,
        },
    }
}

fn create_topic(name: &str) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        topic: TopicInfo {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions: vec![PartitionInfo {
                index: 0,
                leader: 1,
                leader_epoch: 0,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                partition_epoch: 0,
            }],
            configs: BTreeMap::new(),
            internal: false,
        },
    }
}

#[tokio::test(start_paused = true)]
async fn three_voters_elect_one_leader_and_any_voter_can_propose() {
    let cluster = Cluster::start(1000).await;
    let leader = cluster.leader().await;
    let follower = VOTERS.into_iter().find(|v| *v != leader).unwrap();
    for id in VOTERS {
        let committed = cluster.node(follower).propose(register(id)).await.unwrap();
        assert_eq!(committed.applied, Applied::Done);
    }
    // Read-your-writes on the proposing follower, without waiting for anything else.
    assert_eq!(cluster.node(follower).image().brokers.len(), 3);
    let first = cluster
        .node(follower)
        .propose(create_topic("orders"))
        .await
        .unwrap();
    assert_eq!(first.applied, Applied::Done);
    let again = cluster
        .node(leader)
        .propose(create_topic("orders"))
        .await
        .unwrap();
    assert!(matches!(
        again.applied,
        Applied::Rejected(Rejection::TopicAlreadyExists(_))
    ));
    let image = cluster.converged().await;
    assert_eq!(image.controller_id, leader);
    assert_eq!(image.topics.len(), 1);
    assert_eq!(image.brokers.keys().copied().collect::<Vec<_>>(), VOTERS);
}

/// A broker beyond the voters joins as an observer: it gets the log (a snapshot first, since
/// the log was compacted), proposes through the leader, never votes or leads, and after a
/// restart catches up again without asking to join.
#[tokio::test(start_paused = true)]
async fn an_observer_receives_the_log_and_proposes_without_voting() {
    let mut cluster = Cluster::start(20).await;
    let leader = cluster.leader().await;
    for t in 0..30 {
        let c = cluster
            .node(leader)
            .propose(create_topic(&format!("t{t}")))
            .await
            .unwrap();
        assert_eq!(c.applied, Applied::Done);
    }
    cluster.up(4).await;
    let committed = cluster.node(4).propose(register(4)).await.unwrap();
    assert_eq!(committed.applied, Applied::Done);
    let image = cluster.converged().await;
    assert_eq!(image.topics.len(), 30);
    assert!(image.brokers.contains_key(&4));
    let membership = cluster
        .node(4)
        .raft
        .metrics()
        .borrow()
        .membership_config
        .clone();
    assert_eq!(
        membership.membership().voter_ids().collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        membership.membership().learner_ids().collect::<Vec<_>>(),
        vec![4]
    );
    // Losing the leader elects another voter, never the observer.
    cluster.down(leader).await;
    let new = cluster.leader().await;
    assert!(VOTERS.contains(&new), "leader {new}");
    cluster.down(4).await;
    cluster
        .node(new)
        .propose(create_topic("while-the-observer-was-down"))
        .await
        .unwrap();
    cluster.up(4).await;
    cluster.up(leader).await;
    let image = cluster.converged().await;
    assert_eq!(image.topics.len(), 31);
    assert!(VOTERS.contains(&cluster.leader().await));
}

#[tokio::test(start_paused = true)]
async fn losing_the_leader_elects_another_and_the_old_one_catches_up_on_restart() {
    let mut cluster = Cluster::start(1000).await;
    let old = cluster.leader().await;
    for id in VOTERS {
        cluster.node(old).propose(register(id)).await.unwrap();
    }
    cluster.down(old).await;
    let new = cluster.leader().await;
    assert_ne!(new, old);
    for t in 0..5 {
        let c = cluster
            .node(new)
            .propose(create_topic(&format!("t{t}")))
            .await
            .unwrap();
        assert_eq!(c.applied, Applied::Done);
    }
    cluster.up(old).await;
    let image = cluster.converged().await;
    assert_eq!(image.topics.len(), 5);
    assert_eq!(image.brokers.len(), 3);
    assert_eq!(image.controller_id, cluster.leader().await);
}

#[tokio::test(start_paused = true)]
async fn an_isolated_leader_cannot_commit_and_the_majority_carries_on() {
    let mut cluster = Cluster::start(1000).await;
    cluster.propose_timeout = Duration::from_secs(2);
    let old = cluster.leader().await;
    cluster.node(old).propose(register(old)).await.unwrap();
    let others: Vec<u64> = VOTERS
        .iter()
        .filter(|v| **v != old)
        .map(|v| raft_id(*v).unwrap())
        .collect();
    cluster.net.isolate(raft_id(old).unwrap(), &others);
    // The old leader's proposal cannot reach a majority. openraft keeps the leader until it
    // learns of a newer term, so the write waits; it must not be applied anywhere.
    let stuck = {
        let q = cluster.node(old).clone();
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(3), q.propose(create_topic("minority"))).await
        })
    };
    // The majority elects a leader of its own and commits.
    let majority: Vec<i32> = VOTERS.into_iter().filter(|v| *v != old).collect();
    let mut new = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let l = cluster.node(majority[0]).leader();
        if l.is_some() && l != Some(old) && cluster.node(majority[1]).leader() == l {
            new = l;
            break;
        }
    }
    let new = new.expect("the majority elects a leader");
    let c = cluster
        .node(majority[1])
        .propose(create_topic("majority"))
        .await
        .unwrap();
    assert_eq!(c.applied, Applied::Done);
    let _ = stuck.await;
    cluster.net.heal();
    let image = cluster.converged().await;
    assert!(image.topic("majority").is_some());
    assert!(
        image.topic("minority").is_none(),
        "an uncommitted write surfaced"
    );
    assert_eq!(cluster.leader().await, new);
}

#[tokio::test(start_paused = true)]
async fn snapshots_bound_the_log_and_bring_a_lagging_voter_up_to_date() {
    let mut cluster = Cluster::start(20).await;
    let leader = cluster.leader().await;
    let lagging = VOTERS.into_iter().find(|v| *v != leader).unwrap();
    cluster.node(leader).propose(register(1)).await.unwrap();
    cluster.down(lagging).await;
    for t in 0..120 {
        cluster
            .node(leader)
            .propose(create_topic(&format!("t{t}")))
            .await
            .unwrap();
    }
    let dir = cluster.config(leader).dir;
    assert!(dir.join("snapshot.json").exists(), "no snapshot was built");
    // The lagging voter's log ends before the leader's log begins: it needs the snapshot.
    cluster.up(lagging).await;
    let image = cluster.converged().await;
    assert_eq!(image.topics.len(), 120);
    assert!(cluster.config(lagging).dir.join("snapshot.json").exists());

    // Everyone restarts from disk: snapshot plus the log after it.
    for id in VOTERS {
        cluster.down(id).await;
    }
    for id in VOTERS {
        cluster.up(id).await;
    }
    let leader = cluster.leader().await;
    cluster
        .node(leader)
        .propose(create_topic("after-restart"))
        .await
        .unwrap();
    let image = cluster.converged().await;
    assert_eq!(image.topics.len(), 121);
    assert_eq!(image.brokers.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_barrier_waits_until_a_lagging_voter_has_applied_what_was_committed() {
    let cluster = Cluster::start(1000).await;
    let leader = cluster.leader().await;
    let lagging = VOTERS.into_iter().find(|v| *v != leader).unwrap();
    // The leader's appends stop reaching the lagging voter, which can still ask the leader;
    // the third voter makes the quorum.
    cluster
        .net
        .hold_appends(raft_id(leader).unwrap(), raft_id(lagging).unwrap());
    cluster
        .node(leader)
        .propose(create_topic("fresh"))
        .await
        .unwrap();
    assert!(cluster.node(lagging).image().topic("fresh").is_none());
    let net = cluster.net.clone();
    let heal = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        net.heal();
    });
    cluster.node(lagging).barrier().await.unwrap();
    assert!(
        cluster.node(lagging).image().topic("fresh").is_some(),
        "the barrier returned before the committed topic was applied"
    );
    heal.await.unwrap();
}

/// Links are cut and healed at random while every voter keeps asking for producer-id blocks.
/// Whatever the schedule, every block a caller was given is unique, and after healing the
/// voters agree on an image that accounts for every block handed out.
#[tokio::test(start_paused = true)]
async fn seeded_random_partitions_never_hand_out_a_block_twice() {
    for seed in [1u64, 7, 42] {
        let mut rng = SplitMix(seed);
        let mut cluster = Cluster::start(25).await;
        cluster.propose_timeout = Duration::from_millis(1500);
        let leader = cluster.leader().await;
        for id in VOTERS {
            cluster.node(leader).propose(register(id)).await.unwrap();
        }
        cluster.converged().await;
        let mut granted = Vec::new();
        for _step in 0..40 {
            match rng.below(4) {
                0 => {
                    let a = VOTERS[rng.below(3) as usize];
                    let b = VOTERS[rng.below(3) as usize];
                    if a != b {
                        cluster.net.cut(raft_id(a).unwrap(), raft_id(b).unwrap());
                    }
                }
                1 => cluster.net.heal(),
                _ => {}
            }
            let node = VOTERS[rng.below(3) as usize];
            let q = cluster.node(node).clone();
            let ask = MetadataCommand::AllocateProducerIds {
                node_id: node,
                count: 10,
            };
            if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(2), q.propose(ask)).await {
                match c.applied {
                    Applied::ProducerIds { first, count } => granted.push((first, count)),
                    other => panic!("seed {seed}: unexpected outcome {other:?}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        }
        cluster.net.heal();
        let leader = cluster.leader().await;
        cluster.node(leader).propose(register(1)).await.unwrap();
        let image = cluster.converged().await;
        let mut firsts: Vec<i64> = granted.iter().map(|(f, _)| *f).collect();
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(
            firsts.len(),
            granted.len(),
            "seed {seed}: a block was handed out twice"
        );
        assert!(
            !granted.is_empty(),
            "seed {seed}: nothing was granted at all"
        );
        for (first, count) in &granted {
            assert!(
                first + i64::from(*count) <= image.next_producer_id,
                "seed {seed}"
            );
        }
        for id in VOTERS {
            cluster.down(id).await;
        }
    }
}

// ------------------------------------------------------------------------------ TCP

#[tokio::test]
async fn three_voters_over_tcp_and_a_malformed_frame_only_closes_its_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let root = tempfile::tempdir().unwrap();
    let mut listeners = BTreeMap::new();
    for id in VOTERS {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listeners.insert(id, l);
    }
    let voters: BTreeMap<i32, String> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
        .collect();
    let secret = peer_auth::ClusterSecret::new("quorum-test-secret-0123");
    let limits = Limits {
        frame_max_bytes: 64 << 20,
        idle: Duration::from_secs(600),
    };
    let mut quorums = Vec::new();
    for (id, listener) in listeners {
        let mut config = QuorumConfig::new(
            id,
            voters.clone(),
            root.path().join(format!("n{id}")),
            "tcp",
        );
        config.heartbeat_interval = Duration::from_millis(50);
        config.election_timeout = Duration::from_millis(300);
        let transport = TcpTransport::new(secret.clone(), 64 << 20);
        let q = Quorum::start(config, Arc::new(transport)).await.unwrap();
        let handler = q.handler();
        let secret = secret.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let secret = secret.clone();
                tokio::spawn(async move {
                    let mut magic = [0u8; 4];
                    if stream.read_exact(&mut magic).await.is_ok()
                        && &magic == MAGIC
                        && peer_auth::accept(&mut stream, &secret, MAGIC).await.is_ok()
                    {
                        serve_connection(stream, handler, limits).await;
                    }
                });
            }
        });
        quorums.push(q);
    }
    let leader = quorums[0]
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(VOTERS.contains(&leader));
    // A peer without the secret: the handshake fails and the connection is closed before any
    // Raft message is read.
    let mut outsider = tokio::net::TcpStream::connect(&voters[&1]).await.unwrap();
    outsider.write_all(MAGIC).await.unwrap();
    let wrong = peer_auth::ClusterSecret::new("not-the-cluster-secret");
    assert!(peer_auth::connect(&mut outsider, &wrong, MAGIC)
        .await
        .is_err());
    // A peer with the secret sending a frame that is not a quorum message: closed too.
    let mut bad = tokio::net::TcpStream::connect(&voters[&1]).await.unwrap();
    bad.write_all(MAGIC).await.unwrap();
    peer_auth::connect(&mut bad, &secret, MAGIC).await.unwrap();
    bad.write_all(&5u32.to_be_bytes()).await.unwrap();
    bad.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        bad.read(&mut buf).await.unwrap(),
        0,
        "the connection is closed"
    );
    for q in &quorums {
        let c = q.propose(register(q.node_id())).await.unwrap();
        assert_eq!(c.applied, Applied::Done);
    }
    for _ in 0..100 {
        if quorums.iter().all(|q| q.image().brokers.len() == 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for q in &quorums {
        assert_eq!(q.image().brokers.len(), 3);
        assert_eq!(q.image().controller_id, leader);
        q.shutdown().await;
    }
}
