"""Where a snapshot ends: clean-topic offsets, an event time, or both.

Offsets are Kafka *end* offsets, exclusive, one per partition (``0:1234,1:999`` reads
offsets 0..1233 of partition 0): the same convention as committed offsets and as the
manifest, so a manifest's offsets can be passed back verbatim to rebuild a snapshot.
A time (RFC 3339 or epoch seconds) keeps events whose ``ts`` is at or before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from streamguard.events import to_epoch


@dataclass(frozen=True)
class Cut:
    """``offsets``: exclusive end per partition, or None to read to the committed end;
    ``until_ts``: keep events with ``ts <= until_ts``, or None for every event."""

    offsets: Mapping[int, int] | None = None
    until_ts: float | None = None
    quarantine_offsets: Mapping[int, int] | None = field(default=None)

    def describe(self) -> dict[str, object]:
        return {
            "offsets": _offsets_json(self.offsets),
            "until_ts": self.until_ts,
            "until_time": (
                None
                if self.until_ts is None
                else datetime.fromtimestamp(self.until_ts, UTC).isoformat().replace("+00:00", "Z")
            ),
        }


def parse_offsets(text: str) -> dict[int, int]:
    """``P:O[,P:O...]`` to ``{P: O}``; raises ValueError with the bad part named."""
    offsets: dict[int, int] = {}
    for part in text.split(","):
        part = part.strip()
        pieces = part.split(":")
        if len(pieces) != 2 or not all(p.strip().isdigit() for p in pieces):
            raise ValueError(f"{part!r} is not PARTITION:OFFSET (non-negative integers)")
        partition, offset = (int(p) for p in pieces)
        if partition in offsets:
            raise ValueError(f"partition {partition} is given twice")
        offsets[partition] = offset
    return offsets


def looks_like_offsets(text: str) -> bool:
    """Offsets hold only digits, colons and commas, and at least one colon (a bare
    number is an epoch time; an RFC 3339 time has letters or a dash)."""
    return ":" in text and all(c.isdigit() or c in ":, " for c in text)


def parse_until(values: Iterable[str], quarantine: str | None = None) -> Cut:
    """``--until`` given once or twice (offsets and/or a time) into a :class:`Cut`."""
    offsets: dict[int, int] | None = None
    until_ts: float | None = None
    for value in values:
        if looks_like_offsets(value):
            if offsets is not None:
                raise ValueError("--until: offsets are given twice")
            offsets = parse_offsets(value)
            continue
        if until_ts is not None:
            raise ValueError("--until: a time is given twice")
        try:
            number = float(value)
        except ValueError:
            until_ts = to_epoch(value.strip())
        else:
            until_ts = to_epoch(number)
    if offsets is None and until_ts is None:
        raise ValueError("--until needs clean-topic offsets (P:O,...) or an event time")
    return Cut(offsets, until_ts, parse_offsets(quarantine) if quarantine else None)


def _offsets_json(offsets: Mapping[int, int] | None) -> dict[str, int] | None:
    if offsets is None:
        return None
    return {str(p): offsets[p] for p in sorted(offsets)}
