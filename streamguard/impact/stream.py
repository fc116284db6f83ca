"""One replayed stream as the downstream trainer sees it: events and three training sets.

``everything`` is what retraining would read without StreamGuard (every valid event),
``guarded`` what StreamGuard let through (final action clean, revocations applied), and
``clean`` what an oracle would keep (truth ``poisoned = 0``). A fixed share of the benign
events is held out of all three for testing, chosen by a hash of the event id so the
split does not depend on order, seed or which set is trained.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from streamguard.evaluate.metrics import TruthRow

SETS = ("everything", "guarded", "clean")


@dataclass(frozen=True)
class Stream:
    events: list[dict[str, Any]]  # valid events, in stream order
    guarded: np.ndarray  # bool: final action clean
    poisoned: np.ndarray  # bool: truth says poisoned
    campaign: list[str]  # truth campaign id, "" for benign

    def members(self, name: str) -> np.ndarray:
        """The mask of a training set by name (before the test split is removed)."""
        if name == "everything":
            return np.ones(len(self.events), dtype=bool)
        if name == "guarded":
            return self.guarded
        if name == "clean":
            return ~self.poisoned
        raise ValueError(f"unknown training set {name!r}; choose one of {SETS}")

    def held_out(self, share: float) -> np.ndarray:
        """Benign events kept out of every training set, about ``share`` of them."""
        cut = int(share * 2**32)
        bucket = np.array([zlib.crc32(e["event_id"].encode()) for e in self.events], np.uint64)
        return (bucket < cut) & ~self.poisoned


def load_stream(
    lines: Sequence[bytes], verdicts: Sequence[Mapping[str, Any]], truth: Mapping[str, TruthRow]
) -> Stream:
    """Join the input lines with their verdicts (one per line) and the truth."""
    if len(lines) != len(verdicts):
        raise ValueError(f"{len(lines)} lines but {len(verdicts)} verdicts")
    events, guarded, poisoned, campaign = [], [], [], []
    for line, verdict in zip(lines, verdicts, strict=True):
        if verdict["final_action"] == "dlq":
            continue
        event = orjson.loads(line)
        row = truth.get(event["event_id"])
        events.append(event)
        guarded.append(verdict["final_action"] == "clean")
        poisoned.append(bool(row and row.poisoned))
        campaign.append(row.campaign if row else "")
    return Stream(events, np.array(guarded, bool), np.array(poisoned, bool), campaign)
