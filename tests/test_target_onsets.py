"""scripts/target_onsets.py reads a matrix folder: a hand-made run, worked out by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]


def write_run(folder: Path) -> None:
    """Three fakes (f1-f3), each rating one filler item and then the target t; one honest
    rating of t between them. The campaign was detected after 5 events, and drift
    alarmed after 4."""
    run = folder / "synthetic-shilling_random-1"
    run.mkdir(parents=True)
    events = [("h1", "t", 3.0, "")]
    for k in (1, 2, 3):
        events += [(f"f{k}", f"x{k}", 4.0, "c1"), (f"f{k}", "t", 5.0, "c1")]
    events.insert(4, ("h2", "t", 2.0, ""))
    lines = [
        orjson.dumps({"event_id": f"e{i}", "account_id": a, "item_id": item, "rating": r})
        for i, (a, item, r, _) in enumerate(events)
    ]
    (run / "events.jsonl").write_bytes(b"\n".join(lines + [b"not json"]) + b"\n")
    truth = ["event_id,poisoned,attack,campaign"] + [
        f"e{i},{int(bool(c))},{'shilling' if c else ''},{c}" for i, (*_, c) in enumerate(events)
    ]
    (run / "truth.csv").write_text("\n".join(truth) + "\n")
    metrics = {"by_campaign": {"c1": {"time_to_detect_events": 5, "time_to_drift_alarm_events": 4}}}
    (run / "metrics.json").write_bytes(orjson.dumps(metrics))


def test_onsets_of_a_hand_made_run(tmp_path):
    write_run(tmp_path)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "target_onsets.py"), str(tmp_path),
         "--within", "4", "--alarm-within", "3"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    # the third fake rates the target at the campaign's sixth event
    assert "detected after 5 events, 3 accounts on the target after 6" in lines[0]
    assert lines[1].startswith("issue 5: 1 of 1 shilling campaigns detected after 4 events")
    assert lines[1].endswith("in 1 of them fewer than 3 accounts had rated the target by then")
    # drift alarmed at campaign event 4, after two target ratings (events 2 and 4); the
    # campaign gave its second one at event 4, after the 3 asked
    assert lines[2] == (
        "issue 4: drift alarmed on 1 of 1 shilling and bombing campaigns, after a median of "
        "2 target ratings; 1 had no alarm within 3 events, and in 1 of those the campaign "
        "had not given 2 target ratings by then"
    )
