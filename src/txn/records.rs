//! The `__transaction_state` record formats: Kafka's own (`TransactionLogKey` version 0 and
//! `TransactionLogValue` version 0), so Kafka's tools read gregor's topic and a value written by
//! either decodes in the other. Big-endian, Kafka's classic (non-flexible) encoding:
//!
//! ```text
//! key:   i16 version (0) | string transactional id (i16 length, UTF-8)
//! value: i16 version (0) | i64 producer id | i16 producer epoch | i32 transaction timeout ms
//!        | i8 state | partitions: i32 count (-1: null), each string topic | i32 count
//!        | i32 partition... | i64 last update ms | i64 transaction start ms
//! ```
//! A null value (a tombstone) removes the transactional id (expiration). Version 1 values
//! (flexible, Kafka 4's KIP-890 fields in tagged fields) are read for their version 0 fields;
//! unknown versions are an error the replay skips.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use super::state::TxnState;

/// A decoded value: everything the coordinator keeps about a transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnValue {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// `transaction.timeout.ms` the producer asked for.
    pub timeout_ms: i32,
    /// The transaction's state.
    pub state: TxnState,
    /// The partitions in the transaction, by topic.
    pub partitions: BTreeSet<(String, i32)>,
    /// When the state last changed.
    pub last_update_ms: i64,
    /// When the ongoing transaction began (-1: none).
    pub start_ms: i64,
}

/// Why a record does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable __transaction_state record: {0}")]
pub struct TxnRecordError(pub String);

/// The key of a transactional id.
pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + transactional_id.len());
    out.put_i16(0);
    put_string(&mut out, transactional_id);
    out.freeze()
}

/// The transactional id of a key.
pub fn decode_key(bytes: &[u8]) -> Result<String, TxnRecordError> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.i16()?;
    if version != 0 {
        return Err(TxnRecordError(format!("key version {version}")));
    }
    reader.string()
}

/// A value, version 0.
pub fn encode_value(value: &TxnValue) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.put_i16(0);
    out.put_i64(value.producer_id);
    out.put_i16(value.producer_epoch);
    out.put_i32(value.timeout_ms);
    out.put_i8(value.state.id());
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, partition) in &value.partitions {
        match topics.last_mut() {
            Some((last, partitions)) if *last == topic.as_str() => partitions.push(*partition),
            _ => topics.push((topic.as_str(), vec![*partition])),
        }
    }
    out.put_i32(topics.len() as i32);
    for (topic, partitions) in topics {
        put_string(&mut out, topic);
        out.put_i32(partitions.len() as i32);
        for partition in partitions {
            out.put_i32(partition);
        }
    }
    out.put_i64(value.last_update_ms);
    out.put_i64(value.start_ms);
    out.freeze()
}

/// A value of version 0 or 1.
pub fn decode_value(bytes: &[u8]) -> Result<TxnValue, TxnRecordError> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.i16()?;
    let flexible = match version {
        0 => false,
        1 => true,
        other => return Err(TxnRecordError(format!("value version {other}"))),
    };
    let producer_id = reader.i64()?;
    let producer_epoch = reader.i16()?;
    let timeout_ms = reader.i32()?;
    let state_id = reader.i8()?;
    let state = TxnState::from_id(state_id)
        .ok_or_else(|| TxnRecordError(format!("unknown transaction state {state_id}")))?;
    let mut partitions = BTreeSet::new();
    let topics = reader.count(flexible)?;
    for _ in 0..topics.unwrap_or(0) {
        let topic = if flexible {
            reader.compact_string()?
        } else {
            reader.string()?
        };
        let count = reader.count(flexible)?.unwrap_or(0);
        for _ in 0..count {
            partitions.insert((topic.clone(), reader.i32()?));
        }
        if flexible {
            reader.skip_tagged_fields()?;
        }
    }
    let last_update_ms = reader.i64()?;
    let start_ms = reader.i64()?;
    Ok(TxnValue {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms,
        start_ms,
    })
}

fn put_string(out: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    out.put_i16(len);
    out.put_slice(&s.as_bytes()[..len as usize]);
}

/// A bounds-checked reader: every length is checked against the bytes present before use.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], TxnRecordError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| TxnRecordError("truncated".to_string()))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], TxnRecordError> {
        self.take(N)?
            .try_into()
            .map_err(|_| TxnRecordError("truncated".to_string()))
    }
    fn i8(&mut self) -> Result<i8, TxnRecordError> {
        Ok(i8::from_be_bytes(self.array()?))
    }
    fn i16(&mut self) -> Result<i16, TxnRecordError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, TxnRecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, TxnRecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn unsigned_varint(&mut self) -> Result<u64, TxnRecordError> {
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let byte = self.array::<1>()?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(TxnRecordError("varint too long".to_string()))
    }
    fn utf8(&mut self, len: usize) -> Result<String, TxnRecordError> {
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| TxnRecordError("string is not UTF-8".to_string()))
    }
    fn string(&mut self) -> Result<String, TxnRecordError> {
        let len =
            usize::try_from(self.i16()?).map_err(|_| TxnRecordError("null string".to_string()))?;
        self.utf8(len)
    }
    fn compact_string(&mut self) -> Result<String, TxnRecordError> {
        let len = usize::try_from(self.unsigned_varint()?)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .ok_or_else(|| TxnRecordError("null string".to_string()))?;
        self.utf8(len)
    }
    /// An array count (`None`: null), bounded by the bytes left (each element takes at least
    /// one byte), so a hostile count sizes nothing.
    fn count(&mut self, flexible: bool) -> Result<Option<usize>, TxnRecordError> {
        let count = if flexible {
            match self.unsigned_varint()? {
                0 => return Ok(None),
                n => n - 1,
            }
        } else {
            match self.i32()? {
                n if n < 0 => return Ok(None),
                n => n as u64,
            }
        };
        let left = (self.bytes.len() - self.at) as u64;
        if count > left {
            return Err(TxnRecordError(format!("{count} elements in {left} bytes")));
        }
        Ok(Some(count as usize))
    }
    fn skip_tagged_fields(&mut self) -> Result<(), TxnRecordError> {
        let fields = self.unsigned_varint()?;
        for _ in 0..fields {
            self.unsigned_varint()?;
            let len = usize::try_from(self.unsigned_varint()?)
                .map_err(|_| TxnRecordError("tagged field too long".to_string()))?;
            self.take(len)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip_in_kafkas_layout() {
        let key = encode_key("tx-1");
        assert_eq!(&key[..], &[0, 0, 0, 4, b't', b'x', b'-', b'1']);
        assert_eq!(decode_key(&key).unwrap(), "tx-1");
        let value = TxnValue {
            producer_id: 4000,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: [
                ("a".to_string(), 0),
                ("a".to_string(), 2),
                ("b".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            last_update_ms: 10,
            start_ms: 9,
        };
        let bytes = encode_value(&value);
        // version, pid, epoch, timeout, state, then 2 topics.
        assert_eq!(&bytes[..2], &[0, 0]);
        assert_eq!(bytes[16], 1, "Ongoing is state 1");
        assert_eq!(&bytes[17..21], &2i32.to_be_bytes());
        assert_eq!(decode_value(&bytes).unwrap(), value);
        for cut in 0..bytes.len() {
            assert!(decode_value(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn version_1_values_and_hostile_counts() {
        // A flexible version 1 value: compact strings and arrays, tagged fields.
        let mut v1 = vec![0, 1];
        v1.extend_from_slice(&7i64.to_be_bytes());
        v1.extend_from_slice(&1i16.to_be_bytes());
        v1.extend_from_slice(&1000i32.to_be_bytes());
        v1.push(2); // PrepareCommit
        v1.push(2); // one topic
        v1.push(2); // "t"
        v1.push(b't');
        v1.push(2); // one partition
        v1.extend_from_slice(&5i32.to_be_bytes());
        v1.push(0); // the topic's tagged fields
        v1.extend_from_slice(&20i64.to_be_bytes());
        v1.extend_from_slice(&19i64.to_be_bytes());
        v1.push(1); // one tagged field
        v1.push(0);
        v1.push(8);
        v1.extend_from_slice(&6i64.to_be_bytes());
        let value = decode_value(&v1).unwrap();
        assert_eq!(value.state, TxnState::PrepareCommit);
        assert_eq!(
            value.partitions.into_iter().collect::<Vec<_>>(),
            vec![("t".to_string(), 5)]
        );
        // A count far beyond the bytes present is refused before anything is sized by it.
        let mut hostile = encode_value(&TxnValue {
            producer_id: 1,
            producer_epoch: 0,
            timeout_ms: 1,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: 0,
            start_ms: -1,
        })
        .to_vec();
        hostile[17..21].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_value(&hostile).is_err());
    }
}
