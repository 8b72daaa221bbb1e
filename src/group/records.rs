//! The records the coordinator keeps in `__consumer_offsets`, in Apache Kafka's own formats, so
//! that Kafka's tools (`kafka-console-consumer --formatter ...OffsetsMessageFormatter`,
//! `kafka-dump-log --offsets-decoder`) read gregor's log and gregor reads Kafka's classic records.
//!
//! File format (all integers big-endian; "string" is an i16 length then UTF-8, -1 for null;
//! "bytes" is an i32 length then the bytes; flexible versions use Kafka's compact forms and
//! tagged fields):
//!
//! - Key: an i16 version that names the record type, then its fields.
//!   - 0 or 1, `OffsetCommitKey`: group (string), topic (string), partition (i32).
//!   - 2, `GroupMetadataKey`: group (string).
//!   - Other versions are the consumer/share/streams group records of newer Kafka versions:
//!     [`RecordError::UnknownKeyVersion`].
//! - `OffsetCommitValue`: i16 version, then offset (i64), leader epoch (i32, v3+), metadata
//!   (string), commit timestamp (i64), expire timestamp (i64, v1 only). Written as v3, or v1
//!   when the commit carried a retention time (OffsetCommit v2–v4), as Kafka does. Read: v0–v4.
//! - `GroupMetadataValue`: i16 version, then protocol type (string), generation (i32),
//!   protocol (nullable string), leader (nullable string), current state timestamp (i64, v2+),
//!   members (i32 count) of: member id, group instance id (nullable, v3+), client id, client
//!   host, rebalance timeout (i32, v1+), session timeout (i32), subscription (bytes),
//!   assignment (bytes). Written as v3 (Kafka's `GROUP_METADATA_VALUE_VERSION`). Read: v0–v4.
//! - A record with no value is a tombstone: it deletes the key (and compaction drops both).
//!
//! Decoding never trusts a length or count: each is checked against the bytes left, so a
//! corrupt record is an error, never a panic or a huge allocation.

use bytes::{BufMut, Bytes, BytesMut};

use crate::group::error::RecordError;

/// Key version of an offset commit (Kafka writes 1; 0 is the pre-0.10 form, same layout).
pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Key version of group metadata.
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;
/// Value version written for group metadata.
pub const GROUP_METADATA_VALUE_VERSION: i16 = 3;
/// Value version written for an offset commit without an expire timestamp.
pub const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
/// Value version written for an offset commit with an expire timestamp.
pub const OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY: i16 = 1;

/// One key/value pair for `__consumer_offsets`; `value: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The encoded key.
    pub key: Bytes,
    /// The encoded value, or `None` for a tombstone.
    pub value: Option<Bytes>,
}

/// The key of an offset commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitKey {
    /// The group id.
    pub group: String,
    /// The topic name.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
}

/// The value of an offset commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitValue {
    /// The committed offset.
    pub offset: i64,
    /// The leader epoch of the last consumed record, or -1.
    pub leader_epoch: i32,
    /// The client's metadata string.
    pub metadata: String,
    /// When the coordinator accepted the commit.
    pub commit_timestamp_ms: i64,
    /// Explicit expiry (OffsetCommit v2–v4 `retention_time_ms`), if any.
    pub expire_timestamp_ms: Option<i64>,
}

/// One member in a group metadata value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadataValue {
    /// The member id.
    pub member_id: String,
    /// The static member's group.instance.id.
    pub group_instance_id: Option<String>,
    /// The client id.
    pub client_id: String,
    /// The client host.
    pub client_host: String,
    /// The member's rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// The member's session timeout.
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's selected protocol.
    pub subscription: Bytes,
    /// The member's assignment.
    pub assignment: Bytes,
}

/// The value of a group metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    /// The protocol type ("" for none).
    pub protocol_type: String,
    /// The generation id.
    pub generation: i32,
    /// The selected protocol.
    pub protocol: Option<String>,
    /// The leader's member id.
    pub leader: Option<String>,
    /// When the group entered its current state, or -1.
    pub current_state_timestamp_ms: i64,
    /// The members.
    pub members: Vec<MemberMetadataValue>,
}

/// A decoded `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorRecord {
    /// A committed offset, or its tombstone.
    OffsetCommit {
        /// The key.
        key: OffsetCommitKey,
        /// The value, `None` for a tombstone.
        value: Option<OffsetCommitValue>,
    },
    /// A group's metadata, or its tombstone.
    GroupMetadata {
        /// The group id.
        group: String,
        /// The value, `None` for a tombstone.
        value: Option<GroupMetadataValue>,
    },
}

impl CoordinatorRecord {
    /// The group the record belongs to.
    pub fn group_id(&self) -> &str {
        match self {
            CoordinatorRecord::OffsetCommit { key, .. } => &key.group,
            CoordinatorRecord::GroupMetadata { group, .. } => group,
        }
    }

    /// Encodes the record in Kafka's format.
    pub fn encode(&self) -> Record {
        match self {
            CoordinatorRecord::OffsetCommit { key, value } => Record {
                key: encode_offset_commit_key(key),
                value: value.as_ref().map(encode_offset_commit_value),
            },
            CoordinatorRecord::GroupMetadata { group, value } => Record {
                key: encode_group_metadata_key(group),
                value: value.as_ref().map(encode_group_metadata_value),
            },
        }
    }

    /// Decodes a key and (for a non-tombstone) value.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<CoordinatorRecord, RecordError> {
        let mut reader = Reader::new(key);
        let version = reader.i16("key version")?;
        match version {
            0 | 1 => {
                let key = OffsetCommitKey {
                    group: reader.string("group")?,
                    topic: reader.string("topic")?,
                    partition: reader.i32("partition")?,
                };
                reader.finish()?;
                let value = value.map(decode_offset_commit_value).transpose()?;
                Ok(CoordinatorRecord::OffsetCommit { key, value })
            }
            2 => {
                let group = reader.string("group")?;
                reader.finish()?;
                let value = value.map(decode_group_metadata_value).transpose()?;
                Ok(CoordinatorRecord::GroupMetadata { group, value })
            }
            other => Err(RecordError::UnknownKeyVersion(other)),
        }
    }
}

fn encode_offset_commit_key(key: &OffsetCommitKey) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + 2 + key.group.len() + 2 + key.topic.len() + 4);
    buf.put_i16(OFFSET_COMMIT_KEY_VERSION);
    put_string(&mut buf, &key.group);
    put_string(&mut buf, &key.topic);
    buf.put_i32(key.partition);
    buf.freeze()
}

fn encode_group_metadata_key(group: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + 2 + group.len());
    buf.put_i16(GROUP_METADATA_KEY_VERSION);
    put_string(&mut buf, group);
    buf.freeze()
}

fn encode_offset_commit_value(value: &OffsetCommitValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + 8 + 4 + 2 + value.metadata.len() + 8 + 8);
    match value.expire_timestamp_ms {
        Some(expire_timestamp_ms) => {
            buf.put_i16(OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY);
            buf.put_i64(value.offset);
            put_string(&mut buf, &value.metadata);
            buf.put_i64(value.commit_timestamp_ms);
            buf.put_i64(expire_timestamp_ms);
        }
        None => {
            buf.put_i16(OFFSET_COMMIT_VALUE_VERSION);
            buf.put_i64(value.offset);
            buf.put_i32(value.leader_epoch);
            put_string(&mut buf, &value.metadata);
            buf.put_i64(value.commit_timestamp_ms);
        }
    }
    buf.freeze()
}

fn encode_group_metadata_value(value: &GroupMetadataValue) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(GROUP_METADATA_VALUE_VERSION);
    put_string(&mut buf, &value.protocol_type);
    buf.put_i32(value.generation);
    put_nullable_string(&mut buf, value.protocol.as_deref());
    put_nullable_string(&mut buf, value.leader.as_deref());
    buf.put_i64(value.current_state_timestamp_ms);
    buf.put_i32(i32::try_from(value.members.len()).unwrap_or(i32::MAX));
    for member in &value.members {
        put_string(&mut buf, &member.member_id);
        put_nullable_string(&mut buf, member.group_instance_id.as_deref());
        put_string(&mut buf, &member.client_id);
        put_string(&mut buf, &member.client_host);
        buf.put_i32(member.rebalance_timeout_ms);
        buf.put_i32(member.session_timeout_ms);
        put_bytes(&mut buf, &member.subscription);
        put_bytes(&mut buf, &member.assignment);
    }
    buf.freeze()
}

fn decode_offset_commit_value(bytes: &[u8]) -> Result<OffsetCommitValue, RecordError> {
    let mut reader = Reader::new(bytes);
    let version = reader.i16("offset commit value version")?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::UnsupportedValueVersion {
            record: "OffsetCommitValue",
            version,
        });
    }
    reader.flexible = version >= 4;
    let offset = reader.i64("offset")?;
    let leader_epoch = if version >= 3 {
        reader.i32("leader epoch")?
    } else {
        -1
    };
    let metadata = reader.string("metadata")?;
    let commit_timestamp_ms = reader.i64("commit timestamp")?;
    let expire_timestamp_ms = if version == 1 {
        Some(reader.i64("expire timestamp")?)
    } else {
        None
    };
    reader.tagged_fields()?;
    reader.finish()?;
    Ok(OffsetCommitValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
        // Kafka writes -1 in v1 when there is no explicit expiry.
        expire_timestamp_ms: expire_timestamp_ms.filter(|ts| *ts >= 0),
    })
}

fn decode_group_metadata_value(bytes: &[u8]) -> Result<GroupMetadataValue, RecordError> {
    let mut reader = Reader::new(bytes);
    let version = reader.i16("group metadata value version")?;
    if !(0..=4).contains(&version) {
        return Err(RecordError::UnsupportedValueVersion {
            record: "GroupMetadataValue",
            version,
        });
    }
    reader.flexible = version >= 4;
    let protocol_type = reader.string("protocol type")?;
    let generation = reader.i32("generation")?;
    let protocol = reader.nullable_string("protocol")?;
    let leader = reader.nullable_string("leader")?;
    let current_state_timestamp_ms = if version >= 2 {
        reader.i64("current state timestamp")?
    } else {
        -1
    };
    // Each member takes at least 15 bytes in any version, which bounds the count by the
    // bytes left.
    let count = reader.array_len("members", 15)?;
    let mut members = Vec::new();
    for _ in 0..count {
        let member_id = reader.string("member id")?;
        let group_instance_id = if version >= 3 {
            reader.nullable_string("group instance id")?
        } else {
            None
        };
        let client_id = reader.string("client id")?;
        let client_host = reader.string("client host")?;
        let rebalance_timeout_ms = if version >= 1 {
            Some(reader.i32("rebalance timeout")?)
        } else {
            None
        };
        let session_timeout_ms = reader.i32("session timeout")?;
        let subscription = reader.bytes("subscription")?;
        let assignment = reader.bytes("assignment")?;
        reader.tagged_fields()?;
        members.push(MemberMetadataValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            // v0 had no rebalance timeout: Kafka used the session timeout for both.
            rebalance_timeout_ms: rebalance_timeout_ms.unwrap_or(session_timeout_ms),
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    reader.tagged_fields()?;
    reader.finish()?;
    Ok(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

/// Writes a Kafka "string". Strings longer than `i16::MAX` bytes cannot be represented; they
/// are cut at the last character boundary that fits (requests are validated long before any
/// such string could reach here).
fn put_string(buf: &mut BytesMut, value: &str) {
    let value = truncate_to_i16(value);
    buf.put_i16(value.len() as i16);
    buf.put_slice(value.as_bytes());
}

fn put_nullable_string(buf: &mut BytesMut, value: Option<&str>) {
    match value {
        Some(value) => put_string(buf, value),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, value: &[u8]) {
    let len = value.len().min(i32::MAX as usize);
    buf.put_i32(len as i32);
    buf.put_slice(&value[..len]);
}

fn truncate_to_i16(value: &str) -> &str {
    let max = i16::MAX as usize;
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// A bounds-checked reader of Kafka's primitive types.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Whether strings, bytes and arrays use the compact (flexible-version) forms.
    flexible: bool,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            flexible: false,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], RecordError> {
        if self.remaining() < n {
            return Err(RecordError::Truncated(field));
        }
        let slice = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    fn unsigned_varint(&mut self, field: &'static str) -> Result<u32, RecordError> {
        let mut value: u32 = 0;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1, field)?[0];
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RecordError::InvalidLength {
            field,
            length: i64::from(value),
        })
    }

    /// The length of a string/bytes field, `None` for null.
    fn length(&mut self, field: &'static str, wide: bool) -> Result<Option<usize>, RecordError> {
        let length: i64 = if self.flexible {
            i64::from(self.unsigned_varint(field)?) - 1
        } else if wide {
            i64::from(self.i32(field)?)
        } else {
            i64::from(self.i16(field)?)
        };
        if length == -1 {
            return Ok(None);
        }
        if length < 0 || length as u64 > self.remaining() as u64 {
            return Err(RecordError::InvalidLength { field, length });
        }
        Ok(Some(length as usize))
    }

    fn nullable_string(&mut self, field: &'static str) -> Result<Option<String>, RecordError> {
        match self.length(field, false)? {
            None => Ok(None),
            Some(len) => {
                let raw = self.take(len, field)?;
                let text = std::str::from_utf8(raw).map_err(|_| RecordError::InvalidUtf8(field))?;
                Ok(Some(text.to_string()))
            }
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String, RecordError> {
        self.nullable_string(field)?
            .ok_or(RecordError::InvalidLength { field, length: -1 })
    }

    fn bytes(&mut self, field: &'static str) -> Result<Bytes, RecordError> {
        match self.length(field, true)? {
            None => Err(RecordError::InvalidLength { field, length: -1 }),
            Some(len) => Ok(Bytes::copy_from_slice(self.take(len, field)?)),
        }
    }

    /// An array's element count, each element taking at least `min_element_bytes`.
    fn array_len(
        &mut self,
        field: &'static str,
        min_element_bytes: usize,
    ) -> Result<usize, RecordError> {
        let count: i64 = if self.flexible {
            i64::from(self.unsigned_varint(field)?) - 1
        } else {
            i64::from(self.i32(field)?)
        };
        if count < 0
            || (count as u64).saturating_mul(min_element_bytes as u64) > self.remaining() as u64
        {
            return Err(RecordError::InvalidLength {
                field,
                length: count,
            });
        }
        Ok(count as usize)
    }

    /// Skips a tagged-field section (flexible versions only; none are defined for these
    /// records, so all are unknown and ignored, as Kafka does).
    fn tagged_fields(&mut self) -> Result<(), RecordError> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.unsigned_varint("tagged fields")?;
        for _ in 0..count {
            self.unsigned_varint("tag")?;
            let size = self.unsigned_varint("tagged field size")? as usize;
            self.take(size, "tagged field")?;
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), RecordError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(RecordError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset_key() -> OffsetCommitKey {
        OffsetCommitKey {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        }
    }

    #[test]
    fn offset_commit_v3_layout_matches_kafka() {
        let record = CoordinatorRecord::OffsetCommit {
            key: offset_key(),
            value: Some(OffsetCommitValue {
                offset: 42,
                leader_epoch: 7,
                metadata: "md".into(),
                commit_timestamp_ms: 1000,
                expire_timestamp_ms: None,
            }),
        };
        let encoded = record.encode();
        assert_eq!(
            encoded.key.as_ref(),
            &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3][..]
        );
        let mut expected = vec![0, 3];
        expected.extend_from_slice(&42i64.to_be_bytes());
        expected.extend_from_slice(&7i32.to_be_bytes());
        expected.extend_from_slice(&[0, 2, b'm', b'd']);
        expected.extend_from_slice(&1000i64.to_be_bytes());
        assert_eq!(encoded.value.as_deref(), Some(&expected[..]));
        let decoded = CoordinatorRecord::decode(&encoded.key, encoded.value.as_deref());
        assert_eq!(decoded, Ok(record));
    }

    #[test]
    fn offset_commit_with_expiry_is_v1_and_round_trips() {
        let record = CoordinatorRecord::OffsetCommit {
            key: offset_key(),
            value: Some(OffsetCommitValue {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 5,
                expire_timestamp_ms: Some(99),
            }),
        };
        let encoded = record.encode();
        assert_eq!(&encoded.value.as_deref().unwrap_or_default()[..2], &[0, 1]);
        assert_eq!(
            CoordinatorRecord::decode(&encoded.key, encoded.value.as_deref()),
            Ok(record)
        );
    }

    #[test]
    fn offset_commit_v4_flexible_is_read() {
        let mut value = vec![0, 4];
        value.extend_from_slice(&9i64.to_be_bytes());
        value.extend_from_slice(&2i32.to_be_bytes());
        value.extend_from_slice(&[3, b'h', b'i']); // compact string "hi"
        value.extend_from_slice(&77i64.to_be_bytes());
        value.extend_from_slice(&[1, 5, 1, 0xff]); // one unknown tagged field
        let key = encode_offset_commit_key(&offset_key());
        let decoded = CoordinatorRecord::decode(&key, Some(&value));
        assert_eq!(
            decoded,
            Ok(CoordinatorRecord::OffsetCommit {
                key: offset_key(),
                value: Some(OffsetCommitValue {
                    offset: 9,
                    leader_epoch: 2,
                    metadata: "hi".into(),
                    commit_timestamp_ms: 77,
                    expire_timestamp_ms: None,
                }),
            })
        );
    }

    #[test]
    fn group_metadata_round_trips_and_tombstones() {
        let record = CoordinatorRecord::GroupMetadata {
            group: "grp".into(),
            value: Some(GroupMetadataValue {
                protocol_type: "consumer".into(),
                generation: 4,
                protocol: Some("range".into()),
                leader: Some("m1".into()),
                current_state_timestamp_ms: 123,
                members: vec![MemberMetadataValue {
                    member_id: "m1".into(),
                    group_instance_id: Some("i1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 10_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"asg"),
                }],
            }),
        };
        let encoded = record.encode();
        assert_eq!(&encoded.key[..], &[0, 2, 0, 3, b'g', b'r', b'p'][..]);
        assert_eq!(
            CoordinatorRecord::decode(&encoded.key, encoded.value.as_deref()),
            Ok(record)
        );
        let tombstone = CoordinatorRecord::GroupMetadata {
            group: "grp".into(),
            value: None,
        };
        let encoded = tombstone.encode();
        assert_eq!(encoded.value, None);
        assert_eq!(CoordinatorRecord::decode(&encoded.key, None), Ok(tombstone));
    }

    #[test]
    fn group_metadata_v0_uses_session_timeout_for_rebalance_timeout() {
        let mut value = vec![0, 0];
        value.extend_from_slice(&[0, 1, b'x']); // protocol type
        value.extend_from_slice(&1i32.to_be_bytes());
        value.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // null protocol, null leader
        value.extend_from_slice(&1i32.to_be_bytes());
        value.extend_from_slice(&[0, 1, b'm', 0, 1, b'c', 0, 1, b'h']);
        value.extend_from_slice(&6000i32.to_be_bytes());
        value.extend_from_slice(&0i32.to_be_bytes());
        value.extend_from_slice(&0i32.to_be_bytes());
        let decoded = decode_group_metadata_value(&value);
        let members = decoded.map(|v| v.members).unwrap_or_default();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].rebalance_timeout_ms, 6000);
        assert_eq!(members[0].group_instance_id, None);
    }

    #[test]
    fn hostile_records_are_errors_not_panics() {
        // A member count far larger than the bytes left.
        let mut value = vec![0, 3, 0, 0];
        value.extend_from_slice(&0i32.to_be_bytes());
        value.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        value.extend_from_slice(&0i64.to_be_bytes());
        value.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            decode_group_metadata_value(&value),
            Err(RecordError::InvalidLength { .. })
        ));
        // Truncated key, bad UTF-8, unknown key version, trailing bytes.
        assert!(CoordinatorRecord::decode(&[0, 1, 0, 5, b'a'], None).is_err());
        assert_eq!(
            CoordinatorRecord::decode(&[0, 2, 0, 1, 0xff], None),
            Err(RecordError::InvalidUtf8("group"))
        );
        assert_eq!(
            CoordinatorRecord::decode(&[0, 3, 0, 0], None),
            Err(RecordError::UnknownKeyVersion(3))
        );
        assert_eq!(
            CoordinatorRecord::decode(&[0, 2, 0, 0, 9], None),
            Err(RecordError::TrailingBytes(1))
        );
        // Every prefix of a valid value fails cleanly.
        let full = encode_group_metadata_value(&GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 1,
            protocol: Some("range".into()),
            leader: Some("m".into()),
            current_state_timestamp_ms: 0,
            members: vec![MemberMetadataValue {
                member_id: "m".into(),
                group_instance_id: None,
                client_id: "c".into(),
                client_host: "h".into(),
                rebalance_timeout_ms: 1,
                session_timeout_ms: 1,
                subscription: Bytes::from_static(b"s"),
                assignment: Bytes::new(),
            }],
        });
        for end in 0..full.len() {
            assert!(decode_group_metadata_value(&full[..end]).is_err());
        }
        assert!(decode_group_metadata_value(&full).is_ok());
    }

    #[test]
    fn overlong_strings_are_truncated_at_a_char_boundary() {
        let long = "é".repeat(20_000); // 40,000 bytes
        let cut = truncate_to_i16(&long);
        assert!(cut.len() <= i16::MAX as usize);
        assert_eq!(cut.len(), 32_766);
    }
}
