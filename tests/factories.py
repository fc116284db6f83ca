"""Small builders for events and records, shared by the tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson

from streamguard.pipeline import SourceRecord

T0 = 1_700_000_000.0


def event(i: int, **fields: Any) -> dict[str, Any]:
    base = {
        "event_id": f"e{i}",
        "ts": T0 + i,
        "kind": "rating",
        "account_id": f"a{i % 50}",
        "item_id": f"i{i % 20}",
        "rating": 1 + i % 5,
    }
    base.update(fields)
    return base


def benign_stream(
    n: int, seed: int = 0, accounts: int = 500, items: int = 100
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    quality = rng.uniform(2.0, 4.5, items)
    out = []
    for i in range(n):
        item = int(rng.zipf(1.5) % items)
        rating = int(np.clip(np.round(rng.normal(quality[item], 0.9)), 1, 5))
        out.append(
            event(
                i,
                account_id=f"a{rng.integers(accounts)}",
                item_id=f"i{item}",
                rating=rating,
                ts=T0 + i * 30,
            )
        )
    return out


def records(values: Iterable[dict[str, Any] | bytes | None], start: int = 0) -> list[SourceRecord]:
    out = []
    for i, v in enumerate(values):
        raw = v if isinstance(v, bytes) or v is None else orjson.dumps(v)
        out.append(SourceRecord(raw, "test.events", 0, start + i))
    return out
