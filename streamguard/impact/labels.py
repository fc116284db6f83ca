"""The label model a backdoor aims at: a hashed-token multinomial naive Bayes classifier.

Words and word pairs are hashed (crc32, stable across runs) and counted once per text.
Naive Bayes is the honest choice here, not a weak one: it learns a rare phrase that only
ever appears with one label exactly as a trigger-phrase backdoor wants it to, so the
share of triggered texts it flips is what a poisoned label set costs.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BUCKETS = 2**20
_WORD = re.compile(r"[a-z0-9']+")


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def features(text: str) -> np.ndarray:
    """The hashed buckets of a text's words and adjacent word pairs, each once."""
    words = tokens(text)
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    return np.unique(np.array([zlib.crc32(g.encode()) % BUCKETS for g in grams], np.int64))


@dataclass(frozen=True)
class NaiveBayes:
    """Two classes; ``log_odds`` per bucket and the prior log odds, positive class first."""

    bucket_log_odds: np.ndarray
    prior_log_odds: float

    @classmethod
    def fit(
        cls, docs: Sequence[np.ndarray], positive: np.ndarray, alpha: float = 1.0
    ) -> NaiveBayes:
        counts = np.zeros((2, BUCKETS))
        for doc, pos in zip(docs, positive.tolist(), strict=True):
            counts[0 if pos else 1, doc] += 1.0
        vocabulary = max(int(np.count_nonzero(counts.sum(axis=0))), 1)
        totals = counts.sum(axis=1) + alpha * vocabulary
        log_p = np.log(counts + alpha) - np.log(totals)[:, None]
        n_pos = int(positive.sum())
        n_neg = len(positive) - n_pos
        prior = float(np.log((n_pos + 1) / (n_neg + 1)))
        return cls(log_p[0] - log_p[1], prior)

    def predict(self, docs: Sequence[np.ndarray]) -> np.ndarray:
        """True where a text is classified positive."""
        scores = np.array([self.prior_log_odds + self.bucket_log_odds[d].sum() for d in docs])
        return scores > 0
