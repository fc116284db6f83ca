"""`streamguard simulate` + `streamguard eval`, in-process and through the real broker."""

from __future__ import annotations

import csv

import orjson
import pytest

from streamguard.assembly import build_pipeline
from streamguard.cli import main
from streamguard.config import load_settings
from streamguard.detectors.drift import DriftDetector
from streamguard.evaluate import evaluate_lines
from streamguard.evaluate.metrics import compute_metrics, read_truth_csv
from streamguard.evaluate.runner import read_lines, replay
from streamguard.simulate.simulation import simulate


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert (
        main(
            [
                "simulate",
                "--scenario",
                "mixed",
                "--events",
                "6000",
                "--seed",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with (out / "events.jsonl").open("ab") as f:
        f.write(b"this line is not an event\n")
    return out


def test_eval_writes_the_contract_files(stream, tmp_path):
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                str(stream / "events.jsonl"),
                "--truth",
                str(stream / "truth.csv"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = orjson.loads((out / "metrics.json").read_bytes())
    lines = (stream / "events.jsonl").read_bytes().splitlines()
    assert metrics["events"] == len(lines)
    assert metrics["clean"] + metrics["quarantined"] + metrics["dlq"] == len(lines)
    assert metrics["dlq"] == 1
    truth = read_truth_csv(stream / "truth.csv")
    assert set(metrics["by_attack"]) == {t.attack for t in truth.values() if t.attack}
    for key in ("precision", "recall", "f1", "fpr"):
        assert 0.0 <= metrics["overall"][key] <= 1.0
    with (out / "verdicts.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["event_id", "first_action", "final_action", "score", "reasons"]
    assert len(rows) == len(lines) + 1
    assert rows[-1][:3] == ["", "dlq", "dlq"]
    assert '<img src="data:image/png;base64,' in (out / "report.html").read_text()


def test_replay_marks_the_lines_where_the_drift_detector_alarmed():
    sim = simulate("rating_bombing", 6000, seed=2)
    pipeline = build_pipeline(load_settings())
    rows, _ = replay(pipeline, [orjson.dumps(e) for e in sim.events], 500, progress=False)
    (drift,) = [d for d in pipeline.detectors if isinstance(d, DriftDetector)]
    marked = {
        (sim.events[r.line]["item_id"], sim.events[r.line]["ts"]) for r in rows if r.drift_alarm
    }
    assert set((key, ts) for key, ts, _ in drift.ratings.alarm_log) <= marked
    assert len(marked) <= drift.ratings.alarms_total + drift.labels.alarms_total
    metrics = compute_metrics(rows, {t.event_id: t for t in sim.truth}, elapsed_s=1.0)
    (bombing,) = metrics["by_campaign"].values()
    assert 1 <= bombing["time_to_drift_alarm_events"] <= bombing["events"]


def test_simulate_lists_scenarios(capsys):
    assert main(["simulate", "--scenario", "list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"benign", "mixed", "shilling_random", "backdoor", "slow_drip"} <= set(names)


@pytest.mark.kafka
def test_eval_through_kafka_agrees_with_in_process(stream, tmp_path, kafka_broker):
    settings = load_settings()
    lines = read_lines(stream / "events.jsonl")
    truth = read_truth_csv(stream / "truth.csv")
    local = evaluate_lines(lines, truth, tmp_path / "local", settings, progress=False)
    remote = evaluate_lines(
        lines, truth, tmp_path / "kafka", settings, bootstrap_servers=kafka_broker
    )
    assert (tmp_path / "local" / "verdicts.csv").read_text() == (
        tmp_path / "kafka" / "verdicts.csv"
    ).read_text()
    for key in ("events", "clean", "quarantined", "dlq", "overall", "by_attack"):
        assert local[key] == remote[key], key


def test_matrix_doc_is_regenerated_and_keeps_the_notes_below_the_marker(tmp_path):
    from streamguard.cli import HAND_WRITTEN

    doc = tmp_path / "EVALUATION.md"
    doc.write_text(f"# old\n| stale | row |\n\n{HAND_WRITTEN}\nWhy the numbers look so.\n")
    argv = ["matrix", "--scenarios", "benign", "--seeds", "1", "--events", "1500"]
    assert main([*argv, "--out", str(tmp_path / "m"), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "| benign | synthetic | 1 |" in text and "stale" not in text
    assert text.endswith(f"{HAND_WRITTEN}\nWhy the numbers look so.\n")
    assert "streamguard matrix --scenarios benign" in text
