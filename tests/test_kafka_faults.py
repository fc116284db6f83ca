"""kill -9 at random points of a 100k-event stream: every event ends up exactly once.

Each round starts a member, lets it make progress, then kills it with SIGKILL at a random
moment (mid-tick, mid-transaction or mid-checkpoint, wherever it happens to be). A last
member finishes the stream. Afterwards every input event is in exactly one of clean,
quarantine and dead-letter (a revoked clean event also appears in quarantine), none twice.
"""

from __future__ import annotations

import random
import signal
import time

import orjson
import pytest
from factories import benign_stream
from kafka_support import committed, produce, read_all, start_service, topics, wait_for

pytestmark = pytest.mark.kafka
PARTITIONS = 2
EVENTS = 100_000
KILLS = 6
BAD_EVERY = 5_000  # a malformed record now and then, for the dead-letter topic


def test_kill_9_at_random_points_loses_and_doubles_nothing(tmp_path, kafka_broker):
    names = topics(PARTITIONS)
    events = benign_stream(EVENTS, seed=31, accounts=5_000, items=2_000)
    lines = []
    for i, e in enumerate(events):
        lines.append(orjson.dumps(e))
        if i % BAD_EVERY == 0:
            lines.append(b'{"event_id": "broken", "kind": ')
    produce(names["events"], lines)
    total = len(lines)
    env = {
        "STREAMGUARD_STATE__DIR": str(tmp_path / "state"),
        "STREAMGUARD_STATE__EVERY_TICKS": "4",
        "STREAMGUARD_KAFKA__SESSION_TIMEOUT_MS": "6000",
    }
    done = lambda: committed(names["group"], names["events"], PARTITIONS)  # noqa: E731
    rng = random.Random(5)
    mid_stream_kills = 0
    for _ in range(KILLS):
        before = done()
        if before >= total:
            break
        proc = start_service(names, env=env)
        try:
            wait_for(lambda: done() > before, 120, "progress after a restart")  # noqa: B023
            time.sleep(rng.uniform(0.0, 2.0))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
        mid_stream_kills += done() < total
    assert mid_stream_kills >= 3, "the stream ended too soon for the kills to bite"
    log = tmp_path / "last-member.log"
    proc = start_service(names, env=env, log=log)
    try:
        # The stream may have ended under the last killed member: the last one must still
        # be up (its signal handlers in place) before it is asked to stop.
        wait_for(lambda: b"connected to" in log.read_bytes(), 120, "the last member to start")
        wait_for(lambda: done() >= total, 300, "the last member to finish the stream")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0

    clean_log = read_all(names["clean"], timeout_s=120)
    clean = [k.decode() for k, v in clean_log if v is not None]
    revoked = {k.decode() for k, v in clean_log if v is None}
    held = [k.decode() for k, _ in read_all(names["quarantine"], timeout_s=120)]
    dead = read_all(names["dlq"], timeout_s=60)
    assert len(clean) == len(set(clean)), "an event was released twice"
    assert len(held) == len(set(held)), "an event was quarantined twice"
    assert len(dead) == total - EVENTS, "a malformed record was lost or doubled"
    assert set(clean) | set(held) == {e["event_id"] for e in events}, "an event was lost"
    assert set(clean) & set(held) == revoked & set(clean), "held and released, not revoked"
