"""Records written by one client's encoder are read back exactly by the other client."""

from __future__ import annotations

import test_confluent as ck
import test_kafka_python as kp
from confluent_kafka import OFFSET_BEGINNING, TopicPartition as CkTP
from kafka import TopicPartition as KpTP

from records import describe, sample_records


def _check(want, got):
    assert len(got) == len(want)
    for i, (w, h) in enumerate(zip(want, got)):
        assert h == w, f"offset {i}:\n want {describe(w)}\n have {describe(h)}"


def test_confluent_writes_kafka_python_reads(gregor, topic_name):
    ck.create_topic(gregor, topic_name)
    recs = sample_records()  # the full set, null header values and null key+value included
    ck.produce_all(ck.producer(gregor, **{"compression.type": "lz4"}), topic_name, recs)
    c = kp.consumer(gregor)
    try:
        tp = KpTP(topic_name, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        msgs = kp.consume_n(c, len(recs))
        assert [m.offset for m in msgs] == list(range(len(recs)))
        _check(recs, [kp.as_rec(m) for m in msgs])
    finally:
        c.close()


def test_kafka_python_writes_confluent_reads(gregor, topic_name):
    kp.create_topic(gregor, topic_name)
    recs = kp.kp_records(sample_records())
    kp.produce_all(kp.producer(gregor, compression_type="gzip"), topic_name, recs)
    c = ck.consumer(gregor)
    try:
        c.assign([CkTP(topic_name, 0, OFFSET_BEGINNING)])
        msgs = ck.consume_n(c, len(recs))
        assert [m.offset() for m in msgs] == list(range(len(recs)))
        _check(recs, [ck.as_rec(m) for m in msgs])
    finally:
        c.close()
