//! The active controller's periodic decisions, as pure functions of the metadata image and
//! the clock, so the broker's liveness loop and the replication simulation
//! (`replica::simulation_tests`) run the same rules.
//!
//! - [`registration_commands`]: a broker back from an unclean stop is fenced before it
//!   registers again, so it never leads or counts on data its last incarnation had.
//! - [`fencing_changes`]: Kafka's broker heartbeat manager: a registered broker not heard from
//!   for the session timeout is fenced; a fenced broker heard from again is unfenced.
//! - [`preferred_leader_changes`]: Kafka's preferred replica election: each partition whose
//!   first replica is live, in the ISR and not leading gets it back as leader.
//! - [`unclean_leader_changes`]: for topics with `unclean.leader.election.enable`, a
//!   leaderless partition (no live ISR member) gets a live replica from outside the ISR as
//!   leader and sole ISR member.
//!
//! And every broker's own: [`QuorumContact`], whether it has been out of contact with the
//! controller quorum for longer than its session (so fenced and replaced on the other side).

use std::time::{Duration, Instant};

use super::metadata::{BrokerInfo, BrokerRegistration, MetadataImage, PartitionInfo, TopicInfo};
use super::quorum::MetadataCommand;

/// The commands that register a broker. A broker coming back as another incarnation than the
/// one registered after an unclean stop (a crash, a power loss that took what it had not
/// fsynced, an emptied data directory: anything that left no clean-shutdown marker) is fenced
/// first, as Kafka's controller treats a broker back from an unclean shutdown (KIP-966):
/// fencing takes it out of every ISR it is not the last member of and moves its leaderships
/// inside the ISR with new leader epochs, so it leads nothing and counts for no
/// acknowledgement on the strength of what its previous incarnation held; it rejoins ISRs once
/// it has caught up again. Where it was the last ISR member, the registration that follows
/// makes it leader again under a new epoch. A broker back from a clean shutdown
/// (`previous_stop_clean`: every log was flushed and closed) holds everything its previous
/// incarnation had and keeps its place. The same incarnation registering again (a retried
/// registration) changes nothing.
pub fn registration_commands(
    image: &MetadataImage,
    broker: BrokerInfo,
    registration: BrokerRegistration,
    previous_stop_clean: bool,
) -> Vec<MetadataCommand> {
    let node_id = broker.node_id;
    let mut commands = Vec::new();
    if !previous_stop_clean
        && image
            .registrations
            .get(&node_id)
            .is_some_and(|r| r.incarnation != registration.incarnation)
    {
        commands.push(MetadataCommand::FenceBroker { node_id });
    }
    commands.push(MetadataCommand::RegisterBroker {
        broker,
        registration,
    });
    commands
}

/// The fencing changes to make now, as `(node, fenced)`. `silent_for(node)` is how long ago
/// the node's last heartbeat reached this controller (`None`: not since it became the
/// controller, `leading_for` ago; nobody is judged on silence from before that). The
/// controller itself (`me`) is always alive. A broker in controlled shutdown stays fenced
/// whatever it sends until it registers again.
pub fn fencing_changes(
    image: &MetadataImage,
    me: i32,
    silent_for: impl Fn(i32) -> Option<Duration>,
    leading_for: Duration,
    session_timeout: Duration,
) -> Vec<(i32, bool)> {
    let mut changes = Vec::new();
    for (&node, registration) in &image.registrations {
        let heard = silent_for(node);
        let silence = heard.map_or(leading_for, |s| s.min(leading_for));
        let alive = node == me || silence <= session_timeout;
        if !registration.fenced && !alive {
            changes.push((node, true));
        } else if registration.fenced
            && !registration.shutting_down
            && alive
            && (heard.is_some() || node == me)
        {
            changes.push((node, false));
        }
    }
    changes
}

/// The unclean elections to make now: one `ChangePartition` per leaderless partition of a
/// topic for which `allowed(topic configs)` says so, to its first live replica (in replica
/// order) with an ISR of that replica alone.
pub fn unclean_leader_changes(
    image: &MetadataImage,
    allowed: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
) -> Vec<(String, MetadataCommand)> {
    let mut changes = Vec::new();
    for topic in image.topics.values() {
        if !allowed(&topic.configs) {
            continue;
        }
        for p in topic.partitions.iter().filter(|p| p.leader < 0) {
            let eligible =
                |r: &i32| live(image, *r) && !image.replica_offline(*r, topic.id, p.index);
            if let Some(leader) = p.replicas.iter().copied().find(eligible) {
                changes.push(leader_change(topic, p, leader, Some(vec![leader])));
            }
        }
    }
    changes
}

fn live(image: &MetadataImage, node: i32) -> bool {
    image.registrations.get(&node).is_some_and(|r| !r.fenced)
}

/// A move of `p`'s leadership to `leader` (and its ISR to `isr`, if given), based on the
/// partition epoch seen.
fn leader_change(
    topic: &TopicInfo,
    p: &PartitionInfo,
    leader: i32,
    isr: Option<Vec<i32>>,
) -> (String, MetadataCommand) {
    (
        topic.name.clone(),
        MetadataCommand::ChangePartition {
            topic_id: topic.id,
            partition: p.index,
            expected_partition_epoch: p.partition_epoch,
            leader: Some(leader),
            isr,
        },
    )
}

/// The leadership moves of a preferred replica election: one `ChangePartition` per partition
/// whose preferred leader (first replica) is live, in the ISR and not leading, based on the
/// partition epoch it saw (so a stale move is refused).
pub fn preferred_leader_changes(image: &MetadataImage) -> Vec<(String, MetadataCommand)> {
    let mut changes = Vec::new();
    for topic in image.topics.values() {
        for p in &topic.partitions {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            if p.leader == preferred
                || !live(image, preferred)
                || !p.isr.contains(&preferred)
                || image.replica_offline(preferred, topic.id, p.index)
            {
                continue;
            }
            changes.push(leader_change(topic, p, preferred, None));
        }
    }
    changes
}

/// A broker's contact with the controller quorum, from each heartbeat round's outcome: a
/// heartbeat the active controller took, or, on the active controller, a quorum that confirmed
/// it still leads. Out of contact for longer than `broker.session.timeout.ms`, the controller
/// on the other side has fenced this broker and moved its leaderships (see
/// [`crate::replica::ReplicaManager::set_cut_off`]).
#[derive(Debug)]
pub struct QuorumContact {
    last: Instant,
    session: Duration,
    cut_off: bool,
}

/// A change of [`QuorumContact`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactChange {
    /// Out of contact for `silent`, longer than the session.
    CutOff { silent: Duration },
    /// In contact again.
    Restored,
}

impl QuorumContact {
    /// In contact as of `now` (a starting broker has just reached the quorum to register).
    pub fn new(now: Instant, session: Duration) -> QuorumContact {
        QuorumContact {
            last: now,
            session,
            cut_off: false,
        }
    }

    /// Records one heartbeat round at `now`; the change it makes, if any.
    pub fn observe(&mut self, delivered: bool, now: Instant) -> Option<ContactChange> {
        if delivered {
            self.last = now;
            return std::mem::take(&mut self.cut_off).then_some(ContactChange::Restored);
        }
        let silent = now.saturating_duration_since(self.last);
        if silent > self.session && !self.cut_off {
            self.cut_off = true;
            return Some(ContactChange::CutOff { silent });
        }
        None
    }

    /// Out of contact for longer than the session.
    pub fn is_cut_off(&self) -> bool {
        self.cut_off
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::metadata::BrokerRegistration;

    fn image(fenced: &[(i32, bool)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for &(node, fenced) in fenced {
            image.registrations.insert(
                node,
                BrokerRegistration {
                    incarnation: uuid::Uuid::nil(),
                    internal_addr: String::new(),
                    fenced,
                    partitions_max: None,
                    offline_replicas: Default::default(),
                    shutting_down: false,
                },
            );
        }
        image
    }

    #[test]
    fn silence_longer_than_the_session_fences_and_a_heartbeat_unfences() {
        let s = Duration::from_secs;
        let img = image(&[(1, false), (2, false), (3, true), (4, true)]);
        // 1 is the controller (never fenced, even unheard); 2 silent 10 s; 3 fenced and heard
        // again; 4 fenced and never heard.
        let heard = |node| match node {
            2 => Some(s(10)),
            3 => Some(s(1)),
            _ => None,
        };
        let changes = fencing_changes(&img, 1, heard, s(60), s(9));
        assert_eq!(changes, vec![(2, true), (3, false)]);
        // Just made controller: silence from before that does not count.
        let changes = fencing_changes(&img, 1, heard, s(5), s(9));
        assert_eq!(changes, vec![(3, false)]);
    }

    #[test]
    fn a_broker_in_controlled_shutdown_stays_fenced_while_it_heartbeats() {
        let s = Duration::from_secs;
        let mut img = image(&[(1, false), (2, true), (3, true)]);
        if let Some(r) = img.registrations.get_mut(&2) {
            r.shutting_down = true;
        }
        // Both heard a moment ago: only 3 (fenced for silence) comes back.
        let heard = |node| (node != 1).then(|| s(1));
        assert_eq!(
            fencing_changes(&img, 1, heard, s(60), s(9)),
            vec![(3, false)]
        );
    }

    #[test]
    fn a_broker_back_from_an_unclean_stop_is_fenced_before_it_registers() {
        let img = image(&[(1, false), (2, false)]);
        let broker = BrokerInfo {
            node_id: 2,
            host: "h".into(),
            port: 1,
            rack: None,
        };
        let registration = |incarnation: u64| BrokerRegistration {
            incarnation: uuid::Uuid::from_u64_pair(0, incarnation),
            internal_addr: String::new(),
            fenced: false,
            partitions_max: None,
            offline_replicas: Default::default(),
            shutting_down: false,
        };
        let kinds = |commands: Vec<MetadataCommand>| -> Vec<&'static str> {
            commands
                .iter()
                .map(|c| match c {
                    MetadataCommand::FenceBroker { node_id: 2 } => "fence",
                    MetadataCommand::RegisterBroker { .. } => "register",
                    _ => "other",
                })
                .collect()
        };
        // The image's registration of 2 has the nil incarnation.
        let restarted = registration_commands(&img, broker.clone(), registration(7), false);
        assert_eq!(kinds(restarted), vec!["fence", "register"]);
        let clean = registration_commands(&img, broker.clone(), registration(7), true);
        assert_eq!(kinds(clean), vec!["register"]);
        let retried = registration_commands(&img, broker.clone(), registration(0), false);
        assert_eq!(kinds(retried), vec!["register"]);
        let new_node = BrokerInfo {
            node_id: 9,
            ..broker
        };
        let first = registration_commands(&img, new_node, registration(7), false);
        assert_eq!(first.len(), 1);
    }

    #[test]
    fn unclean_elections_only_where_allowed_and_only_to_live_replicas() {
        use crate::cluster::metadata::{PartitionInfo, TopicInfo};
        let mut img = image(&[(1, true), (2, true), (3, false)]);
        for (name, unclean) in [("risky", true), ("safe", false)] {
            let mut configs = std::collections::BTreeMap::new();
            configs.insert("unclean".to_string(), unclean.to_string());
            let id = uuid::Uuid::new_v4();
            img.topics.insert(
                name.into(),
                TopicInfo {
                    name: name.into(),
                    id,
                    partitions: vec![
                        // Leaderless: its only ISR member (1) is fenced; 3 is live.
                        PartitionInfo {
                            index: 0,
                            leader: -1,
                            leader_epoch: 4,
                            replicas: vec![1, 2, 3],
                            isr: vec![1],
                            partition_epoch: 9,
                        },
                        // Leaderless with no live replica at all.
                        PartitionInfo {
                            index: 1,
                            leader: -1,
                            leader_epoch: 1,
                            replicas: vec![1, 2],
                            isr: vec![2],
                            partition_epoch: 3,
                        },
                    ],
                    configs,
                    internal: false,
                },
            );
            img.topic_ids.insert(id, name.into());
        }
        let allowed = |c: &std::collections::BTreeMap<String, String>| {
            c.get("unclean").is_some_and(|v| v == "true")
        };
        let changes = unclean_leader_changes(&img, allowed);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].0, "risky");
        assert!(matches!(
            &changes[0].1,
            MetadataCommand::ChangePartition {
                partition: 0,
                expected_partition_epoch: 9,
                leader: Some(3),
                isr: Some(isr),
                ..
            } if isr == &vec![3]
        ));
        // The state machine takes it: leader 3, a new leader epoch, ISR [3].
        let applied = crate::cluster::quorum::state_machine::apply_command(&mut img, &changes[0].1);
        assert_eq!(applied, crate::cluster::quorum::Applied::Done);
        let p = &img.topic("risky").unwrap().partitions[0];
        assert_eq!((p.leader, p.leader_epoch, p.isr.clone()), (3, 5, vec![3]));
    }

    #[test]
    fn contact_is_lost_after_the_session_and_back_with_the_next_delivered_heartbeat() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut contact = QuorumContact::new(t0, Duration::from_millis(2_000));
        assert_eq!(contact.observe(true, at(500)), None);
        assert_eq!(contact.observe(false, at(1_500)), None);
        assert_eq!(
            contact.observe(false, at(2_500)),
            None,
            "1 s since the last"
        );
        assert_eq!(
            contact.observe(false, at(2_600)),
            Some(ContactChange::CutOff {
                silent: Duration::from_millis(2_100)
            })
        );
        assert!(contact.is_cut_off());
        assert_eq!(contact.observe(false, at(9_000)), None, "said once");
        assert_eq!(
            contact.observe(true, at(9_250)),
            Some(ContactChange::Restored)
        );
        assert!(!contact.is_cut_off());
        assert_eq!(contact.observe(true, at(9_500)), None);
    }
}
