"""Score a replay against ground truth: the numbers behind ``metrics.json`` (DESIGN.md 4).

The rows are turned into numpy columns once, and every figure below is a mask, a bincount or
a sort over those columns, so a million rows score in about a second.

Which lines count where:

- ``events``, ``clean``, ``quarantined`` and ``dlq`` count every input line by its FINAL
  action.
- The detection figures (``overall``, ``first_verdict``, ``by_attack``, ``by_campaign``,
  ``by_detector``, ``auc_roc``, ``average_precision``) are over *scored* lines: lines whose
  ``event_id`` has a truth row and whose final action is not ``dlq``. A dlq line never reached
  a detector, so it is neither a catch nor a miss; a line the truth does not know cannot be
  judged. Both are counted (``dlq_with_truth``, ``without_truth``) so that lost lines show.
- A line that repeats an earlier ``event_id`` is scored on its own, against the same truth row.
- Any ratio whose denominator is zero is 0.0, never NaN. ``auc_roc`` and
  ``average_precision`` are ``None`` (JSON null) when the scored lines hold only one class
  (or none): ranking quality is undefined then, and 0.0 would read as "perfectly wrong".
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

ACTIONS = ("clean", "quarantine", "dlq")
TRUTH_HEADER = ("event_id", "poisoned", "attack", "campaign")
VERDICTS_HEADER = ("event_id", "first_action", "final_action", "score", "reasons")


@dataclass(frozen=True, slots=True)
class VerdictRow:
    """What happened to one input line; the replay runner builds these."""

    line: int  # 0-based input line number (stream position)
    event_id: str  # "" when the line had no parseable event_id
    first_action: str  # "clean" | "quarantine" | "dlq"
    final_action: str  # same; "quarantine" when revoked later
    score: float  # suspicion in [0,1] at first verdict
    reasons: tuple[str, ...]  # detector names (for the csv: ";"-joined)
    ts: float | None  # event time (epoch s), None for dlq lines without one
    detector_scores: Mapping[str, float]  # per-detector score at first verdict (may be empty)
    left_clean_at: int | None  # line being processed when the event left the clean set
    left_clean_ts: float | None  # event time of the line at left_clean_at
    # The drift detector raised a change alarm on this event's item as it processed it
    # (recorded by the in-process replay only; see runner.replay).
    drift_alarm: bool = False
    # Who rated what ("" when unknown): a campaign's targets are the items half of its
    # accounts touched, and only alarms on those are the campaign's drift.
    item_id: str = ""
    account_id: str = ""


@dataclass(frozen=True, slots=True)
class TruthRow:
    """One row of ``truth.csv``."""

    event_id: str
    poisoned: bool
    attack: str
    campaign: str


# --------------------------------------------------------------------------- csv files


def read_truth_csv(path: str | Path) -> dict[str, TruthRow]:
    """Load ``truth.csv``; a malformed file raises ValueError naming the line, not a KeyError."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != TRUTH_HEADER:
            raise ValueError(
                f"{path}: header must be {','.join(TRUTH_HEADER)!r}, got "
                f"{','.join(header) if header else 'an empty file'!r}"
            )
        truth: dict[str, TruthRow] = {}
        for row in reader:
            if not row:
                continue
            row_ = _truth_row(row, path, reader.line_num)
            if row_.event_id in truth:
                raise ValueError(f"{path}:{reader.line_num}: duplicate event_id {row_.event_id!r}")
            truth[row_.event_id] = row_
    return truth


def _truth_row(row: list[str], path: Path, line_num: int) -> TruthRow:
    if len(row) != len(TRUTH_HEADER):
        raise ValueError(f"{path}:{line_num}: expected 4 fields, got {len(row)}: {row!r}")
    event_id, poisoned, attack, campaign = row
    if not event_id:
        raise ValueError(f"{path}:{line_num}: empty event_id")
    if poisoned.strip() not in ("0", "1"):
        raise ValueError(f"{path}:{line_num}: poisoned must be 0 or 1, got {poisoned!r}")
    return TruthRow(event_id, poisoned.strip() == "1", attack, campaign)


def write_verdicts_csv(path: str | Path, rows: Iterable[VerdictRow]) -> None:
    """One csv row per input line, in line order, with the contract header."""
    ordered = sorted(rows, key=lambda r: r.line)
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(VERDICTS_HEADER)
        writer.writerows(
            (r.event_id, r.first_action, r.final_action, repr(float(r.score)), _join(r.reasons))
            for r in ordered
        )


def _join(reasons: Sequence[str]) -> str:
    """Detector names once each, in first-seen order (a revocation may repeat one)."""
    return ";".join(dict.fromkeys(reasons))


def read_verdicts_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read ``verdicts.csv`` back (for tests and offline analysis); validates the header."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != VERDICTS_HEADER:
            raise ValueError(f"{path}: header must be {','.join(VERDICTS_HEADER)!r}")
        return [
            {
                "event_id": r[0],
                "first_action": r[1],
                "final_action": r[2],
                "score": float(r[3]),
                "reasons": tuple(r[4].split(";")) if r[4] else (),
            }
            for r in reader
        ]


# --------------------------------------------------------------------------- columns


@dataclass(frozen=True, slots=True)
class Columns:
    """The rows as numpy arrays, joined with the truth; -1 / NaN stand for None."""

    line: np.ndarray  # int64
    first_q: np.ndarray  # bool: quarantined at first verdict
    final_q: np.ndarray  # bool: out of the clean set at the end
    dlq: np.ndarray  # bool (final action)
    score: np.ndarray  # float64, non-finite replaced (NaN -> 0)
    ts: np.ndarray  # float64, NaN when unknown
    left_at: np.ndarray  # int64, -1 when the line stayed clean (or dlq)
    left_ts: np.ndarray  # float64, NaN when unknown
    alarm: np.ndarray  # bool: a drift alarm was raised on this line
    item: list[str]  # the event's item ("" when unknown)
    account: list[str]  # the event's account ("" when unknown)
    known: np.ndarray  # bool: event_id has a truth row
    scored: np.ndarray  # bool: known and not dlq
    poisoned: np.ndarray  # bool (False where unknown)
    attack: np.ndarray  # int64 code into attacks, -1 for benign / unknown
    campaign: np.ndarray  # int64 code into campaigns, -1 for none
    attacks: list[str]
    campaigns: list[str]
    campaign_attack: list[str]


def columns(rows: Sequence[VerdictRow], truth: Mapping[str, TruthRow]) -> Columns:
    """Build the columns once; everything else works on arrays (shared with the report)."""
    n = len(rows)
    attacks, campaigns, campaign_attack = _truth_labels(truth)
    a_code = {a: i for i, a in enumerate(attacks)}
    c_code = {c: i for i, c in enumerate(campaigns)}
    tr = [truth.get(r.event_id) for r in rows]
    bad = {r.final_action for r in rows} | {r.first_action for r in rows}
    if not bad <= set(ACTIONS):
        raise ValueError(f"unknown actions {sorted(bad - set(ACTIONS))}; expected {ACTIONS}")
    known = np.fromiter((t is not None for t in tr), bool, n)
    dlq = np.fromiter((r.final_action == "dlq" for r in rows), bool, n)
    poisoned = np.fromiter((t is not None and t.poisoned for t in tr), bool, n)
    score = np.fromiter((r.score for r in rows), np.float64, n)
    return Columns(
        line=np.fromiter((r.line for r in rows), np.int64, n),
        first_q=np.fromiter((r.first_action == "quarantine" for r in rows), bool, n),
        final_q=np.fromiter((r.final_action == "quarantine" for r in rows), bool, n),
        dlq=dlq,
        score=np.nan_to_num(score, nan=0.0, posinf=1.0, neginf=0.0),
        ts=_floats((r.ts for r in rows), n),
        left_at=np.fromiter(
            (-1 if r.left_clean_at is None else r.left_clean_at for r in rows), np.int64, n
        ),
        left_ts=_floats((r.left_clean_ts for r in rows), n),
        alarm=np.fromiter((r.drift_alarm for r in rows), bool, n),
        item=[r.item_id for r in rows],
        account=[r.account_id for r in rows],
        known=known,
        scored=known & ~dlq,
        poisoned=poisoned,
        attack=np.fromiter(
            (a_code[t.attack] if t is not None and t.poisoned else -1 for t in tr), np.int64, n
        ),
        campaign=np.fromiter(
            (c_code.get(t.campaign, -1) if t is not None and t.poisoned else -1 for t in tr),
            np.int64,
            n,
        ),
        attacks=attacks,
        campaigns=campaigns,
        campaign_attack=campaign_attack,
    )


def _floats(values: Iterable[float | None], n: int) -> np.ndarray:
    return np.fromiter((np.nan if v is None else v for v in values), np.float64, n)


def _truth_labels(truth: Mapping[str, TruthRow]) -> tuple[list[str], list[str], list[str]]:
    """Attack names (every value a poisoned row has, or any non-empty one) and campaigns.

    Campaigns are the non-empty ``campaign`` values of poisoned rows; each campaign takes the
    attack of its first poisoned row.
    """
    attacks: set[str] = set()
    campaign_attack: dict[str, str] = {}
    for t in truth.values():
        if t.poisoned or t.attack:
            attacks.add(t.attack)
        if t.poisoned and t.campaign:
            campaign_attack.setdefault(t.campaign, t.attack)
    campaigns = sorted(campaign_attack)
    return sorted(attacks), campaigns, [campaign_attack[c] for c in campaigns]


# --------------------------------------------------------------------------- metrics


def ratio(num: float, den: float) -> float:
    """``num / den`` as a plain float, 0.0 when ``den`` is zero (never NaN)."""
    return float(num) / float(den) if den else 0.0


def confusion(caught: np.ndarray, poisoned: np.ndarray) -> dict[str, Any]:
    """Precision, recall, F1 and FPR of ``caught`` against ``poisoned`` (both over scored lines)."""
    tp = int(np.count_nonzero(caught & poisoned))
    fp = int(np.count_nonzero(caught & ~poisoned))
    fn = int(np.count_nonzero(~caught & poisoned))
    tn = int(np.count_nonzero(~caught & ~poisoned))
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "f1": ratio(2 * precision * recall, precision + recall),
        "fpr": ratio(fp, fp + tn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def ranking_curves(
    poisoned: np.ndarray, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ROC (fpr, tpr) and PR (precision, recall) points, one per distinct score threshold.

    Tied scores form one threshold, so a tie is never credited with an order it does not have.
    ROC starts at (0, 0); empty arrays when either class is missing.
    """
    y = np.asarray(poisoned, bool)
    n_pos = int(np.count_nonzero(y))
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    score = np.asarray(score, np.float64)
    order = np.argsort(-score, kind="stable")
    s, y = score[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[last_of_tie].astype(np.float64)
    fps = (last_of_tie + 1) - tps
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    return fpr, tpr, tps / (tps + fps), tps / n_pos


def auc_and_ap(poisoned: np.ndarray, score: np.ndarray) -> tuple[float | None, float | None]:
    """ROC AUC (trapezoids, ties count half) and average precision (step-wise, as sklearn)."""
    fpr, tpr, precision, recall = ranking_curves(poisoned, score)
    if fpr.size == 0:
        return None, None
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return auc, ap


def _by_attack(c: Columns) -> dict[str, dict[str, Any]]:
    k = len(c.attacks)
    member = c.scored & (c.attack >= 0)
    events = np.bincount(c.attack[member], minlength=k)
    caught = np.bincount(c.attack[member & c.final_q], minlength=k)
    first = np.bincount(c.attack[member & c.first_q], minlength=k)
    dlq = np.bincount(c.attack[c.known & c.dlq & (c.attack >= 0)], minlength=k)
    return {
        name: {
            "events": int(events[i]),
            "caught": int(caught[i]),
            "recall": ratio(caught[i], events[i]),
            "recall_first_verdict": ratio(first[i], events[i]),
            "dlq": int(dlq[i]),
        }
        for i, name in enumerate(c.attacks)
    }


def _by_campaign(
    c: Columns, named: Mapping[str, np.ndarray] | None = None
) -> dict[str, dict[str, Any]]:
    """Per campaign recall and time to detect, from sorted (campaign, line) member arrays;
    also the time each detector in ``named`` (lines whose final reasons name it) took:
    issue 4 asks of the drift detectors in particular, not of the first to fire. And the
    time to the first drift alarm raised on one of the campaign's own events: an alarm
    comes before any hold, and another detector may have held the events by then. Only
    alarms on the campaign's targets count: on a busy stream some item alarms somewhere
    all the time, and a fake's filler rating on such an item is not the campaign's shift."""
    k = len(c.campaigns)
    idx = np.flatnonzero(c.scored & (c.campaign >= 0))
    idx = idx[np.lexsort((c.line[idx], c.campaign[idx]))]
    camp, line, left_at = c.campaign[idx], c.line[idx], c.left_at[idx]
    counts = np.bincount(camp, minlength=k)
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    caught = np.bincount(camp[c.final_q[idx]], minlength=k)
    first = np.bincount(camp[c.first_q[idx]], minlength=k)
    det_at, det_ts = _first_departure(camp, left_at, c.left_ts[idx], k)
    # Members seen up to and including the detection moment: (campaign, line) keys are sorted.
    span = int(c.line.max(initial=0)) + 2
    keys = camp * span + line

    def seen_by(at: np.ndarray) -> np.ndarray:
        """Per campaign, its members seen up to and including position ``at``."""
        return np.searchsorted(keys, np.arange(k) * span + at, side="right") - starts

    seen = seen_by(det_at)
    by_detector = {}
    for detector, lines in (named or {}).items():
        mine = np.where(np.isin(idx, lines), left_at, -1)
        d_at, _ = _first_departure(camp, mine, c.left_ts[idx], k)
        by_detector[detector] = (d_at, seen_by(d_at))
    alarmed = c.alarm[idx] & _on_target(c, idx, camp)
    alarm_at, _ = _first_departure(camp, np.where(alarmed, line, -1), c.ts[idx], k)
    alarm_seen = seen_by(alarm_at)
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(c.campaigns):
        has = counts[i] > 0
        first_ts = float(c.ts[idx[starts[i]]]) if has else float("nan")
        detected = bool(det_at[i] >= 0)
        out[name] = {
            "attack": c.campaign_attack[i],
            "events": int(counts[i]),
            "caught": int(caught[i]),
            "recall": ratio(caught[i], counts[i]),
            "recall_first_verdict": ratio(first[i], counts[i]),
            "first_event_line": int(line[starts[i]]) if has else None,
            "first_event_ts": _opt(first_ts),
            "detected": detected,
            "detected_at_line": int(det_at[i]) if detected else None,
            "time_to_detect_events": int(seen[i]) if detected else None,
            "time_to_detect_seconds": _ttd_seconds(first_ts, det_ts[i]) if detected else None,
            "time_to_detect_events_by_detector": {
                d: int(d_seen[i]) for d, (d_at, d_seen) in by_detector.items() if d_at[i] >= 0
            },
            "time_to_drift_alarm_events": int(alarm_seen[i]) if alarm_at[i] >= 0 else None,
        }
    return out


def _on_target(c: Columns, idx: np.ndarray, camp: np.ndarray) -> np.ndarray:
    """Per member line (``idx``, of campaign ``camp``): is its item one of the campaign's
    targets, an item rated by at least half of the campaign's accounts (a push's or a
    bombing's item; not a fake's filler)?"""
    members: dict[int, set[str]] = defaultdict(set)
    raters: dict[tuple[int, str], set[str]] = defaultdict(set)
    pairs = list(zip(camp.tolist(), idx.tolist(), strict=True))
    for k, j in pairs:
        members[k].add(c.account[j])
        raters[(k, c.item[j])].add(c.account[j])
    return np.fromiter(
        (bool(c.item[j]) and 2 * len(raters[(k, c.item[j])]) >= len(members[k]) for k, j in pairs),
        bool,
        len(pairs),
    )


def _first_departure(
    camp: np.ndarray, left_at: np.ndarray, left_ts: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per campaign, the earliest stream position at which a member left the clean set (-1)."""
    det_at = np.full(k, -1, np.int64)
    det_ts = np.full(k, np.nan)
    gone = np.flatnonzero(left_at >= 0)
    if gone.size:
        gone = gone[np.lexsort((left_at[gone], camp[gone]))]
        uniq, first = np.unique(camp[gone], return_index=True)
        det_at[uniq] = left_at[gone[first]]
        det_ts[uniq] = left_ts[gone[first]]
    return det_at, det_ts


def _ttd_seconds(first_ts: float, det_ts: float) -> float | None:
    """Event time from campaign start to detection; clipped at 0 (out-of-order event times)."""
    if not (np.isfinite(first_ts) and np.isfinite(det_ts)):
        return None
    return max(0.0, float(det_ts - first_ts))


def _opt(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _by_detector(
    rows: Sequence[VerdictRow], c: Columns, named: Mapping[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """Per detector named in the final reasons: how often, and how often rightly, over scored lines.

    Detectors that only appear in ``detector_scores`` are listed too, with zero flags.
    """
    scored_names = set(chain.from_iterable(r.detector_scores for r in rows))
    n_poisoned = int(np.count_nonzero(c.scored & c.poisoned))
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(scored_names | named.keys()):
        hits = named.get(name, np.empty(0, np.int64))
        tp = int(np.count_nonzero(c.poisoned[hits]))
        out[name] = {
            "flagged": int(hits.size),
            "true_positives": tp,
            "precision": ratio(tp, hits.size),
            "recall": ratio(tp, n_poisoned),
        }
    return out


def _named(rows: Sequence[VerdictRow], c: Columns) -> dict[str, np.ndarray]:
    """The scored lines whose final reasons name each detector."""
    named: dict[str, list[int]] = {}
    for i in (i for i, r in enumerate(rows) if r.reasons and c.scored[i]):
        for name in set(rows[i].reasons):
            named.setdefault(name, []).append(i)
    return {name: np.asarray(lines, np.int64) for name, lines in named.items()}


def compute_metrics(
    rows: Sequence[VerdictRow], truth: Mapping[str, TruthRow], elapsed_s: float
) -> dict[str, Any]:
    """The ``metrics.json`` document; see the module docstring for which lines count where."""
    c = columns(rows, truth)
    named = _named(rows, c)
    y = c.poisoned[c.scored]
    auc, ap = auc_and_ap(y, c.score[c.scored])
    n = len(rows)
    seen = {r.event_id for r in rows}
    elapsed = float(elapsed_s) if np.isfinite(elapsed_s) else 0.0
    return {
        "events": n,
        "clean": int(np.count_nonzero(~c.final_q & ~c.dlq)),
        "quarantined": int(np.count_nonzero(c.final_q)),
        "dlq": int(np.count_nonzero(c.dlq)),
        "revoked": int(np.count_nonzero(c.final_q & ~c.first_q)),
        "scored": int(np.count_nonzero(c.scored)),
        "poisoned": int(np.count_nonzero(y)),
        "benign": int(y.size - np.count_nonzero(y)),
        "without_truth": int(np.count_nonzero(~c.known)),
        "dlq_with_truth": int(np.count_nonzero(c.known & c.dlq)),
        "truth_rows": len(truth),
        "truth_not_in_stream": sum(1 for e in truth if e not in seen),
        "overall": confusion(c.final_q[c.scored], y),
        "first_verdict": confusion(c.first_q[c.scored], y),
        "auc_roc": auc,
        "average_precision": ap,
        "by_attack": _by_attack(c),
        "by_campaign": _by_campaign(c, named),
        "by_detector": _by_detector(rows, c, named),
        "elapsed_s": elapsed,
        "throughput_eps": ratio(n, elapsed) if elapsed > 0 else 0.0,
    }
