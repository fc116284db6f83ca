"""Per-event anomaly scoring with half-space trees over the shared streaming features.

The forest sees a fixed, bounded view of each event (see ``FEATURE_LIMITS``): unknown
values are filled with a neutral value so that a missing account age is not itself an
anomaly. It learns only from kept events (the pipeline passes ``keep``).

Two engines give the same scores: ``"numpy"`` (StreamGuard's vectorised forest, the
default, see :mod:`streamguard.detectors.hst`) and ``"river"`` (River's own
``HalfSpaceTrees``, one event at a time), kept selectable as the reference.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from streamguard.detectors.base import Batch, Scores

# feature -> (low, high, fill for unknown); values are clipped into [low, high].
FEATURE_LIMITS: dict[str, tuple[float, float, float]] = {
    "rating_dev": (-4.0, 4.0, 0.0),
    "item_gap_log": (0.0, 16.0, 16.0),
    "account_age_log": (0.0, 8.0, 5.0),
    "account_count_log": (0.0, 10.0, 3.0),
    "account_rate_log": (0.0, 6.0, 0.7),
    "account_extreme_share": (0.0, 1.0, 0.3),
}


def anomaly_matrix(batch: Batch) -> np.ndarray:
    """The forest's input columns, derived from the batch features, clipped and filled."""
    f = batch.features
    raw = {
        "rating_dev": f["rating_dev"],
        "item_gap_log": f["item_gap_log"],
        "account_age_log": np.log1p(f["account_age_days"]),
        "account_count_log": f["account_count_log"],
        "account_rate_log": np.log1p(f["account_rate_1h"]),
        "account_extreme_share": f["account_extreme_share"],
    }
    cols = []
    for name, (low, high, fill) in FEATURE_LIMITS.items():
        col = np.where(np.isnan(raw[name]), fill, raw[name])
        cols.append(np.clip(col, low, high))
    return np.column_stack(cols) if cols else np.zeros((len(batch), 0))


class HalfSpaceAnomalyDetector:
    """Half-space-tree anomaly score for every event."""

    name = "anomaly"

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int = 42,
        engine: Literal["numpy", "river"] = "numpy",
    ) -> None:
        if engine not in ("numpy", "river"):
            raise ValueError(f"engine must be 'numpy' or 'river', got {engine!r}")
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.engine = engine
        limits: dict[Any, tuple[float, float]] = {
            name: (low, high) for name, (low, high, _) in FEATURE_LIMITS.items()
        }
        self._features = tuple(FEATURE_LIMITS)
        self._walked: tuple[Batch, np.ndarray] | None = None  # the tick scored last
        self._model: Any
        if engine == "river":
            from river.anomaly import HalfSpaceTrees

            self._model = HalfSpaceTrees(n_trees, height, window_size, limits, seed)
        else:
            from streamguard.detectors.hst import HalfSpaceForest

            self._model = HalfSpaceForest(
                self._features, n_trees, height, window_size, limits, seed
            )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_walked": None}  # a checkpoint holds no tick

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"_walked": None, **state})  # checkpoints from before it too

    def score_batch(self, batch: Batch) -> Scores:
        X = anomaly_matrix(batch)
        warming = bool(
            self._model.first_window if self.engine == "numpy" else self._model._first_window
        )
        if self.engine == "numpy":
            leaves = self._model.leaves_many(X)
            self._walked = (batch, leaves)  # learn_batch of the same tick reuses them
            scores = self._model.score_leaves(leaves)
        else:
            scores = np.array([self._model.score_one(self._row(x)) for x in X])
        return Scores(
            np.asarray(scores, dtype=np.float64),
            [None] * len(X),
            explain=lambda i: self._explain(X[i]),
            warming=warming,
        )

    def learn_batch(self, batch: Batch, keep: np.ndarray) -> None:
        walked, self._walked = self._walked, None
        if self.engine == "numpy":
            if walked is not None and walked[0] is batch:
                self._model.learn_leaves(walked[1], keep)
            else:
                self._model.learn_many(anomaly_matrix(batch), keep)
        else:
            for x, kept in zip(anomaly_matrix(batch), keep, strict=True):
                if kept:
                    self._model.learn_one(self._row(x))

    def _row(self, x: np.ndarray) -> dict[str, float]:
        return dict(zip(self._features, x.tolist(), strict=True))

    def _explain(self, x: np.ndarray) -> str:
        """Name the features furthest from their neutral value: what made it unusual."""
        spans = [
            (abs(v - fill) / (high - low), name, v)
            for v, (name, (low, high, fill)) in zip(x, FEATURE_LIMITS.items(), strict=True)
        ]
        top = sorted(spans, reverse=True)[:2]
        return "unusual " + ", ".join(f"{name}={v:.2f}" for _, name, v in top)
