"""Checkpoints of detector state, so a restarted member scores as if it never stopped.

A checkpoint is the whole pipeline (features, detectors, calibration, release log)
pickled together with the input offsets it has seen, written atomically (temporary file,
fsync, rename) to the state directory after a tick's transaction committed. It can be
older than the committed offsets (a crash between commit and checkpoint, or checkpoints
taken every N ticks): on restart the service seeks to the checkpoint's offsets and
replays the gap up to the committed offsets *silently*, learning without publishing, so
state and outputs line up again.

Scores depend on where ticks begin and end (a tick is scored from the state before it),
so the replay must cut the gap at the same places the first run did. Each committed
tick's end offsets are appended to a small tick log next to the checkpoint (truncated
at every checkpoint); the replay processes the gap in exactly those ticks.

A checkpoint is only used when it was made under the same detector, pipeline and policy
settings (a fingerprint of them is stored with it); otherwise it is ignored with a
warning and the member starts fresh.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import orjson

from streamguard.config import Settings
from streamguard.pipeline import Pipeline

log = logging.getLogger(__name__)
# 10: triggers keep words for a second look; 9: slow pushes keep items and accounts as
# numpy columns and one ring of ratings; 8: slow pushes count each item's ring extremes;
# 7: the release log keeps a floor of accounts, slow pushes the typical activity; 6:
# campaigns keep each target's established rate at any value; 5: drift's counts since a
# change point hold kept values only; 4: packed release log, histogram slots; 3: raw
# values only; 2: per partition
FORMAT_VERSION = 10

Offsets = dict[tuple[str, int], int]


def fingerprint(settings: Settings) -> str:
    """What shapes detector state: a checkpoint from other settings must not be reused."""
    shaping = {
        "detectors": settings.detectors.model_dump(mode="json"),
        "pipeline": settings.pipeline.model_dump(mode="json"),
        "policy": settings.policy.model_dump(mode="json"),
        "format": FORMAT_VERSION,
    }
    return hashlib.sha256(orjson.dumps(shaping, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass
class Checkpoint:
    fingerprint: str
    offsets: Offsets
    pipeline: Pipeline


class CheckpointStore:
    """One checkpoint file per consumer group and member in ``directory``."""

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        self.path = directory / f"{safe}.checkpoint"
        self.ticks_path = directory / f"{safe}.ticks"

    def save(self, checkpoint: Checkpoint) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(checkpoint, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.ticks_path.write_bytes(b"")  # ticks before the checkpoint are in its state

    def log_tick(self, ends: Offsets) -> None:
        """Remember where a committed tick ended (one JSON line per tick)."""
        line = orjson.dumps([[t, p, o] for (t, p), o in sorted(ends.items())])
        with self.ticks_path.open("ab") as f:
            f.write(line + b"\n")

    def ticks(self) -> list[Offsets]:
        """End offsets of the ticks committed since the checkpoint, oldest first; a torn
        last line (a crash while writing it) is dropped."""
        if not self.ticks_path.exists():
            return []
        ends: list[Offsets] = []
        for line in self.ticks_path.read_bytes().splitlines():
            try:
                ends.append({(t, p): o for t, p, o in orjson.loads(line)})
            except (orjson.JSONDecodeError, TypeError, ValueError):
                break
        return ends

    def load(self, expected_fingerprint: str) -> Checkpoint | None:
        if not self.path.exists():
            return None
        try:
            with self.path.open("rb") as f:
                checkpoint = pickle.load(f)  # noqa: S301 - our own file in our state dir
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
            log.warning("ignoring unreadable checkpoint %s: %r", self.path, exc)
            return None
        if not isinstance(checkpoint, Checkpoint):
            log.warning("ignoring %s: not a StreamGuard checkpoint", self.path)
            return None
        if checkpoint.fingerprint != expected_fingerprint:
            log.warning("ignoring checkpoint %s: made under other detector settings", self.path)
            return None
        return checkpoint
