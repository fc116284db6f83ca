"""``streamguard export``: a versioned, rebuildable training snapshot of the clean set.

:mod:`.build` makes the snapshot from plain records (pure, unit-tested); :mod:`.sources`
reads them from Kafka and the review store; this module ties the two together and
records where everything came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamguard import __version__
from streamguard.config import Settings
from streamguard.snapshot.build import (
    DATA_FILE,
    MANIFEST_FILE,
    ReviewDecision,
    Snapshot,
    TopicRecord,
    build_snapshot,
    snapshot_files,
)
from streamguard.snapshot.cut import Cut, parse_until
from streamguard.state import fingerprint

__all__ = [
    "DATA_FILE",
    "MANIFEST_FILE",
    "Cut",
    "ReviewDecision",
    "Snapshot",
    "TopicRecord",
    "build_snapshot",
    "detector_provenance",
    "export_snapshot",
    "parse_until",
    "write_snapshot",
]


def detector_provenance(settings: Settings) -> dict[str, Any]:
    """What decided the verdicts: the version and the settings that shape detection
    (the same fingerprint a state checkpoint carries)."""
    return {
        "streamguard_version": __version__,
        "detector_settings": {
            "fingerprint": fingerprint(settings),
            "detectors": settings.detectors.model_dump(mode="json"),
            "pipeline": settings.pipeline.model_dump(mode="json"),
            "policy": settings.policy.model_dump(mode="json"),
        },
    }


def write_snapshot(snapshot: Snapshot, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, content in snapshot_files(snapshot).items():
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(content)
        tmp.replace(out / name)


def export_snapshot(settings: Settings, cut: Cut, out: Path) -> Snapshot:
    """Read the clean and quarantine topics and the review store, build, write."""
    from streamguard.snapshot.sources import read_decisions, read_topic, redact

    k = settings.kafka
    clean, clean_ends = read_topic(k, k.clean_topic, cut.offsets)
    held, held_ends = read_topic(k, k.quarantine_topic, cut.quarantine_offsets)
    decisions = read_decisions(settings.store.url)
    pinned = Cut(clean_ends, cut.until_ts, held_ends)
    provenance = {
        **detector_provenance(settings),
        "source": {
            "clean_topic": {"topic": k.clean_topic, "end_offsets": _json(clean_ends)},
            "quarantine_topic": {"topic": k.quarantine_topic, "end_offsets": _json(held_ends)},
            "isolation_level": "read_committed",
            "review_store": redact(settings.store.url) if decisions is not None else None,
        },
        "rebuild": _rebuild_args(pinned),
    }
    snapshot = build_snapshot(clean, held, decisions, pinned, provenance)
    write_snapshot(snapshot, out)
    return snapshot


def _json(offsets: dict[int, int]) -> dict[str, int]:
    return {str(p): offsets[p] for p in sorted(offsets)}


def _offsets_arg(offsets: dict[int, int]) -> str:
    return ",".join(f"{p}:{offsets[p]}" for p in sorted(offsets))


def _rebuild_args(cut: Cut) -> list[str]:
    """The export flags that read exactly the same records again."""
    assert cut.offsets is not None and cut.quarantine_offsets is not None
    args = ["--until", _offsets_arg(dict(cut.offsets))]
    if cut.until_ts is not None:
        args += ["--until", repr(cut.until_ts)]
    return args + ["--quarantine-until", _offsets_arg(dict(cut.quarantine_offsets))]
