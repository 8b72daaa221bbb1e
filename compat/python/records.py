"""The record set both clients produce and read back byte for byte."""

from __future__ import annotations

import random
import time
import zlib
from dataclasses import dataclass

Header = tuple[str, "bytes | None"]


@dataclass(frozen=True)
class Rec:
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp: int  # CreateTime, milliseconds


def sample_records(base_ts: int | None = None) -> list[Rec]:
    """Keys, values and headers that exercise the edges of the record format.

    Timestamps are explicit and one second apart, starting an hour ago.
    """
    if base_ts is None:
        base_ts = int(time.time() * 1000) - 3_600_000
    rnd = random.Random(20240229)
    rows: list[tuple[bytes | None, bytes | None, tuple[Header, ...]]] = [
        (b"k1", b"v1", (("h1", b"a"),)),
        (None, b"no-key", ()),                                   # null key
        (b"tombstone", None, (("h", b"x"),)),                    # null value
        (None, None, ()),                                        # both null
        (b"", b"", ()),                                          # empty, not null
        (b"bin\x00\xff\x80", bytes(range(256)),                   # binary
         (("dup", b"1"), ("dup", b"2"), ("nullhdr", None), ("empty", b""))),
        ("utf8-ü".encode(), "ünïcödé ✓".encode(),
         (("ключ", "значение".encode()),)),
        (b"big", rnd.randbytes(200_000), (("size", b"200000"),)),  # ~200 KB value
        (b"k1", b"v1-again", ()),                                # repeated key
    ]
    return [Rec(k, v, h, base_ts + i * 1000) for i, (k, v, h) in enumerate(rows)]


def describe(r: Rec) -> str:
    def short(b):
        if b is None:
            return "None"
        return repr(b[:24]) + (f"...({len(b)} bytes)" if len(b) > 24 else "")
    return f"key={short(r.key)} value={short(r.value)} headers={r.headers!r} ts={r.timestamp}"


def librdkafka_partition(key: bytes, partitions: int) -> int:
    """librdkafka's default `consistent_random` partitioner for non-empty keys."""
    return zlib.crc32(key) % partitions


def timestamp_lookup(timestamps: list[int], target: int) -> int:
    """Kafka's answer to ListOffsets(timestamp=target): the earliest offset whose
    timestamp is >= target, or -1 when there is none."""
    for offset, ts in enumerate(timestamps):
        if ts >= target:
            return offset
    return -1
