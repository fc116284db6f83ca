"""Scoring against truth, checked on streams small enough to work out by hand."""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from streamguard.evaluate.metrics import (
    TruthRow,
    VerdictRow,
    auc_and_ap,
    compute_metrics,
    read_truth_csv,
    read_verdicts_csv,
    write_verdicts_csv,
)

approx = pytest.approx


def row(
    line: int,
    event_id: str,
    first: str,
    final: str,
    score: float,
    reasons: tuple[str, ...] = (),
    ts: float | None = None,
    left_at: int | None = None,
    left_ts: float | None = None,
    scores: dict[str, float] | None = None,
) -> VerdictRow:
    return VerdictRow(
        line, event_id, first, final, score, reasons, ts, scores or {}, left_at, left_ts
    )


def benign(event_id: str) -> TruthRow:
    return TruthRow(event_id, False, "", "")


def hand_stream() -> tuple[list[VerdictRow], dict[str, TruthRow]]:
    """Ten lines, three scored poisoned events in two campaigns, one revoked late, one dlq.

    line event  truth          first/final            score reasons       left at
    0    e0     benign         clean/clean            0.10
    1    e1     benign         clean/clean            0.20
    2    e2     shill c1       clean/quarantine       0.60  burst         6 (revoked)
    3    e3     benign         quarantine             0.70  text          3 (false positive)
    4    e4     shill c1       clean/clean            0.30                 (missed)
    5    e5     spam c2        dlq                    1.00                 (not scored)
    6    e6     benign         clean/clean            0.15
    7    e7     spam c2        quarantine             0.90  text;burst    7
    8    e8     benign         clean/clean            0.05
    9    x9     (no truth)     quarantine             0.80  text          9 (not scored)
    """
    s = {"burst": 0.1, "text": 0.2}
    rows = [
        row(0, "e0", "clean", "clean", 0.10, ts=100.0, scores=s),
        row(1, "e1", "clean", "clean", 0.20, ts=101.0, scores=s),
        row(2, "e2", "clean", "quarantine", 0.60, ("burst",), 102.0, 6, 106.0, s),
        row(3, "e3", "quarantine", "quarantine", 0.70, ("text",), 103.0, 3, 103.0, s),
        row(4, "e4", "clean", "clean", 0.30, ts=104.0, scores={**s, "idle": 0.0}),
        row(5, "e5", "dlq", "dlq", 1.0),
        row(6, "e6", "clean", "clean", 0.15, ts=106.0, scores=s),
        row(7, "e7", "quarantine", "quarantine", 0.90, ("text", "burst"), 107.0, 7, 107.0, s),
        row(8, "e8", "clean", "clean", 0.05, ts=108.0, scores=s),
        row(9, "x9", "quarantine", "quarantine", 0.80, ("text",), 109.0, 9, 109.0, s),
    ]
    truth = {
        t.event_id: t
        for t in [
            benign("e0"),
            benign("e1"),
            TruthRow("e2", True, "shill", "c1"),
            benign("e3"),
            TruthRow("e4", True, "shill", "c1"),
            TruthRow("e5", True, "spam", "c2"),
            benign("e6"),
            TruthRow("e7", True, "spam", "c2"),
            benign("e8"),
            benign("e99"),
        ]
    }
    return rows, truth


def test_hand_stream_counts_and_overall():
    rows, truth = hand_stream()
    m = compute_metrics(rows, truth, elapsed_s=2.0)
    assert (m["events"], m["clean"], m["quarantined"], m["dlq"]) == (10, 5, 4, 1)
    assert m["revoked"] == 1
    # scored = in truth and not dlq: lines 0,1,2,3,4,6,7,8
    assert (m["scored"], m["poisoned"], m["benign"]) == (8, 3, 5)
    assert (m["without_truth"], m["dlq_with_truth"]) == (1, 1)
    assert (m["truth_rows"], m["truth_not_in_stream"]) == (10, 1)
    # final: TP = e2, e7; FP = e3; FN = e4; TN = e0, e1, e6, e8
    o = m["overall"]
    assert (o["tp"], o["fp"], o["fn"], o["tn"]) == (2, 1, 1, 4)
    assert o["precision"] == approx(2 / 3)
    assert o["recall"] == approx(2 / 3)
    assert o["f1"] == approx(2 / 3)
    assert o["fpr"] == approx(1 / 5)
    # first verdict: TP = e7; FP = e3; FN = e2, e4
    f = m["first_verdict"]
    assert (f["tp"], f["fp"], f["fn"], f["tn"]) == (1, 1, 2, 4)
    assert (f["precision"], f["recall"], f["f1"]) == (approx(0.5), approx(1 / 3), approx(0.4))
    assert m["throughput_eps"] == approx(5.0)
    assert m["elapsed_s"] == 2.0


def test_hand_stream_ranking():
    m = compute_metrics(*hand_stream(), elapsed_s=1.0)
    # poisoned 0.6, 0.3, 0.9 vs benign 0.1, 0.2, 0.7, 0.15, 0.05: 4 + 4 + 5 of 15 pairs
    assert m["auc_roc"] == approx(13 / 15)
    # ranked: 0.9 P, 0.7 N, 0.6 P, 0.3 P -> precisions 1, 2/3, 3/4 at the positives
    assert m["average_precision"] == approx((1 + 2 / 3 + 3 / 4) / 3)


def test_hand_stream_by_attack():
    m = compute_metrics(*hand_stream(), elapsed_s=1.0)
    assert set(m["by_attack"]) == {"shill", "spam"}
    shill, spam = m["by_attack"]["shill"], m["by_attack"]["spam"]
    assert shill == {"events": 2, "caught": 1, "recall": 0.5, "recall_first_verdict": 0.0, "dlq": 0}
    assert spam == {"events": 1, "caught": 1, "recall": 1.0, "recall_first_verdict": 1.0, "dlq": 1}


def test_hand_stream_by_campaign_counts_revocation_when_it_happened():
    m = compute_metrics(*hand_stream(), elapsed_s=1.0)
    c1, c2 = m["by_campaign"]["c1"], m["by_campaign"]["c2"]
    # c1: e2 (line 2) revoked while line 6 was processed, e4 (line 4) missed. Both were seen
    # by position 6, so two events passed before the campaign was detected.
    assert c1 == {
        "attack": "shill",
        "events": 2,
        "caught": 1,
        "recall": 0.5,
        "recall_first_verdict": 0.0,
        "first_event_line": 2,
        "first_event_ts": 102.0,
        "detected": True,
        "detected_at_line": 6,
        "time_to_detect_events": 2,
        "time_to_detect_seconds": 4.0,
        "time_to_detect_events_by_detector": {"burst": 2},
        "time_to_drift_alarm_events": None,
    }
    # c2: e5 went to the dlq (not scored); e7 quarantined at once.
    assert c2 == {
        "attack": "spam",
        "events": 1,
        "caught": 1,
        "recall": 1.0,
        "recall_first_verdict": 1.0,
        "first_event_line": 7,
        "first_event_ts": 107.0,
        "detected": True,
        "detected_at_line": 7,
        "time_to_detect_events": 1,
        "time_to_detect_seconds": 0.0,
        "time_to_detect_events_by_detector": {"text": 1, "burst": 1},
        "time_to_drift_alarm_events": None,
    }


def test_each_detector_has_its_own_time_to_detect():
    """Issue 4 asks how soon the drift detectors fire, whoever fired first."""
    rows = [
        row(i, f"e{i}", "quarantine" if i >= 2 else "clean", "quarantine" if i >= 2 else "clean",
            0.9 if i >= 2 else 0.1, reasons, ts=float(i), left_at=i if i >= 2 else None)
        for i, reasons in enumerate([(), (), ("campaign",), ("campaign",), ("campaign", "drift")])
    ]  # fmt: skip
    truth = {f"e{i}": TruthRow(f"e{i}", True, "bomb", "c1") for i in range(5)}
    c1 = compute_metrics(rows, truth, elapsed_s=1.0)["by_campaign"]["c1"]
    assert c1["time_to_detect_events"] == 3
    assert c1["time_to_detect_events_by_detector"] == {"campaign": 3, "drift": 5}


def test_time_to_drift_alarm_counts_only_alarms_on_the_campaigns_own_targets():
    """An alarm comes before the holds it leads to, and another detector may hold the
    events first. An alarm raised on an honest event is not the campaign's, nor one on a
    fake's filler item (rated by fewer than half of its accounts): on a busy stream some
    item alarms all the time."""
    # line: 0-1 honest on the target; 2 a fake's filler; 3-5 the fakes on the target.
    items = ["t", "t", "filler", "t", "t", "t"]
    accounts = ["h0", "h1", "f0", "f0", "f1", "f2"]
    rows = [
        replace(
            row(i, f"e{i}", "clean", "clean", 0.1, ts=float(i)),
            drift_alarm=i in (1, 2, 4),
            item_id=items[i],
            account_id=accounts[i],
        )
        for i in range(6)
    ]
    truth = {f"e{i}": TruthRow(f"e{i}", i >= 2, "bomb" if i >= 2 else "", "c1" if i >= 2 else "")
             for i in range(6)}  # fmt: skip
    c1 = compute_metrics(rows, truth, elapsed_s=1.0)["by_campaign"]["c1"]
    assert c1["time_to_drift_alarm_events"] == 3  # line 4, the campaign's third event
    assert c1["detected"] is False


def test_hand_stream_by_detector():
    m = compute_metrics(*hand_stream(), elapsed_s=1.0)
    d = m["by_detector"]
    assert set(d) == {"burst", "text", "idle"}
    # burst on e2 (revocation) and e7: both poisoned; text on e3 and e7 (x9 has no truth)
    assert d["burst"] == {
        "flagged": 2,
        "true_positives": 2,
        "precision": 1.0,
        "recall": approx(2 / 3),
    }
    assert d["text"] == {
        "flagged": 2,
        "true_positives": 1,
        "precision": 0.5,
        "recall": approx(1 / 3),
    }
    assert d["idle"] == {"flagged": 0, "true_positives": 0, "precision": 0.0, "recall": 0.0}


def test_undetected_campaign_and_late_start():
    truth = {
        "a": TruthRow("a", True, "drip", "k"),
        "b": TruthRow("b", True, "drip", "k"),
        "z": TruthRow("z", True, "drip", "never-seen"),
        "n": benign("n"),
    }
    rows = [
        row(0, "n", "clean", "clean", 0.0, ts=10.0),
        row(1, "a", "clean", "clean", 0.1),
        row(2, "b", "clean", "clean", 0.2, ts=12.0),
    ]
    m = compute_metrics(rows, truth, 1.0)
    k = m["by_campaign"]["k"]
    assert k["detected"] is False
    assert k["time_to_detect_events"] is None and k["time_to_detect_seconds"] is None
    assert (k["first_event_line"], k["first_event_ts"]) == (1, None)
    never = m["by_campaign"]["never-seen"]
    assert never["events"] == 0 and never["first_event_line"] is None and not never["detected"]
    assert m["by_attack"]["drip"]["events"] == 2


def test_metrics_do_not_depend_on_row_order():
    rows, truth = hand_stream()
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    assert compute_metrics(shuffled, truth, 1.0) == compute_metrics(rows, truth, 1.0)


def test_metrics_are_plain_json():
    m = compute_metrics(*hand_stream(), elapsed_s=1.0)
    text = json.dumps(m, allow_nan=False)
    assert json.loads(text) == orjson.loads(orjson.dumps(m))


def test_zero_divisions_give_zero_not_nan():
    m = compute_metrics([], {}, 0.0)
    assert (m["events"], m["clean"], m["quarantined"], m["dlq"]) == (0, 0, 0, 0)
    assert m["overall"]["precision"] == m["overall"]["recall"] == 0.0
    assert m["overall"]["f1"] == m["overall"]["fpr"] == 0.0
    assert m["throughput_eps"] == 0.0
    assert m["auc_roc"] is None and m["average_precision"] is None
    assert m["by_attack"] == m["by_campaign"] == m["by_detector"] == {}
    json.dumps(m, allow_nan=False)


def test_all_benign_nothing_quarantined():
    truth = {f"e{i}": benign(f"e{i}") for i in range(3)}
    rows = [row(i, f"e{i}", "clean", "clean", 0.1) for i in range(3)]
    m = compute_metrics(rows, truth, float("nan"))
    assert m["overall"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "fpr": 0.0,
        "tp": 0,
        "fp": 0,
        "fn": 0,
        "tn": 3,
    }
    assert m["auc_roc"] is None and m["average_precision"] is None
    assert m["throughput_eps"] == 0.0 and m["elapsed_s"] == 0.0
    json.dumps(m, allow_nan=False)


def test_attack_named_in_truth_but_absent_from_stream_still_listed():
    truth = {"p": TruthRow("p", True, "backdoor", "b1"), "q": TruthRow("q", True, "", "")}
    m = compute_metrics([row(0, "x", "clean", "clean", 0.0)], truth, 1.0)
    assert m["by_attack"]["backdoor"] == {
        "events": 0,
        "caught": 0,
        "recall": 0.0,
        "recall_first_verdict": 0.0,
        "dlq": 0,
    }
    assert "" in m["by_attack"]  # a poisoned row without an attack name keeps its (empty) name


def test_unknown_action_is_rejected():
    with pytest.raises(ValueError, match="unknown actions"):
        compute_metrics([row(0, "e", "clean", "revoked", 0.0)], {}, 1.0)


@pytest.mark.parametrize(
    ("labels", "scores", "auc", "ap"),
    [
        ([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1], 1.0, 1.0),  # perfect
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 0.0, (1 / 3 + 2 / 4) / 2),  # reversed
        ([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5], 0.5, 0.5),  # all tied: chance, base rate
        ([1, 1], [0.3, 0.4], None, None),  # one class
    ],
)
def test_auc_and_ap_known_rankings(labels, scores, auc, ap):
    import numpy as np

    got_auc, got_ap = auc_and_ap(np.array(labels, bool), np.array(scores))
    assert got_auc == (None if auc is None else approx(auc))
    assert got_ap == (None if ap is None else approx(ap))


def test_auc_matches_pairwise_count_with_ties():
    import numpy as np

    rng = np.random.default_rng(7)
    y = rng.random(300) < 0.3
    s = rng.integers(0, 10, 300) / 10.0  # many ties
    pos, neg = s[y], s[~y]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    auc, _ = auc_and_ap(y, s)
    assert auc == approx(pairs / (pos.size * neg.size))


def test_verdicts_csv_round_trip_in_line_order(tmp_path: Path):
    rows, _ = hand_stream()
    tricky = row(10, 'id,with "quotes"', "clean", "quarantine", 0.123456789, ("a", "b", "a"))
    path = tmp_path / "verdicts.csv"
    write_verdicts_csv(path, [tricky, *reversed(rows)])
    assert path.read_text().splitlines()[0] == "event_id,first_action,final_action,score,reasons"
    back = read_verdicts_csv(path)
    assert len(back) == 11
    assert [b["event_id"] for b in back] == [r.event_id for r in rows] + [tricky.event_id]
    assert back[7] == {
        "event_id": "e7",
        "first_action": "quarantine",
        "final_action": "quarantine",
        "score": 0.9,
        "reasons": ("text", "burst"),
    }
    assert back[5]["reasons"] == () and back[5]["final_action"] == "dlq"
    assert back[10]["score"] == 0.123456789 and back[10]["reasons"] == ("a", "b")


def test_truth_csv_reads(tmp_path: Path):
    path = tmp_path / "truth.csv"
    path.write_text(
        "\ufeffevent_id,poisoned,attack,campaign\ne1,0,,\ne2,1,shill,c1\n\n", encoding="utf-8"
    )
    truth = read_truth_csv(path)
    assert truth == {"e1": benign("e1"), "e2": TruthRow("e2", True, "shill", "c1")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "header"),
        ("id,poisoned,attack,campaign\n", "header"),
        ("event_id,poisoned,attack\ne1,0,\n", "header"),
        ("event_id,poisoned,attack,campaign\ne1,0,\n", ":2: expected 4 fields"),
        ("event_id,poisoned,attack,campaign\ne1,yes,,\n", "poisoned must be 0 or 1"),
        ("event_id,poisoned,attack,campaign\n,0,,\n", "empty event_id"),
        ("event_id,poisoned,attack,campaign\ne1,0,,\ne1,1,a,b\n", ":3: duplicate event_id"),
    ],
)
def test_truth_csv_rejects_bad_files(tmp_path: Path, text: str, message: str):
    path = tmp_path / "truth.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_truth_csv(path)


def test_scales_linearly():
    n = 200_000
    rng = random.Random(1)
    truth, rows = {}, []
    for i in range(n):
        p = rng.random() < 0.05
        truth[f"e{i}"] = TruthRow(f"e{i}", p, "a" if p else "", f"c{i % 40}" if p else "")
        q = rng.random() < (0.6 if p else 0.01)
        act = "quarantine" if q else "clean"
        rows.append(
            row(
                i,
                f"e{i}",
                act,
                act,
                rng.random(),
                ("d",) if q else (),
                float(i),
                i if q else None,
                float(i) if q else None,
                {"d": 0.5},
            )
        )
    started = time.perf_counter()
    m = compute_metrics(rows, truth, 1.0)
    assert time.perf_counter() - started < 10.0  # ~0.3 s; quadratic work would take minutes
    assert m["events"] == n and len(m["by_campaign"]) == 40
