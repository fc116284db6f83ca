"""``streamguard impact``: does guarding protect the model? Measured end to end.

The stream is replayed through the real pipeline (:func:`streamguard.evaluate.evaluate_lines`,
so the detection report comes with it); then simple downstream models are trained on
everything, on the guarded set and on the truly clean set (:mod:`.measure`), and the
poison's effect on each is compared. Writes ``impact.json`` and ``impact.html`` next to
the evaluation's ``eval/`` folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from streamguard.config import Settings
from streamguard.evaluate import evaluate_lines
from streamguard.evaluate.metrics import TruthRow, read_truth_csv, read_verdicts_csv
from streamguard.evaluate.runner import read_lines
from streamguard.impact.goals import derive_goals, goals_from_campaigns
from streamguard.impact.measure import measure
from streamguard.impact.report import write_impact_report
from streamguard.impact.stream import load_stream

__all__ = ["impact_file", "run_impact"]


def run_impact(
    lines: list[bytes],
    truth: dict[str, TruthRow],
    out: Path,
    settings: Settings,
    campaigns: Path | None = None,
    bootstrap_servers: str | None = None,
    title: str = "StreamGuard impact",
    progress: bool = True,
) -> dict[str, Any]:
    """Replay, train on the three sets, write ``impact.json`` and ``impact.html``."""
    detection = evaluate_lines(
        lines, truth, out / "eval", settings, bootstrap_servers, title=title, progress=progress
    )
    stream = load_stream(lines, read_verdicts_csv(out / "eval" / "verdicts.csv"), truth)
    goals = goals_from_campaigns(campaigns, stream) if campaigns else derive_goals(stream)
    p = settings.pipeline
    result = measure(stream, goals, p.rating_low, p.rating_high)
    result["goals_from"] = "campaigns" if campaigns else "truth"
    result["detection"] = {
        **{k: detection["overall"][k] for k in ("precision", "recall", "fpr")},
        "by_attack": {a: v["recall"] for a, v in detection["by_attack"].items()},
    }
    (out / "impact.json").write_bytes(
        orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    write_impact_report(out / "impact.html", result, title)
    return result


def impact_file(
    events: Path,
    truth: Path,
    out: Path,
    settings: Settings,
    campaigns: Path | None = None,
    bootstrap_servers: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    return run_impact(
        read_lines(events),
        read_truth_csv(truth),
        out,
        settings,
        campaigns,
        bootstrap_servers,
        title=f"StreamGuard impact: {events}",
        progress=progress,
    )
