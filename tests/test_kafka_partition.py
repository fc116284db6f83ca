"""The publisher picks each keyed message's partition itself, a tick at a time; it must
pick exactly what the Java client and kafka-python's default partitioner would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2

from streamguard.kafka import key_partitions

# Kafka's own murmur2 vectors (UtilsTest in the Java client), as signed 32-bit ints.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def reference(keys: list[bytes], count: int) -> list[int]:
    return [(murmur2(k) & 0x7FFFFFFF) % count for k in keys]


def test_matches_the_java_clients_hash_in_the_vectorised_path():
    keys = [k for k in JAVA_MURMUR2 for _ in range(8)]  # eight of each: hashed as arrays
    expected = [(v & 0x7FFFFFFF) % 1_000_003 for v in JAVA_MURMUR2.values() for _ in range(8)]
    assert key_partitions(keys, 1_000_003).tolist() == expected


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(0, 40),
    keys=st.lists(st.binary(min_size=0, max_size=40), max_size=30),
    same_length=st.lists(st.binary(min_size=13, max_size=13), min_size=8, max_size=60),
    count=st.integers(1, 64),
)
def test_matches_kafka_pythons_default_partitioner(length, keys, same_length, count):
    mixed = keys + same_length + [bytes(range(length))] * 9
    assert key_partitions(mixed, count).tolist() == reference(mixed, count)
