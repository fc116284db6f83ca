"""report.html and the matrix table: produced for normal and degenerate inputs alike."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from streamguard.evaluate.matrix import format_matrix, summarise_matrix
from streamguard.evaluate.metrics import TruthRow, VerdictRow, compute_metrics
from streamguard.evaluate.report import write_report

IMG = '<img src="data:image/png;base64,'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def vrow(
    line: int,
    event_id: str,
    final: str,
    score: float,
    reasons: tuple[str, ...] = (),
    first: str | None = None,
    left_at: int | None = None,
    scores: dict[str, float] | None = None,
) -> VerdictRow:
    gone = final == "quarantine"
    left = left_at if left_at is not None else (line if gone else None)
    return VerdictRow(
        line,
        event_id,
        first or final,
        final,
        score,
        reasons,
        1000.0 + line,
        scores or {},
        left,
        None if left is None else 1000.0 + left,
    )


def stream(n: int = 60) -> tuple[list[VerdictRow], dict[str, TruthRow]]:
    """Benign traffic with two campaigns (one with a '$' and markup in its name) and a dlq."""
    rows, truth = [], {}
    for i in range(n):
        eid = f"e{i}"
        camp = "c<1>" if 10 <= i < 20 else ("c$2$" if 40 <= i < 45 else "")
        poisoned = bool(camp)
        truth[eid] = TruthRow(eid, poisoned, "shill" if poisoned else "", camp)
        quarantined = (poisoned and i % 2 == 0) or i == 30
        final = "quarantine" if quarantined else ("dlq" if i == 50 else "clean")
        scores = {"burst": 0.8 if poisoned else 0.1 + i / 1000, "text$": i / n}
        rows.append(
            vrow(
                i,
                eid,
                final,
                0.9 if poisoned else i / (2 * n),
                ("burst",) if quarantined else (),
                scores=scores,
            )
        )
    return rows, truth


def report(tmp_path: Path, rows, truth, title: str = "t") -> str:
    metrics = compute_metrics(rows, truth, 1.0)
    path = write_report(tmp_path / "out", rows, truth, metrics, title)
    assert path == tmp_path / "out" / "report.html"
    return path.read_text(encoding="utf-8")


def images(page: str) -> list[bytes]:
    return [
        base64.b64decode(m) for m in re.findall(r'data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    ]


def test_report_normal_stream(tmp_path: Path):
    rows, truth = stream()
    page = report(tmp_path, rows, truth, title="eval <script>alert(1)</script>")
    assert page.startswith("<!DOCTYPE html>")
    assert "<table>" in page and IMG in page
    pngs = images(page)
    assert len(pngs) == 5 and all(p.startswith(PNG_MAGIC) for p in pngs)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "c&lt;1&gt;" in page and "c<1>" not in page
    assert "precision" in page and "shill" in page and "burst" in page
    assert "http://" not in page and "https://" not in page  # self-contained


@pytest.mark.parametrize(
    "case",
    ["no_poisoned", "no_detectors", "single_row", "empty", "all_dlq", "no_truth"],
)
def test_report_degenerate_inputs(tmp_path: Path, case: str):
    rows, truth = stream(20)
    if case == "no_poisoned":
        truth = {k: TruthRow(k, False, "", "") for k in truth}
        rows = [
            vrow(r.line, r.event_id, "clean", r.score, scores=dict(r.detector_scores)) for r in rows
        ]
    elif case == "no_detectors":
        rows = [vrow(r.line, r.event_id, r.final_action, r.score, r.reasons) for r in rows]
    elif case == "single_row":
        rows = rows[:1]
    elif case == "empty":
        rows = []
    elif case == "all_dlq":
        rows = [VerdictRow(i, "", "dlq", "dlq", 1.0, (), None, {}, None, None) for i in range(3)]
    elif case == "no_truth":
        truth = {}
    page = report(tmp_path, rows, truth)
    assert "<table>" in page and IMG in page
    assert all(p.startswith(PNG_MAGIC) for p in images(page))


def test_report_shows_revocation_position(tmp_path: Path):
    """A revoked event is drawn where it left the clean set; the page still builds."""
    rows, truth = stream(30)
    rows[11] = vrow(11, "e11", "quarantine", 0.9, ("burst",), first="clean", left_at=25)
    assert "revoked" in report(tmp_path, rows, truth)


def _metrics(precision: float, recall: float, fpr: float, ttds: list[tuple[int, float] | None]):
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    campaigns = {
        f"c{i}": {
            "detected": t is not None,
            "time_to_detect_events": None if t is None else t[0],
            "time_to_detect_seconds": None if t is None else t[1],
        }
        for i, t in enumerate(ttds)
    }
    return {
        "events": 100,
        "overall": {"precision": precision, "recall": recall, "f1": f1, "fpr": fpr},
        "auc_roc": None,
        "by_campaign": campaigns,
    }


def matrix_results() -> list[dict]:
    return [
        {
            "scenario": "shill",
            "base": "synthetic",
            "seed": 1,
            "metrics": _metrics(0.9, 0.8, 0.01, [(3, 30.0), (5, 50.0)]),
        },
        {
            "scenario": "shill",
            "base": "synthetic",
            "seed": 2,
            "metrics": _metrics(0.7, 0.6, 0.03, [(9, 90.0), None]),
        },
        {"scenario": "a|b", "base": "movielens", "seed": 1, "metrics": _metrics(0.0, 0.0, 0.0, [])},
    ]


def test_summarise_matrix_aggregates_over_seeds():
    first, second = summarise_matrix(matrix_results())
    assert (first["scenario"], first["base"], first["seeds"]) == ("shill", "synthetic", 2)
    assert first["seed_list"] == [1, 2]
    assert first["precision_mean"] == pytest.approx(0.8) and first["precision_min"] == 0.7
    assert first["recall_mean"] == pytest.approx(0.7) and first["recall_min"] == 0.6
    assert first["fpr_mean"] == pytest.approx(0.02) and first["fpr_max"] == 0.03
    assert first["f1_min"] == pytest.approx(2 * 0.7 * 0.6 / 1.3)
    assert (first["campaigns"], first["campaigns_detected"]) == (4, 3)
    assert first["ttd_events_median"] == 5.0 and first["ttd_seconds_median"] == 50.0
    assert first["auc_roc_mean"] is None
    assert second["ttd_events_median"] is None and second["campaigns"] == 0


def test_format_matrix_markdown():
    table = format_matrix(matrix_results())
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| scenario | base | seeds | precision mean (min)")
    assert lines[1].startswith("|---|")
    assert lines[2] == (
        "| shill | synthetic | 2 | 0.800 (0.700) | 0.700 (0.600) "
        f"| {(1.44 / 1.7 + 0.84 / 1.3) / 2:.3f} ({0.84 / 1.3:.3f}) "
        "| 0.0200 (0.0300) | 3/4 | 5.0 | 50.0 |"
    )
    assert lines[3].startswith("| a\\|b | movielens | 1 |") and lines[3].endswith("| - | - |")
    assert all(line.count(" | ") == lines[0].count(" | ") for line in lines[2:])


def test_format_matrix_empty():
    assert format_matrix([]).splitlines()[1].startswith("|---|")
    assert summarise_matrix([]) == []
