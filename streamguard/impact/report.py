"""``impact.html``: the three training sets side by side, one small bar chart per figure."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from streamguard.evaluate.report import CSS, _e, _img, html_table
from streamguard.impact.stream import SETS

COLOURS = {"everything": "#e45756", "guarded": "#4c78a8", "clean": "#54a24b"}
FIGURES = (
    ("ratings", "target_rank", "target items' rank (1 = top)"),
    ("ratings", "target_in_top", "share of targets in the top 1%"),
    ("ratings", "rmse", "RMSE, held-out benign ratings"),
    ("labels", "backdoor_success", "backdoor success rate"),
    ("labels", "accuracy", "accuracy, held-out benign labels"),
)


def _panels(result: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, float | None]]]:
    return [
        (key, title, (result.get(section) or {})[key])
        for section, key, title in FIGURES
        if (result.get(section) or {}).get(key)
    ]


def figure(result: Mapping[str, Any]) -> Figure | None:
    panels = _panels(result)
    if not panels:
        return None
    fig = Figure(figsize=(3.2 * len(panels), 3.2), layout="constrained")
    for k, (_, title, values) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        heights = [values.get(s) or 0.0 for s in SETS]
        ax.bar(SETS, heights, color=[COLOURS[s] for s in SETS])
        ax.set_title(title, fontsize="small")
        ax.tick_params(labelsize="small")
    return fig


def write_impact_report(path: Path, result: Mapping[str, Any], title: str) -> None:
    recovered = result.get("damage_recovered", {})
    rows = [
        [key, *[values.get(s) for s in SETS], recovered.get(key)]
        for key, _, values in _panels(result)
    ]
    sets = result["sets"]
    fig = figure(result)
    parts = [
        f"<h1>{_e(title)}</h1>",
        '<p class="note">Simple downstream models trained on every event ("everything"), on '
        "the events StreamGuard released (guarded) and on the truly benign events (clean), "
        "tested on the same held-out benign events. Damage recovered = (everything - "
        "guarded) / (everything - clean).</p>",
        html_table(
            ["training set", "events", "poisoned events"],
            [[s, sets[s]["events"], sets[s]["poisoned"]] for s in SETS],
        ),
        html_table(["metric", *SETS, "damage recovered"], rows),
        _img(fig, "the metrics per training set") if fig else "",
        '<p class="note">Detection details: <a href="eval/report.html">eval/report.html</a></p>',
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
