"""The snapshot itself, built from plain records: no Kafka, no database, no clock.

The clean topic is replayed per partition in offset order: a value releases an event
(the last value for an ``event_id`` wins, so an approved release after a revocation
brings it back), a tombstone removes it. What remains, cut at the event time if one
was given, is the training set: one canonical JSON line per event (orjson, sorted
keys), sorted by ``event_id``. Everything the quarantine topic held back and that is
not in the set is listed in the manifest with its reasons, campaigns and review
decision, so a reader can see what was left out and why.

Nothing here reads the wall clock or depends on the order records were fetched in, so
the same records give the same bytes: a snapshot can be rebuilt and diffed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamguard.events import to_epoch
from streamguard.snapshot.cut import Cut

FORMAT_VERSION = 1
DATA_FILE = "snapshot.jsonl"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """One record of the clean or quarantine topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class ReviewDecision:
    """A row of the review store: ``status`` is pending, approved or rejected."""

    event_id: str
    status: str
    decided_by: str | None = None
    decided_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "decided_by": self.decided_by, "decided_at": self.decided_at}


@dataclass(frozen=True)
class Snapshot:
    data: bytes
    manifest: dict[str, Any]


@dataclass
class _Held:
    """What the quarantine topic says about one event, in topic order."""

    event: dict[str, Any]
    reasons: list[dict[str, Any]] = field(default_factory=list)
    retroactive: bool = False


def canonical(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def _ts(event: Mapping[str, Any]) -> float | None:
    try:
        return to_epoch(event.get("ts"))
    except ValueError:
        return None


def _ordered(records: Iterable[TopicRecord], ends: Mapping[int, int] | None) -> list[TopicRecord]:
    """Per-partition offset order, cut at the exclusive end offsets if given."""
    kept = [r for r in records if ends is None or r.offset < ends.get(r.partition, 0)]
    return sorted(kept, key=lambda r: (r.partition, r.offset))


def _replay_clean(
    records: list[TopicRecord], until_ts: float | None
) -> tuple[dict[str, dict[str, Any]], set[str], Counter[str], list[dict[str, int]]]:
    """The clean set after every release and tombstone, and what was seen on the way."""
    live: dict[str, dict[str, Any]] = {}
    tombstoned: set[str] = set()
    counts: Counter[str] = Counter()
    unreadable: list[dict[str, int]] = []
    for r in records:
        key = r.key.decode("utf-8", "replace") if r.key is not None else None
        if r.value is None:
            counts["tombstones"] += 1
            if key is not None:
                live.pop(key, None)
                tombstoned.add(key)
            continue
        counts["releases"] += 1
        try:
            event = orjson.loads(r.value)
        except orjson.JSONDecodeError:
            event = None
        event_id = event.get("event_id") if isinstance(event, dict) else None
        ts = _ts(event) if isinstance(event, dict) else None
        if not isinstance(event, dict) or not isinstance(event_id, str) or ts is None:
            unreadable.append({"partition": r.partition, "offset": r.offset})
            continue
        if until_ts is not None and ts > until_ts:
            counts["after_cut"] += 1
            continue
        if event_id in live:
            counts["repeated_releases"] += 1
        live[event_id] = event
        tombstoned.discard(event_id)
    return live, tombstoned, counts, unreadable


def _read_quarantine(records: list[TopicRecord], until_ts: float | None) -> dict[str, _Held]:
    held: dict[str, _Held] = {}
    for r in records:
        if r.value is None:
            continue
        try:
            body = orjson.loads(r.value)
            event, verdict = body["event"], body["verdict"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        if not isinstance(event, dict) or not isinstance(verdict, dict):
            continue
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            continue
        ts = _ts(event)
        if until_ts is not None and ts is not None and ts > until_ts:
            continue
        entry = held.setdefault(event_id, _Held(event))
        entry.retroactive |= bool(verdict.get("retroactive", False))
        for reason in verdict.get("reasons", []):
            if reason not in entry.reasons:
                entry.reasons.append(reason)
    return held


def _lineage(
    event_id: str,
    held: _Held | None,
    tombstoned: bool,
    decision: ReviewDecision | None,
) -> dict[str, Any]:
    event = held.event if held else {}
    reasons = held.reasons if held else []
    return {
        "event_id": event_id,
        "account_id": event.get("account_id"),
        "item_id": event.get("item_id"),
        "kind": event.get("kind"),
        "ts": _ts(event) if event else None,
        "reasons": reasons,
        "detectors": sorted({str(r.get("detector")) for r in reasons}),
        "campaign_ids": sorted({str(r["campaign_id"]) for r in reasons if r.get("campaign_id")}),
        "retroactive": bool(held and held.retroactive),
        "tombstoned": tombstoned,
        "review": decision.to_dict() if decision else None,
    }


def build_snapshot(
    clean: Iterable[TopicRecord],
    quarantine: Iterable[TopicRecord],
    decisions: Mapping[str, ReviewDecision] | None,
    cut: Cut,
    provenance: Mapping[str, Any],
) -> Snapshot:
    """The training set and its manifest. ``decisions`` is None when no review store was
    read (lineage then says nothing about review); ``provenance`` (version, settings,
    topics and the offsets read) is copied into the manifest as given."""
    live, tombstoned, counts, unreadable = _replay_clean(_ordered(clean, cut.offsets), cut.until_ts)
    held = _read_quarantine(_ordered(quarantine, cut.quarantine_offsets), cut.until_ts)
    known = decisions or {}

    ids = sorted(live)
    data = b"".join(canonical(live[e]) + b"\n" for e in ids)
    excluded = [
        _lineage(e, held.get(e), e in tombstoned, known.get(e))
        for e in sorted((set(held) | tombstoned) - set(live))
    ]
    reviewed_in = [
        {"event_id": e, "review": known[e].to_dict() if e in known else None}
        for e in sorted(set(held) & set(live))
    ]
    manifest: dict[str, Any] = {
        "format": FORMAT_VERSION,
        **provenance,
        "cut": cut.describe(),
        "files": {
            DATA_FILE: {
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "events": len(ids),
            }
        },
        "counts": _counts(live, counts, unreadable, held, excluded, reviewed_in),
        "excluded": excluded,
        "included_after_quarantine": reviewed_in,
        "unreadable_clean_records": unreadable,
        "review_store_read": decisions is not None,
    }
    manifest["snapshot_id"] = hashlib.sha256(canonical(manifest)).hexdigest()[:16]
    return Snapshot(data, manifest)


def _counts(
    live: Mapping[str, Mapping[str, Any]],
    seen: Counter[str],
    unreadable: list[dict[str, int]],
    held: Mapping[str, _Held],
    excluded: list[dict[str, Any]],
    reviewed_in: list[dict[str, Any]],
) -> dict[str, Any]:
    def tally(values: Iterable[str]) -> dict[str, int]:
        return dict(sorted(Counter(values).items()))

    return {
        "events": len(live),
        "by_kind": tally(str(e.get("kind")) for e in live.values()),
        "clean_releases_read": seen["releases"],
        "tombstones_read": seen["tombstones"],
        "repeated_releases": seen["repeated_releases"],
        "after_time_cut": seen["after_cut"],
        "unreadable_clean_records": len(unreadable),
        "quarantined_events": len(held),
        "excluded": len(excluded),
        "excluded_by_detector": tally(d for x in excluded for d in x["detectors"]),
        "excluded_by_campaign": tally(c for x in excluded for c in x["campaign_ids"]),
        "excluded_by_review": tally(
            x["review"]["status"] if x["review"] else "unknown" for x in excluded
        ),
        "included_after_quarantine": len(reviewed_in),
        "included_after_quarantine_by_review": tally(
            x["review"]["status"] if x["review"] else "unknown" for x in reviewed_in
        ),
    }


def snapshot_files(snapshot: Snapshot) -> dict[str, bytes]:
    """The files of a snapshot by name, exactly as written."""
    manifest = orjson.dumps(snapshot.manifest, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    return {DATA_FILE: snapshot.data, MANIFEST_FILE: manifest + b"\n"}
