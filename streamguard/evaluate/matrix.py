"""The scenario x base x seed matrix, summarised: one line per (scenario, base) over seeds.

Mean says what to expect; the worst seed says what can happen (min for precision, recall and
F1, max for FPR), which is why both are shown. Time to detect is pooled over every campaign of
every seed and reduced to a median, because one slow campaign should not hide many fast ones;
campaigns never detected are left out of the median and counted in ``campaigns_detected``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from statistics import median
from typing import Any

RATES = ("precision", "recall", "f1", "fpr")


def summarise_matrix(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per (scenario, base), in first-seen order; see the module docstring."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in results:
        groups.setdefault((str(r["scenario"]), str(r["base"])), []).append(r)
    return [_summarise(scenario, base, runs) for (scenario, base), runs in groups.items()]


def _summarise(scenario: str, base: str, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    metrics = [r["metrics"] for r in runs]
    out: dict[str, Any] = {
        "scenario": scenario,
        "base": base,
        "seeds": len(runs),
        "seed_list": [r.get("seed") for r in runs],
    }
    for rate in RATES:
        values = [float(m.get("overall", {}).get(rate, 0.0)) for m in metrics]
        out[f"{rate}_mean"] = sum(values) / len(values)
        out[f"{rate}_min"] = min(values)
        out[f"{rate}_max"] = max(values)
    out["auc_roc_mean"] = _mean(m.get("auc_roc") for m in metrics)
    campaigns = [c for m in metrics for c in m.get("by_campaign", {}).values()]
    out["campaigns"] = len(campaigns)
    out["campaigns_detected"] = sum(bool(c.get("detected")) for c in campaigns)
    out["ttd_events_median"] = _median(c.get("time_to_detect_events") for c in campaigns)
    out["ttd_seconds_median"] = _median(c.get("time_to_detect_seconds") for c in campaigns)
    out["events_mean"] = _mean(m.get("events") for m in metrics)
    return out


def _present(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if v is not None]


def _mean(values: Iterable[Any]) -> float | None:
    present = _present(values)
    return sum(present) / len(present) if present else None


def _median(values: Iterable[Any]) -> float | None:
    present = _present(values)
    return float(median(present)) if present else None


HEADER = (
    "| scenario | base | seeds | precision mean (min) | recall mean (min) | F1 mean (min) "
    "| FPR mean (max) | campaigns detected | median TTD events | median TTD s |"
)
RULE = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"


def format_matrix(results: Sequence[Mapping[str, Any]]) -> str:
    """The summary as a markdown table (no trailing newline); '-' where there is no value."""
    lines = [HEADER, RULE]
    for s in summarise_matrix(results):
        cells = [
            _md(s["scenario"]),
            _md(s["base"]),
            str(s["seeds"]),
            f"{s['precision_mean']:.3f} ({s['precision_min']:.3f})",
            f"{s['recall_mean']:.3f} ({s['recall_min']:.3f})",
            f"{s['f1_mean']:.3f} ({s['f1_min']:.3f})",
            f"{s['fpr_mean']:.4f} ({s['fpr_max']:.4f})",
            f"{s['campaigns_detected']}/{s['campaigns']}",
            _num(s["ttd_events_median"], 1),
            _num(s["ttd_seconds_median"], 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _md(text: str) -> str:
    """A table cell that cannot break the table."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
