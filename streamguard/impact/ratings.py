"""The rating model a shilling campaign aims at: a regularised bias recommender.

``rating ~ mu + b_user + b_item``, fitted by a few alternating ridge sweeps, is the
baseline every collaborative-filtering model starts from, and ``mu + b_item`` is how it
ranks items for a new user: exactly what a push (or nuke) campaign tries to move. The
shrinkage (``reg_item``) is what a few ratings cannot beat and a cohort of fake accounts
can, so the target's rank measures the attack's success.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RatingTable:
    """Ratings as integer-coded columns over one vocabulary shared by every training set."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    items: list[str]
    n_users: int

    @classmethod
    def build(
        cls, users: Sequence[str], items: Sequence[str], ratings: Sequence[float]
    ) -> RatingTable:
        user_ids, user_codes = np.unique(np.asarray(users, dtype=object), return_inverse=True)
        item_ids, item_codes = np.unique(np.asarray(items, dtype=object), return_inverse=True)
        return cls(
            user_codes.astype(np.int64),
            item_codes.astype(np.int64),
            np.asarray(ratings, dtype=float),
            [str(i) for i in item_ids],
            len(user_ids),
        )


@dataclass(frozen=True)
class BiasModel:
    mu: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    item_seen: np.ndarray  # bool: the item had training ratings

    def predict(self, user: np.ndarray, item: np.ndarray, low: float, high: float) -> np.ndarray:
        return np.clip(self.mu + self.user_bias[user] + self.item_bias[item], low, high)

    def rank(self, item: int) -> int | None:
        """1-based rank of ``item`` among the items with training ratings, by ``mu + b_i``."""
        if not self.item_seen[item]:
            return None
        score = self.item_bias[self.item_seen]
        return int(np.sum(score > self.item_bias[item])) + 1


def fit_biases(
    table: RatingTable,
    mask: np.ndarray,
    reg_user: float = 5.0,
    reg_item: float = 10.0,
    sweeps: int = 5,
) -> BiasModel:
    """Alternating ridge updates of user and item biases on the ratings in ``mask``."""
    u, i, r = table.user[mask], table.item[mask], table.rating[mask]
    n_items = len(table.items)
    mu = float(r.mean()) if len(r) else 0.0
    bu = np.zeros(table.n_users)
    bi = np.zeros(n_items)
    n_u = np.bincount(u, minlength=table.n_users)
    n_i = np.bincount(i, minlength=n_items)
    for _ in range(sweeps):
        bi = np.bincount(i, r - mu - bu[u], n_items) / (n_i + reg_item)
        bu = np.bincount(u, r - mu - bi[i], table.n_users) / (n_u + reg_user)
    return BiasModel(mu, bu, bi, n_i > 0)


def rmse(model: BiasModel, table: RatingTable, test: np.ndarray, low: float, high: float) -> float:
    predicted = model.predict(table.user[test], table.item[test], low, high)
    return float(np.sqrt(np.mean((predicted - table.rating[test]) ** 2))) if test.any() else 0.0
