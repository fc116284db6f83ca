"""scripts/target_onsets.py reads a matrix folder: a hand-made run, worked out by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]


def write_run(folder: Path) -> None:
    """Three fakes (f1-f3) rate the target t at 5, then one filler item each; two honest
    ratings of t (h1 before, h2 between). The campaign's six events are lines 1, 2, 4, 5,
    6 and 7; it was detected after 6 of them, and drift alarmed after 4."""
    run = folder / "synthetic-shilling_random-1"
    run.mkdir(parents=True)
    events = [
        ("h1", "t", 3.0, ""), ("f1", "t", 5.0, "c1"), ("f2", "t", 5.0, "c1"),
        ("h2", "t", 2.0, ""), ("f3", "t", 5.0, "c1"),
        ("f1", "x1", 4.0, "c1"), ("f2", "x2", 4.0, "c1"), ("f3", "x3", 4.0, "c1"),
    ]  # fmt: skip
    lines = [
        orjson.dumps({"event_id": f"e{i}", "account_id": a, "item_id": item, "rating": r})
        for i, (a, item, r, _) in enumerate(events)
    ]
    (run / "events.jsonl").write_bytes(b"\n".join(lines + [b"not json"]) + b"\n")
    truth = ["event_id,poisoned,attack,campaign"] + [
        f"e{i},{int(bool(c))},{'shilling' if c else ''},{c}" for i, (*_, c) in enumerate(events)
    ]
    (run / "truth.csv").write_text("\n".join(truth) + "\n")
    metrics = {"by_campaign": {"c1": {"time_to_detect_events": 6, "time_to_drift_alarm_events": 4}}}
    (run / "metrics.json").write_bytes(orjson.dumps(metrics))


def onsets(folder: Path, *args: str) -> list[str]:
    script = ROOT / "scripts" / "target_onsets.py"
    result = subprocess.run(
        [sys.executable, str(script), str(folder), "--within", "4", "--alarm-within", "3", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout.splitlines()


def test_a_group_too_small_by_the_bar(tmp_path):
    write_run(tmp_path)
    lines = onsets(tmp_path, "--accounts", "4", "--warmup", "0")
    assert lines[0].endswith(
        "detected after 6 events, 4 accounts on the target after None, events in the warm-up: 0"
    )
    assert lines[1] == (
        "issue 5: 1 of 1 shilling campaigns detected after 4 events or never; in 1 of them "
        "fewer than 4 accounts had rated the target by then, and in 0 more all those events "
        "came in the warm-up"
    )
    # drift alarmed at campaign event 4, after the campaign's three target ratings (its
    # events 1-3), which it had all given by event 3
    assert lines[2] == (
        "issue 4: drift alarmed on 1 of 1 shilling and bombing campaigns, after a median of "
        "3 target ratings; 1 had no alarm within 3 events, and in 0 of those the campaign "
        "had not given 3 target ratings by then"
    )


def test_a_group_in_reach_but_inside_the_warm_up(tmp_path):
    write_run(tmp_path)
    # three accounts by event 3; the stream's seventh rating is line 6, and four of the
    # campaign's events came before it
    lines = onsets(tmp_path, "--warmup", "7")
    assert lines[0].endswith("3 accounts on the target after 3, events in the warm-up: 4")
    assert lines[1].endswith(
        "in 0 of them fewer than 3 accounts had rated the target by then, and in 1 more all "
        "those events came in the warm-up"
    )
