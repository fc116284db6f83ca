"""``report.html``: the evaluation as one self-contained page a person can open anywhere.

Plots are PNGs inlined as base64 so the file can be mailed or attached to a CI run with no
assets beside it and no JavaScript. Figures are built on :class:`matplotlib.figure.Figure`
directly (Agg canvas, no pyplot), so the report never touches global backend state and is
safe in threads and under a headless CI.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from streamguard.evaluate.metrics import Columns, TruthRow, VerdictRow, columns, ranking_curves

BENIGN, POISONED = "#4c78a8", "#e45756"
MAX_DETECTOR_SAMPLE = 200_000  # benign lines sampled per detector histogram (shape, not counts)
MAX_CURVE_POINTS = 2_000
MAX_CAMPAIGN_LABELS = 40

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
img{max-width:100%;display:block;margin:1em 0}
.note{color:#666;font-size:90%}
"""


def write_report(
    out_dir: Path,
    rows: Sequence[VerdictRow],
    truth: Mapping[str, TruthRow],
    metrics: Mapping[str, Any],
    title: str,
) -> Path:
    """Write ``out_dir/report.html`` and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    c = columns(rows, truth)
    parts = [
        f"<h1>{_e(title)}</h1>",
        _NOTE,
        "<h2>Headline</h2>",
        headline_table(metrics),
        "<h2>By attack</h2>",
        attack_table(metrics),
        "<h2>By campaign</h2>",
        campaign_table(metrics),
        "<h2>By detector</h2>",
        detector_table(metrics),
        "<h2>Detections over the stream</h2>",
        _img(fig_timeline(c), "quarantines per stream-position bin, campaign windows shaded"),
        "<h2>Ranking quality of the overall score</h2>",
        _img(fig_roc(c, metrics.get("auc_roc")), "ROC curve"),
        _img(fig_pr(c, metrics.get("average_precision")), "precision-recall curve"),
        "<h2>Score distributions, benign vs poisoned</h2>",
        _img(fig_overall_scores(c), "overall score histogram"),
        _img(fig_detector_scores(rows, c), "per-detector score histograms"),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


_NOTE = (
    '<p class="note">Detection figures are over <em>scored</em> lines: lines whose event_id is in '
    "the truth file and that did not go to the dead-letter queue. Recall counts an event as "
    "caught when it ended out of the clean set (quarantined at once or revoked later); "
    "time to detect counts a campaign's events from its first up to the first one to leave "
    "the clean set, at the position where it left. Ratios with a zero denominator show 0.</p>"
)


# --------------------------------------------------------------------------- html helpers


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A cell value for people: '-' for missing, thousands separators, 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def html_table(headers: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    """An escaped HTML table; an empty body gets one 'none' row so the table still shows."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    if not body:
        body = [["none"] + [""] * (len(headers) - 1)]
    cells = ("".join(f"<td>{_e(fmt(v))}</td>" for v in row) for row in body)
    trs = "".join(f"<tr>{row}</tr>" for row in cells)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>"


def headline_table(m: Mapping[str, Any]) -> str:
    overall, first = m.get("overall", {}), m.get("first_verdict", {})
    items = [
        ("events (input lines)", m.get("events")),
        ("clean", m.get("clean")),
        ("quarantined (final)", m.get("quarantined")),
        ("revoked after a clean verdict", m.get("revoked")),
        ("dlq", m.get("dlq")),
        ("scored (in truth, not dlq)", m.get("scored")),
        ("poisoned / benign scored", f"{fmt(m.get('poisoned'))} / {fmt(m.get('benign'))}"),
        ("lines without truth", m.get("without_truth")),
        ("precision", overall.get("precision")),
        ("recall", overall.get("recall")),
        ("F1", overall.get("f1")),
        ("false positive rate", overall.get("fpr")),
        ("precision / recall at first verdict", _pair(first, "precision", "recall")),
        ("ROC AUC of score", m.get("auc_roc")),
        ("average precision of score", m.get("average_precision")),
        ("throughput (events/s)", m.get("throughput_eps")),
    ]
    return html_table(["metric", "value"], items)


def _pair(d: Mapping[str, Any], a: str, b: str) -> str:
    return f"{fmt(d.get(a))} / {fmt(d.get(b))}"


def attack_table(m: Mapping[str, Any]) -> str:
    """Per attack, with the median time to detect over its detected campaigns."""
    campaigns = m.get("by_campaign", {})
    body = []
    for attack, a in m.get("by_attack", {}).items():
        mine = [c for c in campaigns.values() if c.get("attack") == attack]
        body.append(
            [
                attack or "(unnamed)",
                a.get("events"),
                a.get("recall"),
                a.get("recall_first_verdict"),
                f"{sum(bool(c.get('detected')) for c in mine)} / {len(mine)}",
                _median(c.get("time_to_detect_events") for c in mine),
                _median(c.get("time_to_detect_seconds") for c in mine),
            ]
        )
    headers = [
        "attack",
        "events",
        "recall",
        "recall at first verdict",
        "campaigns detected",
        "median TTD (events)",
        "median TTD (s)",
    ]
    return html_table(headers, body)


def _median(values: Any) -> float | None:
    present = [float(v) for v in values if v is not None]
    return float(median(present)) if present else None


def campaign_table(m: Mapping[str, Any]) -> str:
    body = [
        [
            name,
            c.get("attack"),
            c.get("events"),
            c.get("recall"),
            c.get("first_event_line"),
            c.get("detected"),
            c.get("time_to_detect_events"),
            c.get("time_to_detect_seconds"),
        ]
        for name, c in sorted(m.get("by_campaign", {}).items(), key=_by_start)
    ]
    headers = [
        "campaign",
        "attack",
        "events",
        "recall",
        "first line",
        "detected",
        "TTD (events)",
        "TTD (s)",
    ]
    return html_table(headers, body)


def _by_start(item: tuple[str, Mapping[str, Any]]) -> tuple[bool, int, str]:
    """Campaigns in stream order; those never seen last, by name."""
    first = item[1].get("first_event_line")
    return first is None, first or 0, item[0]


def detector_table(m: Mapping[str, Any]) -> str:
    body = [
        [name, d.get("flagged"), d.get("true_positives"), d.get("precision"), d.get("recall")]
        for name, d in m.get("by_detector", {}).items()
    ]
    return html_table(["detector", "flagged", "true positives", "precision", "recall"], body)


def _img(fig: Figure, alt: str) -> str:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=90)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


# --------------------------------------------------------------------------- figures


def _figure(width: float = 9.0, height: float = 4.0) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _placeholder(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(ax: Axes) -> None:
    """A legend only when something is labelled (matplotlib warns otherwise)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")


def _hist_pair(ax: Axes, benign: np.ndarray, poisoned: np.ndarray, bins: int = 50) -> None:
    """Benign vs poisoned densities on shared bins; empty classes are left out."""
    benign, poisoned = benign[np.isfinite(benign)], poisoned[np.isfinite(poisoned)]
    both = np.concatenate([benign, poisoned])
    if both.size == 0:
        _placeholder(ax, "no scores")
        return
    edges = np.histogram_bin_edges(both, bins=bins)
    for data, color, label in ((benign, BENIGN, "benign"), (poisoned, POISONED, "poisoned")):
        if data.size:
            ax.hist(
                data,
                bins=edges.tolist(),
                density=True,
                histtype="stepfilled",
                alpha=0.45,
                color=color,
                label=f"{label} ({data.size:,})",
            )
    _legend(ax)


def fig_overall_scores(c: Columns) -> Figure:
    fig, ax = _figure()
    y = c.poisoned[c.scored]
    s = c.score[c.scored]
    _hist_pair(ax, s[~y], s[y])
    ax.set_title("overall suspicion score at first verdict")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    return fig


def detector_samples(rows: Sequence[VerdictRow], c: Columns) -> tuple[np.ndarray, list[str]]:
    """Scored line indices (every poisoned, benign sampled) and the detector names seen there."""
    idx = np.flatnonzero(c.scored)
    benign = idx[~c.poisoned[idx]]
    if benign.size > MAX_DETECTOR_SAMPLE:
        rng = np.random.default_rng(0)
        benign = np.sort(rng.choice(benign, MAX_DETECTOR_SAMPLE, replace=False))
    idx = np.sort(np.concatenate([idx[c.poisoned[idx]], benign]))
    names = sorted({name for i in idx.tolist() for name in rows[i].detector_scores})
    return idx, names


def fig_detector_scores(rows: Sequence[VerdictRow], c: Columns) -> Figure:
    idx, names = detector_samples(rows, c)
    if not names:
        fig, ax = _figure(9.0, 2.0)
        _placeholder(ax, "no detector scores recorded")
        return fig
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    y = c.poisoned[idx]
    for ax, name in zip(axes, names, strict=False):
        values = np.fromiter(
            (rows[i].detector_scores.get(name, np.nan) for i in idx.tolist()), np.float64, idx.size
        )
        _hist_pair(ax, values[~y], values[y], bins=40)
        ax.set_title(name, fontsize="medium", parse_math=False)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle("raw detector scores at first verdict (density)")
    return fig


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_CURVE_POINTS points, ends kept: a million-point line draws no better."""
    if x.size <= MAX_CURVE_POINTS:
        return x, y
    keep = np.unique(np.linspace(0, x.size - 1, MAX_CURVE_POINTS).astype(np.int64))
    return x[keep], y[keep]


def fig_roc(c: Columns, auc: float | None) -> Figure:
    fig, ax = _figure(5.0, 4.5)
    fpr, tpr, _, _ = ranking_curves(c.poisoned[c.scored], c.score[c.scored])
    if fpr.size == 0:
        _placeholder(ax, "ROC undefined: scored lines hold only one class")
        return fig
    ax.plot(*_thin(fpr, tpr), color=POISONED, label=f"score (AUC {fmt(auc)})")
    ax.plot([0, 1], [0, 1], ls="--", color="#999", label="chance")
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="ROC",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    _legend(ax)
    return fig


def fig_pr(c: Columns, ap: float | None) -> Figure:
    fig, ax = _figure(5.0, 4.5)
    y = c.poisoned[c.scored]
    _, _, precision, recall = ranking_curves(y, c.score[c.scored])
    if precision.size == 0:
        _placeholder(ax, "precision-recall undefined: scored lines hold only one class")
        return fig
    # Start at recall 0 with the first precision so a one-threshold curve is still a line.
    recall, precision = np.r_[0.0, recall], np.r_[precision[0], precision]
    ax.step(*_thin(recall, precision), where="pre", color=POISONED, label=f"score (AP {fmt(ap)})")
    ax.axhline(float(y.mean()), ls="--", color="#999", label="base rate")
    ax.set(
        xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.01)
    )
    _legend(ax)
    return fig


def campaign_windows(c: Columns) -> list[tuple[str, int, int]]:
    """(campaign, first line, last line) of each campaign's lines in the stream, by start."""
    member = c.campaign >= 0
    k = len(c.campaigns)
    camp, line = c.campaign[member], c.line[member]
    if camp.size == 0:
        return []
    lo = np.full(k, np.iinfo(np.int64).max)
    hi = np.full(k, -1, np.int64)
    np.minimum.at(lo, camp, line)
    np.maximum.at(hi, camp, line)
    present = np.flatnonzero(hi >= 0)
    present = present[np.argsort(lo[present], kind="stable")]
    return [(c.campaigns[i], int(lo[i]), int(hi[i])) for i in present]


def fig_timeline(c: Columns) -> Figure:
    """Quarantines per stream-position bin, at the position the event left the clean set."""
    fig, ax = _figure(11.0, 4.5)
    if c.line.size == 0:
        _placeholder(ax, "no events")
        return fig
    lo, hi = int(c.line.min()), int(max(c.line.max(), c.left_at.max()))
    bins = np.linspace(lo, hi + 1, min(100, hi - lo + 1) + 1)
    gone = c.final_q & (c.left_at >= 0)
    right, wrong = c.left_at[gone & c.poisoned], c.left_at[gone & ~c.poisoned]
    ax.hist(
        [right, wrong],
        bins=bins.tolist(),
        stacked=True,
        color=[POISONED, BENIGN],
        label=["poisoned quarantined", "other quarantined (benign or no truth)"],
    )
    _shade_campaigns(ax, campaign_windows(c))
    ax.set(
        xlabel="stream position (input line)",
        ylabel="quarantines per bin",
        title="detections over the stream; shaded: campaign windows from truth",
    )
    ax.set_xlim(lo, hi + 1)
    _legend(ax)
    return fig


def _shade_campaigns(ax: Axes, windows: list[tuple[str, int, int]]) -> None:
    for n, (name, start, end) in enumerate(windows):
        label = "campaign window" if n == 0 else None
        ax.axvspan(start, end + 1, color="#f2a541", alpha=0.15, lw=0, zorder=0, label=label)
        if n < MAX_CAMPAIGN_LABELS:
            ax.text(
                start,
                0.98 - 0.07 * (n % 6),
                name,
                transform=ax.get_xaxis_transform(),
                fontsize="x-small",
                va="top",
                clip_on=True,
                parse_math=False,
            )
