"""Shared feature state: the LRU tables stay compact, the account histogram reads right."""

from __future__ import annotations

import math
import sys

from factories import event

from streamguard.detectors.base import Batch
from streamguard.events import event_from_dict
from streamguard.features import FeatureState, LRUTable


def test_lru_churn_is_compacted_at_expiry_without_changing_order_or_contents():
    table: LRUTable[int] = LRUTable(max_size=100_000)
    keys = [f"a{i}" for i in range(70_000)]  # small tables are not worth a copy
    for i, key in enumerate(keys):
        table.put(key, i)
    for key in keys[::2]:  # touches re-insert keys: the dict regrows for three times its keys
        table.get(key)
    for key in keys[1::2]:
        table.get(key)
    grown = sys.getsizeof(table._data)
    expected = list(table.items())
    for _ in range(len(keys) // 4096 + 1):  # copies are spaced by the table's size
        assert table.expire(lambda value: False) == 0
    assert list(table.items()) == expected
    assert sys.getsizeof(table._data) < grown


def test_account_histogram_gives_extreme_share_and_entropy():
    ratings = [1, 5, 3, 5]
    events = [event_from_dict(event(i, account_id="a", rating=r)) for i, r in enumerate(ratings)]
    batch = Batch.of(events)
    FeatureState().extract(batch)
    assert batch.features["account_extreme_share"].tolist() == [1.0, 1.0, 2 / 3, 0.75]
    quarter, half = 0.25 * math.log(0.25), 0.5 * math.log(0.5)
    assert math.isclose(batch.features["account_entropy"][-1], -(2 * quarter + half))
