"""Score+learn throughput: River's HalfSpaceTrees (one event at a time) vs HalfSpaceForest.

River's cost per event grows with ``2 ** height`` because every window rollover touches every
node; HalfSpaceForest walks micro-batches with numpy and rolls windows over as array sums.
Both see the same stream and must give bit-identical scores, which this script also checks.
Rates are steady state: building the trees (the same Python random calls in both, paid once
per model) and turning rows into dicts for River are not timed; build time is its own column.

    python benchmarks/bench_hst.py [--events 50000] [--repeats 3] [--batch 500] [--json PATH]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from river.anomaly import HalfSpaceTrees

from streamguard.detectors.hst import HalfSpaceForest

FEATURES = ("f0", "f1", "f2", "f3", "f4")
Run = tuple[float, np.ndarray]  # (timed seconds, scores)
CONFIGS = [  # (n_trees, height, window_size)
    (10, 8, 250),
    (10, 12, 250),
    (25, 10, 250),
]


def make_stream(n: int, seed: int = 0) -> np.ndarray:
    """Uniform [0, 1] features with 1% outliers, some outside the default limits."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, len(FEATURES)))
    outliers = rng.random(n) < 0.01
    X[outliers] = rng.uniform(-0.5, 1.5, (int(outliers.sum()), len(FEATURES)))
    return X


def run_river(X: np.ndarray, n_trees: int, height: int, window: int) -> Run:
    model = HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window, seed=42)
    rows = [dict(zip(FEATURES, row, strict=True)) for row in X.tolist()]
    scores = np.empty(len(X))
    scores[0] = model.score_one(rows[0])
    model.learn_one(rows[0])  # River grows its trees here: keep that out of the timing
    start = time.perf_counter()
    for i in range(1, len(rows)):
        scores[i] = model.score_one(rows[i])
        model.learn_one(rows[i])
    return time.perf_counter() - start, scores


def run_forest(X: np.ndarray, n_trees: int, height: int, window: int, batch: int) -> Run:
    model = HalfSpaceForest(FEATURES, n_trees, height, window, seed=42)
    parts = [model.score_learn_many(X[:1])]  # same untimed first event as River
    start = time.perf_counter()
    parts += [model.score_learn_many(X[i : i + batch]) for i in range(1, len(X), batch)]
    return time.perf_counter() - start, np.concatenate(parts)


def run_forest_one(X: np.ndarray, n_trees: int, height: int, window: int) -> Run:
    model = HalfSpaceForest(FEATURES, n_trees, height, window, seed=42)
    rows = [dict(zip(FEATURES, row, strict=True)) for row in X.tolist()]
    scores = np.empty(len(X))
    start = time.perf_counter()
    for i, x in enumerate(rows):
        scores[i] = model.score_one(x)
        model.learn_one(x)
    return time.perf_counter() - start, scores


def median_rate(fn: Callable[[], Run], n: int, repeats: int) -> tuple[float, np.ndarray]:
    """Median events/s over ``repeats`` fresh runs; tree building and dict making excluded."""
    times, scores = [], np.empty(0)
    for _ in range(repeats):
        elapsed, scores = fn()
        times.append(elapsed)
    return (n - 1) / statistics.median(times), scores


def build_ms(n_trees: int, height: int, window: int) -> float:
    """Growing the trees (the same random calls in both libraries), once per model."""
    start = time.perf_counter()
    HalfSpaceForest(FEATURES, n_trees, height, window, seed=42)
    return (time.perf_counter() - start) * 1e3


def bench(events: int, repeats: int, batch: int, one_at_a_time: bool) -> list[dict]:
    X = make_stream(events)
    rows = []
    for n_trees, height, window in CONFIGS:
        cfg = (X, n_trees, height, window)
        river = functools.partial(run_river, *cfg)
        forest = functools.partial(run_forest, *cfg, batch)
        river_rate, river_scores = median_rate(river, events, repeats)
        rate, scores = median_rate(forest, events, repeats)
        row = {
            "n_trees": n_trees,
            "height": height,
            "window_size": window,
            "events": events,
            "batch": batch,
            "river_events_per_s": river_rate,
            "forest_events_per_s": rate,
            "ratio": rate / river_rate,
            "identical": bool(np.array_equal(scores, river_scores)),
            "build_ms": build_ms(n_trees, height, window),
        }
        if one_at_a_time:
            one_rate, one = median_rate(functools.partial(run_forest_one, *cfg), events, repeats)
            row["forest_one_events_per_s"] = one_rate
            row["identical"] = row["identical"] and bool(np.array_equal(one, river_scores))
        rows.append(row)
        print(f"done {n_trees}/{height}/{window}", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    one = "forest_one_events_per_s" in rows[0]
    head = "| trees/height/window | events | River ev/s | HalfSpaceForest ev/s (batch) | ratio |"
    head += " forest one-at-a-time ev/s |" if one else ""
    head += " tree build ms | identical |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = (
            f"| {r['n_trees']}/{r['height']}/{r['window_size']} | {r['events']:,} "
            f"| {r['river_events_per_s']:,.0f} | {r['forest_events_per_s']:,.0f} ({r['batch']}) "
            f"| {r['ratio']:.1f}x |"
        )
        line += f" {r['forest_one_events_per_s']:,.0f} |" if one else ""
        lines.append(line + f" {r['build_ms']:.0f} | {'yes' if r['identical'] else 'NO'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--one-at-a-time", action="store_true", help="also time learn_one/score_one"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    rows = bench(args.events, args.repeats, args.batch, args.one_at_a_time)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
