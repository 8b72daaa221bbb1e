//! The active controller's periodic decisions, as pure functions of the metadata image and
//! the clock, so the broker's liveness loop and the replication simulation
//! (`replica::simulation_tests`) run the same rules.
//!
//! - [`fencing_changes`]: Kafka's broker heartbeat manager: a registered broker not heard from
//!   for the session timeout is fenced; a fenced broker heard from again is unfenced.
//! - [`preferred_leader_changes`]: Kafka's preferred replica election: each partition whose
//!   first replica is live, in the ISR and not leading gets it back as leader.

use std::time::Duration;

use super::metadata::MetadataImage;
use super::quorum::MetadataCommand;

/// The fencing changes to make now, as `(node, fenced)`. `silent_for(node)` is how long ago
/// the node's last heartbeat reached this controller (`None`: not since it became the
/// controller, `leading_for` ago; nobody is judged on silence from before that). The
/// controller itself (`me`) is always alive.
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
        } else if registration.fenced && alive && (heard.is_some() || node == me) {
            changes.push((node, false));
        }
    }
    changes
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
            let live = image
                .registrations
                .get(&preferred)
                .is_some_and(|r| !r.fenced);
            if p.leader == preferred || !live || !p.isr.contains(&preferred) {
                continue;
            }
            changes.push((
                topic.name.clone(),
                MetadataCommand::ChangePartition {
                    topic_id: topic.id,
                    partition: p.index,
                    expected_partition_epoch: p.partition_epoch,
                    leader: Some(preferred),
                    isr: None,
                },
            ));
        }
    }
    changes
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
}
