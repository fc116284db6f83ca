"""Detector state survives restarts: same verdicts with and without a stop mid-stream."""

from __future__ import annotations

import signal

import orjson
import pytest
from kafka_support import committed, produce, read_all, start_service, topics, wait_for

from streamguard.assembly import build_pipeline
from streamguard.config import load_settings
from streamguard.evaluate.runner import replay
from streamguard.simulate import simulate

pytestmark = pytest.mark.kafka
TICK = 500


def service_env(state_dir) -> dict[str, str]:
    return {
        "STREAMGUARD_STATE__DIR": str(state_dir),
        "STREAMGUARD_STATE__EVERY_TICKS": "3",
        "STREAMGUARD_KAFKA__MAX_POLL_RECORDS": str(TICK),
        "STREAMGUARD_KAFKA__TICK_LINGER_MS": "4000",
    }


@pytest.fixture(scope="module")
def stream():
    lines = [orjson.dumps(e) for e in simulate("shilling_bandwagon", 8_000, 5).events]
    settings = load_settings(overrides={"policy": {"warmup": 50}})  # as start_service sets
    rows, _ = replay(build_pipeline(settings), lines, TICK, progress=False)
    held = {r.event_id for r in rows if r.final_action == "quarantine"}
    assert held, "the reference run must quarantine something for the comparison to bite"
    return lines, held


def outputs(names):
    clean = read_all(names["clean"])
    released = {k.decode() for k, v in clean if v is not None}
    revoked = {k.decode() for k, v in clean if v is None}
    held = {k.decode() for k, _ in read_all(names["quarantine"])}
    return released - revoked, held


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_stop_in_the_middle_changes_no_verdict(stream, tmp_path, kafka_broker, how):
    lines, expected_held = stream
    names = topics()
    produce(names["events"], lines)
    env = service_env(tmp_path / "state")
    proc = start_service(names, env=env)
    try:
        # A quarter, not half: each check opens an admin client, and on a loaded machine
        # the service once committed the other half before the signal came.
        wait_for(
            lambda: committed(names["group"], names["events"]) >= len(lines) // 4,
            120,
            "a quarter of the stream",
        )
    finally:
        proc.send_signal(how)
        proc.communicate(timeout=60)
    assert committed(names["group"], names["events"]) < len(lines), "stopped too late to test"
    proc = start_service(names, env=env)
    try:
        wait_for(lambda: committed(names["group"], names["events"]) >= len(lines), 180, "the rest")
    finally:
        proc.send_signal(signal.SIGTERM)
        log = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert "restored detector state" in log
    clean, held = outputs(names)
    assert held == expected_held
    assert len(clean) + len(held) == len(lines)
