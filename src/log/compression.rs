//! Decompression of record sections with a bound on what they may expand to.
//!
//! A compressed batch of a few KiB can claim gigabytes of records (zstd, lz4 and snappy frames
//! of zeros; gzip at about a thousand to one). Whatever reads inside batches (the produce
//! check, the keyless-record check of compacted topics, ListOffsets by timestamp, the log
//! cleaner, the group coordinator's replay) decompresses through here, with
//! [`decompressed_max_bytes`]: a batch whose records expand beyond it is refused on produce
//! and fails the read that meets it (stored before the bound existed), never the broker.
//!
//! The codecs are Kafka's framings, as kafka-protocol reads them: gzip (concatenated members
//! accepted, as Java's `GZIPInputStream`), snappy in xerial's block framing (raw snappy
//! accepted, as Kafka does), lz4 frames, zstd frames (window at most 2^[`ZSTD_WINDOW_LOG_MAX`],
//! so a frame cannot make the decoder allocate a huge window). Output is written through a
//! bounded sink: [`decompress`] keeps it (memory at most the bound), [`decompressed_len`]
//! counts and discards it (memory: a small scratch buffer).

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::Compression;

use super::LogError;

/// Records of a batch may expand to at most this many times the topic's `max.message.bytes`.
pub const DECOMPRESSION_RATIO_MAX: usize = 64;
/// ... and at least this many bytes, whatever `max.message.bytes` is.
pub const DECOMPRESSED_BYTES_FLOOR: usize = 1 << 20;
/// ... and at most this many, however large `max.message.bytes` is.
pub const DECOMPRESSED_BYTES_CEILING: usize = 1 << 30;
/// The largest zstd window a frame may ask for (16 MiB): zstd's own default allows 128 MiB,
/// which a hostile frame would make the decoder allocate.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// xerial's snappy framing: magic, version, compatible version; then `[u32 length][block]`.
const SNAPPY_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// The most a batch's records may expand to under `max_message_bytes`:
/// `64 × max.message.bytes`, at least 1 MiB, at most 1 GiB (64 MiB at Kafka's default).
pub fn decompressed_max_bytes(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_mul(DECOMPRESSION_RATIO_MAX)
        .clamp(DECOMPRESSED_BYTES_FLOOR, DECOMPRESSED_BYTES_CEILING)
}

/// A sink that refuses to take more than `left` bytes.
struct Bounded<W> {
    inner: W,
    left: usize,
    taken: usize,
    overflowed: bool,
}

impl<W: Write> Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.left {
            self.overflowed = true;
            return Err(io::Error::other("decompressed records exceed the bound"));
        }
        let written = self.inner.write(buf)?;
        self.left -= written;
        self.taken += written;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Discards what it is given.
struct Discard;

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Decompresses `compressed` with `codec`, keeping at most `max_bytes` of output.
pub fn decompress(
    codec: Compression,
    compressed: &[u8],
    max_bytes: usize,
) -> Result<Bytes, LogError> {
    let mut out = BytesWriter(BytesMut::new());
    run(codec, compressed, max_bytes, &mut out)?;
    Ok(out.0.freeze())
}

/// How many bytes `compressed` decompresses to with `codec`, failing past `max_bytes`; the
/// output is not kept.
pub fn decompressed_len(
    codec: Compression,
    compressed: &[u8],
    max_bytes: usize,
) -> Result<usize, LogError> {
    run(codec, compressed, max_bytes, &mut Discard)
}

/// `BytesMut` as a `Write` sink (the bound is [`Bounded`]'s).
struct BytesWriter(BytesMut);

impl Write for BytesWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn run<W: Write>(
    codec: Compression,
    compressed: &[u8],
    max_bytes: usize,
    out: &mut W,
) -> Result<usize, LogError> {
    let mut sink = Bounded {
        inner: out,
        left: max_bytes,
        taken: 0,
        overflowed: false,
    };
    let result = match codec {
        Compression::None => sink.write_all(compressed),
        Compression::Gzip => copy(flate2::read::MultiGzDecoder::new(compressed), &mut sink),
        Compression::Snappy => snappy(compressed, &mut sink),
        Compression::Lz4 => lz4::Decoder::new(compressed).and_then(|d| copy(d, &mut sink)),
        Compression::Zstd => {
            zstd::stream::read::Decoder::with_buffer(compressed).and_then(|mut d| {
                d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                copy(d, &mut sink)
            })
        }
    };
    match result {
        Ok(()) => Ok(sink.taken),
        Err(_) if sink.overflowed => Err(LogError::InvalidRecord {
            message: format!(
                "the batch's records decompress to more than {max_bytes} bytes \
                 ({DECOMPRESSION_RATIO_MAX} x max.message.bytes)"
            ),
            record_indexes: Vec::new(),
        }),
        Err(error) => Err(LogError::corrupt(format!(
            "cannot decompress {codec:?} records: {error}"
        ))),
    }
}

/// Copies a decoder's output through an 8 KiB buffer.
fn copy<R: Read, W: Write>(mut decoder: R, sink: &mut W) -> io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sink.write_all(&buf[..n])?;
    }
}

/// Snappy, xerial-framed or raw. Each block says how long it decompresses to before any of it
/// is decompressed, so the bound is checked before the block's buffer exists.
fn snappy<W: Write>(compressed: &[u8], sink: &mut Bounded<W>) -> io::Result<()> {
    let mut decoder = snap::raw::Decoder::new();
    let mut block = |data: &[u8], sink: &mut Bounded<W>| -> io::Result<()> {
        let len = snap::raw::decompress_len(data).map_err(io::Error::other)?;
        if len > sink.left {
            sink.overflowed = true;
            return Err(io::Error::other("decompressed records exceed the bound"));
        }
        let mut out = vec![0u8; len];
        let written = decoder
            .decompress(data, &mut out)
            .map_err(io::Error::other)?;
        sink.write_all(&out[..written])
    };
    let Some(mut rest) = compressed.strip_prefix(SNAPPY_MAGIC.as_slice()) else {
        return block(compressed, sink);
    };
    while !rest.is_empty() {
        let Some((length, after)) = rest.split_first_chunk::<4>() else {
            return Err(io::Error::other("snappy block length truncated"));
        };
        let length = u32::from_be_bytes(*length) as usize;
        if length > after.len() {
            return Err(io::Error::other("snappy block truncated"));
        }
        let (data, after) = after.split_at(length);
        block(data, sink)?;
        rest = after;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::compress_records;

    fn codecs() -> [Compression; 5] {
        [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ]
    }

    #[test]
    fn round_trips_within_the_bound() {
        let records: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for codec in codecs() {
            let mut compressed = BytesMut::new();
            compress_records(codec, &records, &mut compressed).unwrap();
            let out = decompress(codec, &compressed, records.len()).unwrap();
            assert_eq!(&out[..], &records[..], "{codec:?}");
            assert_eq!(
                decompressed_len(codec, &compressed, records.len()).unwrap(),
                records.len()
            );
            // One byte less is over the bound.
            assert!(
                matches!(
                    decompressed_len(codec, &compressed, records.len() - 1),
                    Err(LogError::InvalidRecord { .. })
                ),
                "{codec:?}"
            );
        }
    }

    /// A bomb (64 MiB of zeros) is refused at the bound without decompressing it all, and
    /// garbage is CORRUPT (not a panic, not an allocation).
    #[test]
    fn bombs_stop_at_the_bound_and_garbage_is_corrupt() {
        let zeros = vec![0u8; 64 << 20];
        for codec in codecs().into_iter().skip(1) {
            let mut bomb = BytesMut::new();
            compress_records(codec, &zeros, &mut bomb).unwrap();
            assert!(bomb.len() < 4 << 20, "{codec:?}: {} bytes", bomb.len());
            assert!(matches!(
                decompressed_len(codec, &bomb, 1 << 20),
                Err(LogError::InvalidRecord { .. })
            ));
            assert!(matches!(
                decompress(codec, &bomb, 1 << 20),
                Err(LogError::InvalidRecord { .. })
            ));
            let garbage = [0xffu8; 64];
            assert!(
                matches!(
                    decompressed_len(codec, &garbage, 1 << 20),
                    Err(LogError::CorruptBatch(_)) | Err(LogError::InvalidRecord { .. })
                ),
                "{codec:?}"
            );
        }
        // Raw snappy claiming 4 GiB: refused from its length header alone.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert!(matches!(
            decompressed_len(Compression::Snappy, &claim, 1 << 20),
            Err(LogError::InvalidRecord { .. })
        ));
    }

    #[test]
    fn the_bound_follows_max_message_bytes() {
        assert_eq!(decompressed_max_bytes(1_048_588), 1_048_588 * 64);
        assert_eq!(decompressed_max_bytes(100), 1 << 20);
        assert_eq!(decompressed_max_bytes(usize::MAX), 1 << 30);
    }
}
