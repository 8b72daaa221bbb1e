//! Deterministic simulation of ISR replication: three brokers' copies of one partition, a
//! controller, producers at acks=all and a consumer, driven by a seeded schedule on a manual
//! clock over an in-memory network that delays, drops and partitions messages.
//!
//! The parts under test are the real ones: [`Partition`] on real segment logs (leader appends,
//! [`Partition::serve_follower_fetch`], [`Partition::apply_from_leader`], the ISR rules, the
//! high watermark, [`Partition::replication_outcome`] for acks=all) and the controller's state
//! machine ([`apply_command`]: fencing, elections inside the ISR, partition-epoch fencing of
//! ISR changes). What is modelled: the network, the clock, the brokers' heartbeats and
//! metadata propagation (a broker sees the controller's image only while it can reach it, and
//! only when the schedule says so; at times a broker's metadata is held back, the leader's
//! right after its ISR grew), process crashes (the log files survive, as with a `kill -9`) and
//! restarts (sometimes with an emptied data dir; a restarted broker registers as a new
//! incarnation through the controller's real rule and serves nothing before), and elections
//! that move the leader while the old one still thinks it leads: preferred ones, and at the
//! worst moment, right after an ISR expansion, to the member just added or by fencing the
//! leader.
//!
//! What must hold, whatever the schedule: every acknowledged batch is, at the end, at its
//! offset in every copy; every batch a consumer read below a high watermark is too; once the
//! faults stop, the copies converge to byte-identical logs; a high watermark never passes its
//! log end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use uuid::Uuid;

use super::partition::Assignment;
use super::{FetchedFromLeader, FollowerApply, FollowerFetch, IsrNotMade, Partition};
use crate::cluster::decisions::{fencing_changes, preferred_leader_changes, registration_commands};
use crate::cluster::metadata::{BrokerInfo, BrokerRegistration, PartitionInfo, TopicInfo};
use crate::cluster::quorum::state_machine::apply_command;
use crate::cluster::quorum::{Applied, MetadataCommand};
use crate::cluster::{IsrChangeError, MetadataImage};
use crate::log::batch::testing::batch;
use crate::log::{LogConfig, PartitionLog};
use crate::testing::SplitMix;

const NODES: [i32; 3] = [1, 2, 3];
/// The controller's end of a link.
const CONTROLLER: i32 = 0;
const TOPIC: &str = "sim";
/// `broker.session.timeout.ms`.
const SESSION_MS: i64 = 600;
/// `replica.lag.time.max.ms`.
const LAG_MS: i64 = 300;
const MIN_INSYNC: usize = 2;
/// A produce not answered by then is given up (REQUEST_TIMED_OUT).
const PRODUCE_TIMEOUT_MS: i64 = 2_000;
/// A fetch not answered by then is sent again.
const FETCH_TIMEOUT_MS: i64 = 200;
/// `leader.imbalance.check.interval.seconds`, scaled down.
const PREFERRED_ELECTION_MS: i64 = 1_000;

struct Node {
    id: i32,
    dir: PathBuf,
    /// None while the process is down.
    partition: Option<Arc<Partition>>,
    /// The index of the newest controller image this broker has applied.
    image_version: usize,
    /// The fetch this follower waits for: its id and when it was sent.
    fetch: Option<(u64, i64)>,
    down_since: i64,
    /// Until then this broker applies no metadata (a slow metadata listener: it keeps acting
    /// on its old view of leader and ISR).
    metadata_held_until: i64,
    /// Whether this process has registered (a restarted broker hosts its partitions only once
    /// its registration, which fences its previous incarnation, is applied).
    registered: bool,
    /// In controlled shutdown: the process stops then (it keeps fetching until it does).
    stops_at: Option<i64>,
}

enum Message {
    Fetch {
        id: u64,
        follower: i32,
        offset: i64,
        last_epoch: i32,
        leader_epoch: i32,
        max_bytes: usize,
    },
    Answer {
        id: u64,
        leader: i32,
        leader_epoch: i32,
        /// None: refused (not leader, fenced epoch...).
        fetched: Option<FetchedFromLeader>,
    },
}

struct InFlight {
    at: i64,
    from: i32,
    to: i32,
    message: Message,
}

/// A produce waiting for acks=all.
struct Pending {
    node: i32,
    end: i64,
    epoch: i32,
    base_offset: i64,
    id: i64,
    since: i64,
}

#[derive(Default, Debug)]
struct Stats {
    steps: u64,
    produced: u64,
    acked: u64,
    not_acked: u64,
    leader_changes: u64,
    crashes: u64,
    cuts: u64,
    dropped_stale_answers: u64,
    truncations: u64,
    /// ISR expansions committed while the leader's metadata was held back.
    expansions_held: u64,
    /// Elections right after an ISR expansion: to the member just added, or by fencing the
    /// leader.
    worst_moment_elections: u64,
    /// Restarts with an emptied data dir.
    wipes: u64,
    /// ISR changes refused on their own epoch (a member fenced since the leader looked), whose
    /// pending state the leader then dropped.
    isr_refusals: u64,
    /// Controlled shutdowns (followed by the process stopping).
    controlled_shutdowns: u64,
}

struct Sim {
    rng: SplitMix,
    now: i64,
    topic_id: Uuid,
    /// Every image the controller has had; the last is the current one.
    images: Vec<MetadataImage>,
    nodes: Vec<Node>,
    network: Vec<InFlight>,
    cut: BTreeSet<(i32, i32)>,
    last_heartbeat: BTreeMap<i32, i64>,
    last_preferred_election: i64,
    /// The latest ISR expansion: when it committed, the members it added, and the leader
    /// that asked for it.
    last_expansion: Option<(i64, Vec<i32>, i32)>,
    pending: Vec<Pending>,
    next_fetch_id: u64,
    next_record_id: i64,
    /// Acknowledged batches: base offset -> record id.
    acked: BTreeMap<i64, i64>,
    /// Batches a consumer read below a high watermark: base offset -> record id.
    seen: BTreeMap<i64, i64>,
    consumer_position: i64,
    stats: Stats,
    _tmp: tempfile::TempDir,
}

/// (base offset, next offset, record id) of every batch in `bytes` (the id is the batch's
/// timestamp).
fn batch_ids(mut bytes: Bytes) -> Vec<(i64, i64, i64)> {
    let mut out = Vec::new();
    while bytes.len() >= 61 {
        let base = (&bytes[0..8]).get_i64();
        let len = (&bytes[8..12]).get_i32() as usize;
        let last_delta = (&bytes[23..27]).get_i32();
        let max_timestamp = (&bytes[35..43]).get_i64();
        out.push((base, base + i64::from(last_delta) + 1, max_timestamp));
        bytes.advance(12 + len);
    }
    out
}

impl Sim {
    fn new(seed: u64, stats: Stats) -> Sim {
        let tmp = tempfile::tempdir().expect("tempdir");
        let topic_id = Uuid::from_u64_pair(seed, 7);
        let mut image = MetadataImage::default();
        for id in NODES {
            let applied = apply_command(
                &mut image,
                &MetadataCommand::RegisterBroker {
                    broker: BrokerInfo {
                        node_id: id,
                        host: "sim".into(),
                        port: 9092,
                        rack: None,
                    },
                    registration: BrokerRegistration {
                        incarnation: Uuid::from_u64_pair(seed, id as u64),
                        internal_addr: format!("sim:{id}"),
                        fenced: false,
                        partitions_max: None,
                        offline_replicas: Default::default(),
                        shutting_down: false,
                    },
                },
            );
            assert_eq!(applied, Applied::Done);
        }
        let applied = apply_command(
            &mut image,
            &MetadataCommand::CreateTopic {
                topic: TopicInfo {
                    name: TOPIC.into(),
                    id: topic_id,
                    partitions: vec![PartitionInfo {
                        index: 0,
                        leader: 1,
                        leader_epoch: 0,
                        replicas: NODES.to_vec(),
                        isr: NODES.to_vec(),
                        partition_epoch: 0,
                    }],
                    configs: BTreeMap::new(),
                    internal: false,
                },
            },
        );
        assert_eq!(applied, Applied::Done);
        let nodes = NODES
            .iter()
            .map(|&id| Node {
                id,
                dir: tmp.path().join(format!("node-{id}")),
                partition: None,
                image_version: 0,
                fetch: None,
                down_since: 0,
                metadata_held_until: 0,
                stops_at: None,
                registered: true,
            })
            .collect();
        let mut sim = Sim {
            rng: SplitMix(seed),
            now: 1_000,
            topic_id,
            images: vec![image],
            nodes,
            network: Vec::new(),
            cut: BTreeSet::new(),
            last_heartbeat: NODES.iter().map(|&id| (id, 1_000)).collect(),
            last_preferred_election: 1_000,
            last_expansion: None,
            pending: Vec::new(),
            next_fetch_id: 0,
            next_record_id: 1,
            acked: BTreeMap::new(),
            seen: BTreeMap::new(),
            consumer_position: 0,
            stats,
            _tmp: tmp,
        };
        for i in 0..sim.nodes.len() {
            sim.start(i);
            let info = Self::info(sim.image()).clone();
            if let Some(p) = &sim.nodes[i].partition {
                p.set_assignment(assignment(&info), sim.now);
            }
        }
        sim
    }

    fn image(&self) -> &MetadataImage {
        self.images.last().expect("an image")
    }

    fn info(image: &MetadataImage) -> &PartitionInfo {
        &image.topic(TOPIC).expect("the topic").partitions[0]
    }

    fn linked(&self, a: i32, b: i32) -> bool {
        !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a))
    }

    /// Opens the node's log (recovering it from its files) as its broker would on start: it
    /// neither leads nor follows (no leader) until it has registered and applied metadata.
    fn start(&mut self, i: usize) {
        let node = &self.nodes[i];
        let log = PartitionLog::open(node.dir.clone(), LogConfig::default(), 0).expect("open");
        let partition = Arc::new(Partition::new(
            TOPIC.into(),
            self.topic_id,
            0,
            node.id,
            Arc::new(log),
            -1,
            -1,
        ));
        self.nodes[i].partition = Some(partition);
        self.nodes[i].fetch = None;
        self.nodes[i].registered = false;
        self.nodes[i].stops_at = None;
    }

    /// Restarted brokers register as a new incarnation once they reach the controller, with
    /// the controller's real rules (a previous incarnation is fenced first).
    fn register_restarted(&mut self) {
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            if self.nodes[i].partition.is_none()
                || self.nodes[i].registered
                || !self.linked(id, CONTROLLER)
            {
                continue;
            }
            let Some(broker) = self.image().brokers.get(&id).cloned() else {
                continue;
            };
            let registration = BrokerRegistration {
                incarnation: Uuid::from_u64_pair(self.now as u64, id as u64),
                internal_addr: format!("sim:{id}"),
                fenced: false,
                partitions_max: None,
                offline_replicas: Default::default(),
                shutting_down: false,
            };
            // Every restart here follows a crash: never a clean stop.
            for command in registration_commands(self.image(), broker, registration, false) {
                self.propose(command);
            }
            self.nodes[i].registered = true;
            self.last_heartbeat.insert(id, self.now);
        }
    }

    /// The controller applies a command and publishes the image if it changed anything.
    fn propose(&mut self, command: MetadataCommand) -> bool {
        !matches!(self.propose_applied(command), Applied::Rejected(_))
    }

    fn propose_applied(&mut self, command: MetadataCommand) -> Applied {
        let mut image = self.image().clone();
        let before = Self::info(&image).clone();
        let applied = apply_command(&mut image, &command);
        if !matches!(applied, Applied::Rejected(_)) {
            let after = Self::info(&image).clone();
            if after.leader_epoch != before.leader_epoch {
                self.stats.leader_changes += 1;
            }
            self.images.push(image);
        }
        applied
    }

    fn step(&mut self, faults: bool, produce: bool) {
        self.stats.steps += 1;
        self.now += 1 + self.rng.below(20) as i64;
        if faults {
            self.inject_faults();
        }
        self.register_restarted();
        self.controller();
        self.propagate_metadata();
        self.isr_managers();
        self.send_fetches();
        self.deliver();
        if produce {
            self.produce();
        }
        self.complete_produces();
        self.consume();
        self.check_invariants();
    }

    fn inject_faults(&mut self) {
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        let up = self.nodes.iter().filter(|n| n.partition.is_some()).count();
        let stopping = self.nodes[i].stops_at.is_some_and(|at| at <= self.now);
        if stopping
            || self.nodes[i].partition.is_some() && up == self.nodes.len() && self.rng.chance_bp(40)
        {
            // kill -9 (or the end of a controlled shutdown): the process and what it had in
            // memory are gone, its files stay.
            self.nodes[i].partition = None;
            self.nodes[i].stops_at = None;
            self.nodes[i].down_since = self.now;
            self.pending.retain(|p| p.node != self.nodes[i].id);
            self.stats.crashes += 1;
        } else if self.nodes[i].partition.is_some()
            && self.nodes[i].registered
            && self.nodes[i].stops_at.is_none()
            && up == self.nodes.len()
            && self.linked(self.nodes[i].id, CONTROLLER)
            && if Self::info(self.image()).isr.contains(&self.nodes[i].id) {
                self.rng.chance_bp(40)
            } else {
                // Most often right after a restart, while it catches up (a rolling restart
                // going too fast): the worst moment for a leader whose metadata lags.
                self.rng.chance_bp(400)
            }
        {
            // SIGTERM: a controlled shutdown, then the process stops a little later; its
            // follower fetches go on meanwhile, and leaders whose metadata lags ask to take it
            // back into the ISR (refused: KIP-841).
            let id = self.nodes[i].id;
            if let Some(incarnation) = self.image().registrations.get(&id).map(|r| r.incarnation) {
                if self.propose(MetadataCommand::ControlledShutdown {
                    node_id: id,
                    incarnation,
                }) {
                    self.nodes[i].stops_at = Some(self.now + 50 + self.rng.below(300) as i64);
                    self.stats.controlled_shutdowns += 1;
                }
            }
        } else if self.nodes[i].partition.is_none()
            && self.now - self.nodes[i].down_since > 300
            && self.rng.chance(5)
        {
            let id = self.nodes[i].id;
            let info = Self::info(self.image());
            // Sometimes it comes back with an empty data dir (or after a power loss took what
            // it had not fsynced): never when it is the only ISR member, whose loss no broker
            // can make up for.
            if info.isr.iter().any(|r| *r != id) && self.rng.chance(30) {
                let _ = std::fs::remove_dir_all(&self.nodes[i].dir);
                self.stats.wipes += 1;
            }
            self.start(i);
        }
        if self.rng.chance_bp(30) {
            // A partition: one node from another, or from the controller, in one or both
            // directions.
            let a = self.rng.pick(&[CONTROLLER, 1, 2, 3]);
            let b = self.rng.pick(&NODES);
            if a != b {
                self.cut.insert((a, b));
                if self.rng.chance(50) {
                    self.cut.insert((b, a));
                }
                self.stats.cuts += 1;
            }
        }
        if !self.cut.is_empty() && self.rng.chance_bp(60) {
            self.cut.clear();
        }
        if let Some((at, added, leader)) = self.last_expansion.clone() {
            if self.now - at <= 400 && self.rng.chance(10) {
                // An election right after the ISR grew: to a member just added (as a preferred
                // or an operator's election would), or by fencing the leader (its session
                // expired), while the leader may not have heard of the expansion yet.
                self.last_expansion = None;
                let info = Self::info(self.image()).clone();
                let candidate = self.rng.pick(&added);
                let live = self
                    .image()
                    .registrations
                    .get(&candidate)
                    .is_some_and(|r| !r.fenced);
                let moved = if self.rng.chance(50) {
                    live && info.isr.contains(&candidate)
                        && info.leader != candidate
                        && self.propose(MetadataCommand::ChangePartition {
                            topic_id: self.topic_id,
                            partition: 0,
                            expected_partition_epoch: info.partition_epoch,
                            leader: Some(candidate),
                            isr: None,
                        })
                } else {
                    info.leader == leader
                        && self.propose(MetadataCommand::FenceBroker { node_id: leader })
                };
                if moved {
                    self.stats.worst_moment_elections += 1;
                }
            }
        }
        if self.rng.chance_bp(30) {
            // A broker whose metadata listener falls behind for a while.
            let i = self.rng.below(self.nodes.len() as u64) as usize;
            self.nodes[i].metadata_held_until = self.now + 50 + self.rng.below(400) as i64;
        }
        if self.rng.chance_bp(20) {
            // An election to any live ISR member (as an operator's or a preferred election
            // would), while the old leader may not hear of it for a while.
            let info = Self::info(self.image()).clone();
            let candidate = self.rng.pick(&NODES);
            let live = self
                .image()
                .registrations
                .get(&candidate)
                .is_some_and(|r| !r.fenced);
            if live && info.isr.contains(&candidate) && info.leader != candidate {
                self.propose(MetadataCommand::ChangePartition {
                    topic_id: self.topic_id,
                    partition: 0,
                    expected_partition_epoch: info.partition_epoch,
                    leader: Some(candidate),
                    isr: None,
                });
            }
        }
    }

    /// Heartbeats and fencing.
    fn controller(&mut self) {
        for node in &self.nodes {
            if node.partition.is_some() && node.registered && self.linked(node.id, CONTROLLER) {
                self.last_heartbeat.insert(node.id, self.now);
            }
        }
        // The controller's own rules (it is not one of the brokers here, and leads all along).
        let now = self.now;
        let changes = fencing_changes(
            self.image(),
            CONTROLLER,
            |node| {
                self.last_heartbeat
                    .get(&node)
                    .map(|at| Duration::from_millis((now - at).max(0) as u64))
            },
            Duration::from_millis(now as u64),
            Duration::from_millis(SESSION_MS as u64),
        );
        for (node_id, fenced) in changes {
            self.propose(if fenced {
                MetadataCommand::FenceBroker { node_id }
            } else {
                MetadataCommand::UnfenceBroker { node_id }
            });
        }
        if self.now - self.last_preferred_election >= PREFERRED_ELECTION_MS {
            self.last_preferred_election = self.now;
            for (_, command) in preferred_leader_changes(self.image()) {
                self.propose(command);
            }
        }
    }

    fn propagate_metadata(&mut self) {
        let latest = self.images.len() - 1;
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            if node.partition.is_none()
                || !node.registered
                || node.image_version == latest
                || node.metadata_held_until > self.now
                || !self.linked(node.id, CONTROLLER)
                || !self.rng.chance(40)
            {
                continue;
            }
            self.nodes[i].image_version = latest;
            let info = Self::info(&self.images[latest]);
            if let Some(p) = &self.nodes[i].partition {
                p.set_assignment(assignment(info), self.now);
            }
        }
    }

    fn isr_managers(&mut self) {
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            let Some(p) = self.nodes[i].partition.clone() else {
                continue;
            };
            if !self.linked(id, CONTROLLER) || !self.rng.chance(20) {
                continue;
            }
            // Eligibility as this leader's (possibly stale) metadata shows it.
            let view = &self.images[self.nodes[i].image_version];
            let eligible = |node: i32| view.registrations.get(&node).is_some_and(|r| !r.fenced);
            if let Some(change) = p.isr_change(self.now, LAG_MS, eligible) {
                let based_on = change.partition_epoch;
                let before = Self::info(self.image()).isr.clone();
                let added: Vec<i32> = change
                    .isr
                    .iter()
                    .copied()
                    .filter(|r| !before.contains(r))
                    .collect();
                let applied = self.propose_applied(MetadataCommand::ChangePartition {
                    topic_id: self.topic_id,
                    partition: 0,
                    expected_partition_epoch: change.partition_epoch,
                    leader: None,
                    isr: Some(change.isr),
                });
                let committed = !matches!(applied, Applied::Rejected(_));
                if let Applied::Rejected(why) = applied {
                    let why = IsrChangeError::Refused(why).not_made();
                    if why == IsrNotMade::Refused {
                        self.stats.isr_refusals += 1;
                    }
                    p.isr_change_not_made(based_on, why);
                }
                if committed && !added.is_empty() {
                    self.last_expansion = Some((self.now, added, id));
                    if self.rng.chance(50) {
                        // The worst moment for the leader to hear late that its ISR grew.
                        self.nodes[i].metadata_held_until =
                            self.now + 100 + self.rng.below(500) as i64;
                        self.stats.expansions_held += 1;
                    }
                }
            }
        }
    }

    fn send_fetches(&mut self) {
        for i in 0..self.nodes.len() {
            let Some(p) = self.nodes[i].partition.clone() else {
                continue;
            };
            let leader = p.leader();
            if leader < 0 || p.is_leader() {
                continue;
            }
            if matches!(self.nodes[i].fetch, Some((_, sent)) if self.now - sent < FETCH_TIMEOUT_MS)
            {
                continue;
            }
            self.next_fetch_id += 1;
            let id = self.next_fetch_id;
            self.nodes[i].fetch = Some((id, self.now));
            let max_bytes = 100 + self.rng.below(900) as usize;
            let message = Message::Fetch {
                id,
                follower: self.nodes[i].id,
                offset: p.log().log_end_offset(),
                last_epoch: p.log().latest_epoch().unwrap_or(-1),
                leader_epoch: p.leader_epoch(),
                max_bytes,
            };
            let from = self.nodes[i].id;
            self.send(from, leader, message);
        }
    }

    fn send(&mut self, from: i32, to: i32, message: Message) {
        let at = self.now + self.rng.below(40) as i64;
        self.network.push(InFlight {
            at,
            from,
            to,
            message,
        });
    }

    fn node(&self, id: i32) -> usize {
        self.nodes.iter().position(|n| n.id == id).expect("a node")
    }

    fn deliver(&mut self) {
        let now = self.now;
        let (due, later): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(&mut self.network)
            .into_iter()
            .partition(|m| m.at <= now);
        self.network = later;
        for m in due {
            if !self.linked(m.from, m.to) {
                continue;
            }
            let to = self.node(m.to);
            let Some(p) = self.nodes[to].partition.clone() else {
                continue;
            };
            match m.message {
                Message::Fetch {
                    id,
                    follower,
                    offset,
                    last_epoch,
                    leader_epoch,
                    max_bytes,
                } => {
                    let fetched = if !p.is_leader() || p.check_leader_epoch(leader_epoch).is_err() {
                        None
                    } else {
                        match p.serve_follower_fetch(
                            follower,
                            offset,
                            Some(last_epoch),
                            max_bytes,
                            self.now,
                        ) {
                            // Read when served: what the wire would carry.
                            Ok(FollowerFetch::Records(data)) => Some(FetchedFromLeader::Records {
                                records: data.records.read().expect("reading served batches"),
                                high_watermark: data.high_watermark,
                            }),
                            Ok(FollowerFetch::Diverging {
                                epoch, end_offset, ..
                            }) => Some(FetchedFromLeader::Diverging { epoch, end_offset }),
                            // As the fetch handler answers OFFSET_OUT_OF_RANGE.
                            Err(super::ReplicaError::Log(
                                crate::log::LogError::OffsetOutOfRange { .. },
                            )) => Some(FetchedFromLeader::OutOfRange {
                                log_start_offset: p.log().log_start_offset(),
                                high_watermark: p.high_watermark(),
                            }),
                            Err(e) => panic!("leader {} serving a fetch: {e}", m.to),
                        }
                    };
                    let answer = Message::Answer {
                        id,
                        leader: m.to,
                        leader_epoch,
                        fetched,
                    };
                    self.send(m.to, m.from, answer);
                }
                Message::Answer {
                    id,
                    leader,
                    leader_epoch,
                    fetched,
                } => {
                    if self.nodes[to].fetch.map(|(f, _)| f) != Some(id) {
                        continue;
                    }
                    self.nodes[to].fetch = None;
                    let Some(fetched) = fetched else {
                        continue;
                    };
                    if matches!(fetched, FetchedFromLeader::Diverging { .. }) {
                        self.stats.truncations += 1;
                    }
                    match p.apply_from_leader(leader, leader_epoch, fetched) {
                        Ok(FollowerApply::Applied { flush_to: None }) => {}
                        Ok(FollowerApply::Applied { flush_to: Some(_) }) => {
                            p.log().flush().expect("flush");
                        }
                        Ok(FollowerApply::Stale) => self.stats.dropped_stale_answers += 1,
                        Err(e) => panic!("follower {} applying a fetch answer: {e}", m.to),
                    }
                }
            }
        }
    }

    /// With `percent`% probability, a random running node, if it thinks it leads (zombies
    /// included): its index and partition.
    fn random_self_declared_leader(&mut self, percent: u64) -> Option<(usize, Arc<Partition>)> {
        if !self.rng.chance(percent) {
            return None;
        }
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        let p = self.nodes[i].partition.clone()?;
        p.is_leader().then_some((i, p))
    }

    /// A producer sends to a broker that thinks it leads (zombies included), at acks=all.
    fn produce(&mut self) {
        let Some((i, p)) = self.random_self_declared_leader(30) else {
            return;
        };
        if p.check_min_isr().is_err() {
            return;
        }
        let id = self.next_record_id;
        self.next_record_id += 1;
        let count = 1 + self.rng.below(3) as usize;
        let info = p
            .append_as_leader(batch(0, count, id), self.now)
            .expect("a leader append");
        self.stats.produced += 1;
        self.pending.push(Pending {
            node: self.nodes[i].id,
            end: info.last_offset + 1,
            epoch: info.leader_epoch,
            base_offset: info.base_offset,
            id,
            since: self.now,
        });
    }

    fn complete_produces(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for w in pending {
            let i = self.node(w.node);
            let Some(p) = self.nodes[i].partition.clone() else {
                self.stats.not_acked += 1;
                continue;
            };
            match p.replication_outcome(w.end, w.epoch) {
                // As the produce handler: acknowledged only if the ISR still meets the minimum.
                Some(Ok(())) if p.check_min_isr().is_ok() => {
                    let previous = self.acked.insert(w.base_offset, w.id);
                    assert!(
                        previous.is_none(),
                        "offset {} acknowledged twice: for {previous:?} and {}",
                        w.base_offset,
                        w.id
                    );
                    self.stats.acked += 1;
                }
                Some(_) => self.stats.not_acked += 1,
                None if self.now - w.since > PRODUCE_TIMEOUT_MS => self.stats.not_acked += 1,
                None => self.pending.push(w),
            }
        }
    }

    /// A consumer reads what a broker that thinks it leads shows below its high watermark.
    fn consume(&mut self) {
        let Some((_, p)) = self.random_self_declared_leader(20) else {
            return;
        };
        if self.consumer_position >= p.high_watermark() {
            return;
        }
        let data = p
            .read(self.consumer_position, 4096, true, false)
            .expect("a consumer read");
        for (base, next, id) in batch_ids(data.records.read().expect("a consumer read")) {
            if let Some(before) = self.seen.insert(base, id) {
                assert_eq!(
                    before, id,
                    "offset {base} was read as record {before} and later as {id}"
                );
            }
            self.consumer_position = self.consumer_position.max(next);
        }
    }

    fn check_invariants(&self) {
        for node in &self.nodes {
            if let Some(p) = &node.partition {
                assert!(
                    p.high_watermark() <= p.log().log_end_offset(),
                    "node {}: high watermark {} past its log end {}",
                    node.id,
                    p.high_watermark(),
                    p.log().log_end_offset()
                );
            }
        }
    }

    /// Stops the faults, restarts what is down, and runs until the copies agree.
    fn settle(&mut self) {
        self.cut.clear();
        for node in &mut self.nodes {
            node.metadata_held_until = 0;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].stops_at.take().is_some() {
                // A controlled shutdown finishes: stopped, then started again below.
                self.nodes[i].partition = None;
                let id = self.nodes[i].id;
                self.pending.retain(|p| p.node != id);
            }
            if self.nodes[i].partition.is_none() {
                self.start(i);
            }
        }
        for _ in 0..20_000 {
            self.step(false, false);
            if self.settled() {
                return;
            }
        }
        panic!(
            "the copies did not converge: image {:?}, nodes {:?}",
            Self::info(self.image()),
            self.nodes
                .iter()
                .map(|n| n.partition.as_ref().map(|p| (
                    n.id,
                    p.leader(),
                    p.leader_epoch(),
                    p.log().log_end_offset(),
                    p.high_watermark()
                )))
                .collect::<Vec<_>>()
        );
    }

    fn settled(&self) -> bool {
        let latest = self.images.len() - 1;
        let info = Self::info(self.image());
        if info.leader < 0 || info.isr.len() != NODES.len() || !self.pending.is_empty() {
            return false;
        }
        let ends: BTreeSet<(i64, i64)> = self
            .nodes
            .iter()
            .filter_map(|n| n.partition.as_ref())
            .map(|p| (p.log().log_end_offset(), p.high_watermark()))
            .collect();
        self.nodes.iter().all(|n| n.image_version == latest)
            && ends.len() == 1
            && ends.iter().all(|(end, hw)| end == hw)
    }

    fn final_checks(&self) {
        let logs: Vec<Bytes> = self
            .nodes
            .iter()
            .map(|n| {
                let p = n.partition.as_ref().expect("running");
                p.log()
                    .read(0, usize::MAX >> 1, i64::MAX, true)
                    .expect("read the whole log")
            })
            .collect();
        for (n, log) in self.nodes.iter().zip(&logs).skip(1) {
            assert!(
                *log == logs[0],
                "node {}'s copy differs from node {}'s",
                n.id,
                self.nodes[0].id
            );
        }
        let stored: BTreeMap<i64, i64> = batch_ids(logs[0].clone())
            .into_iter()
            .map(|(base, _, id)| (base, id))
            .collect();
        for (what, records) in [("acknowledged", &self.acked), ("consumed", &self.seen)] {
            for (offset, id) in records {
                assert_eq!(
                    stored.get(offset),
                    Some(id),
                    "{what} record {id} at offset {offset} is not in the final log"
                );
            }
        }
    }
}

fn assignment(info: &PartitionInfo) -> Assignment<'_> {
    super::manager::assignment(info, MIN_INSYNC)
}

/// Runs one schedule, counting into `stats`.
fn run(seed: u64, steps: u64, stats: Stats) -> Stats {
    let mut sim = Sim::new(seed, stats);
    for _ in 0..steps {
        sim.step(true, true);
    }
    sim.settle();
    sim.final_checks();
    sim.stats
}

/// Seeded schedules of crashes, restarts, link cuts and leader moves under acks=all
/// producers: nothing acknowledged or consumed is lost and the copies converge.
#[test]
fn seeded_fault_schedules_lose_no_acknowledged_record() {
    let seeds: u64 = std::env::var("GREGOR_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut total = Stats::default();
    let first: u64 = std::env::var("GREGOR_SIM_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for seed in first..first + seeds {
        eprintln!("seed {seed}");
        total = run(seed, 3_000, total);
    }
    eprintln!("{seeds} schedules: {total:?}");
    // The schedules must actually exercise the faults, or the test proves nothing.
    assert!(total.acked > seeds * 100, "{total:?}");
    assert!(total.leader_changes > seeds * 3, "{total:?}");
    assert!(total.crashes >= seeds, "{total:?}");
    assert!(total.truncations > 0, "{total:?}");
    assert!(total.expansions_held >= seeds, "{total:?}");
    assert!(total.worst_moment_elections >= seeds, "{total:?}");
    assert!(total.wipes > 0, "{total:?}");
    assert!(total.controlled_shutdowns >= seeds, "{total:?}");
    assert!(total.isr_refusals > 0, "{total:?}");
}
