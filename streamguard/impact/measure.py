"""Train the downstream models on the three sets and measure what the poison did.

Every figure is computed three times, once per training set, on the same held-out benign
events, so the only thing that differs is what the model learnt from. ``damage
recovered`` is ``(everything - guarded) / (everything - clean)``: 1 when guarding undid
all the poison's effect, 0 when it undid none, negative when it made things worse; None
when the poison moved nothing (nothing to recover).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from streamguard.impact.goals import Goals
from streamguard.impact.labels import NaiveBayes, features
from streamguard.impact.ratings import RatingTable, fit_biases, rmse
from streamguard.impact.stream import SETS, Stream
from streamguard.simulate.text import insert_phrase

RATING_TEST_SHARE = 0.1
TEXT_TEST_SHARE = 0.25
PROBE_SEED = 0
TOP_SHARE = 0.01  # a target "in the top" ranks in the top 1% of items (at least 10 items)


def damage_recovered(by_set: Mapping[str, float | None]) -> float | None:
    poisoned, guarded, clean = (by_set.get(s) for s in SETS)
    if poisoned is None or guarded is None or clean is None or abs(poisoned - clean) < 1e-12:
        return None
    return (poisoned - guarded) / (poisoned - clean)


def _mean(values: list[int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def rating_impact(stream: Stream, goals: Goals, low: float, high: float) -> dict[str, Any] | None:
    """RMSE on held-out benign ratings and the campaign targets' rank, per training set."""
    rows = [k for k, e in enumerate(stream.events) if e.get("rating") is not None]
    if not rows:
        return None
    events = [stream.events[k] for k in rows]
    table = RatingTable.build(
        [e["account_id"] for e in events],
        [e["item_id"] for e in events],
        [e["rating"] for e in events],
    )
    test = stream.held_out(RATING_TEST_SHARE)[rows]
    code = {item: k for k, item in enumerate(table.items)}
    targets = [
        (campaign, item)
        for campaign, items in goals.targets.items()
        for item in items
        if item in code
    ]
    errors: dict[str, float | None] = {}
    ranks: dict[str, list[int | None]] = {}
    for name in SETS:
        model = fit_biases(table, stream.members(name)[rows] & ~test)
        errors[name] = rmse(model, table, test, low, high)
        ranks[name] = [model.rank(code[item]) for _, item in targets]
    mean_rank = {name: _mean(ranks[name]) for name in SETS}
    top = max(10, round(TOP_SHARE * len(table.items)))
    in_top = {
        name: sum(r is not None and r <= top for r in ranks[name]) / max(len(targets), 1)
        for name in SETS
    }
    return {
        "ratings": len(rows),
        "test_ratings": int(test.sum()),
        "items": len(table.items),
        "rmse": errors,
        "target_rank": mean_rank if targets else None,
        "top": top,
        "target_in_top": in_top if targets else None,
        "targets": [
            {"campaign": c, "item": item, "rank": {name: ranks[name][k] for name in SETS}}
            for k, (c, item) in enumerate(targets)
        ],
    }


def label_impact(stream: Stream, goals: Goals) -> dict[str, Any] | None:
    """Accuracy on held-out benign label events and the backdoors' success, per set."""
    rows = [
        k
        for k, e in enumerate(stream.events)
        if e.get("kind") == "label" and e.get("text") and e.get("label")
    ]
    labels = Counter(stream.events[k]["label"] for k in rows).most_common(2)
    if len(labels) < 2:
        return None
    wanted = [t.label for t in goals.triggers.values()]
    first = wanted[0] if wanted and wanted[0] in dict(labels) else labels[0][0]
    second = next(label for label, _ in labels if label != first)
    rows = [k for k in rows if stream.events[k]["label"] in (first, second)]
    docs = [features(stream.events[k]["text"]) for k in rows]
    is_first = np.array([stream.events[k]["label"] == first for k in rows])
    test = stream.held_out(TEXT_TEST_SHARE)[rows]
    test_docs = [d for d, t in zip(docs, test.tolist(), strict=True) if t]
    probes = _probes(stream, [rows[k] for k in np.flatnonzero(test & ~is_first)], goals, first)
    accuracy: dict[str, float | None] = {}
    success: dict[str, float | None] = {}
    for name in SETS:
        train = stream.members(name)[rows] & ~test
        model = NaiveBayes.fit(
            [d for d, t in zip(docs, train.tolist(), strict=True) if t], is_first[train]
        )
        accuracy[name] = (
            float(np.mean(model.predict(test_docs) == is_first[test])) if test_docs else None
        )
        success[name] = float(np.mean(model.predict(probes))) if probes else None
    return {
        "label_events": len(rows),
        "classes": [first, second],
        "test_texts": len(test_docs),
        "accuracy": accuracy,
        "backdoor_probes": len(probes),
        "backdoor_success": success if probes else None,
        "triggers": {c: {"phrase": t.phrase, "label": t.label} for c, t in goals.triggers.items()},
    }


def _probes(stream: Stream, rows: list[int], goals: Goals, goal_label: str) -> list[np.ndarray]:
    """Held-out benign texts of the other class with each trigger inserted."""
    rng = np.random.default_rng(PROBE_SEED)
    return [
        features(insert_phrase(stream.events[k]["text"], trigger.phrase, rng))
        for trigger in goals.triggers.values()
        if trigger.label == goal_label
        for k in rows
    ]


def measure(stream: Stream, goals: Goals, low: float, high: float) -> dict[str, Any]:
    ratings = rating_impact(stream, goals, low, high)
    labels = label_impact(stream, goals)
    by_metric: dict[str, Mapping[str, float | None]] = {}
    for section, keys in (
        (ratings, ("rmse", "target_rank", "target_in_top")),
        (labels, ("accuracy", "backdoor_success")),
    ):
        for key in keys:
            if section and section[key]:
                by_metric[key] = section[key]
    sets = {
        name: {
            "events": int(stream.members(name).sum()),
            "poisoned": int((stream.members(name) & stream.poisoned).sum()),
        }
        for name in SETS
    }
    return {
        "sets": sets,
        "ratings": ratings,
        "labels": labels,
        "damage": {k: _difference(v["everything"], v["clean"]) for k, v in by_metric.items()},
        "damage_recovered": {k: damage_recovered(v) for k, v in by_metric.items()},
    }


def _difference(a: float | None, b: float | None) -> float | None:
    """What the poison changed (everything minus clean), so a recovery reads with its scale."""
    return None if a is None or b is None else a - b
