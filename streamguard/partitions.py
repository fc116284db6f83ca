"""Detector state per input partition, so that state moves with its partition.

Kafka hands partitions from member to member on every rebalance. Whoever owns a
partition must score its next event from that partition's state, or a scale-out (or a
member's death) would silently reset detection for the partitions that moved. So each
input partition gets its own :class:`~streamguard.pipeline.Pipeline`, checkpointed under
the partition's name (``streamguard.state``); the member that takes a partition over loads
that checkpoint and replays the committed gap.

Ticks are cut per partition too (at most ``max_poll_records`` of one partition's records),
so a partition's verdicts depend on its own records only, never on how polls happened to
interleave partitions or on how many members share them.

The consequence is the scale-out contract in docs/ARCHITECTURE.md: signals are
partition-local, so producers key the input topic by ``item_id``: every event on an item
(pushes, bombing, templated reviews on it, its label mix) meets in one state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from streamguard.pipeline import Pipeline, SourceRecord

PartitionKey = tuple[str, int]


@dataclass
class Partition:
    """One owned input partition: its pipeline and where its state stands."""

    pipeline: Pipeline
    seen: int | None = None  # next offset the state covers; None until first known
    replay_until: int | None = None  # replaying silently up to this committed offset
    replay_ticks: list[int] = field(default_factory=list)  # tick ends of the first run
    pending: list[SourceRecord] = field(default_factory=list)  # read, not yet processed
    replay_buffer: list[SourceRecord] = field(default_factory=list)  # read, to replay
    first_dropped: int | None = None  # first pending offset dropped at a revocation
    ticks_since_checkpoint: int = 0

    def take_tick(self, size: int, partial: bool) -> list[SourceRecord]:
        """The next tick of this partition: ``size`` records, or fewer when ``partial``."""
        if len(self.pending) < size and not partial:
            return []
        tick, self.pending = self.pending[:size], self.pending[size:]
        return tick


class Partitions:
    """The partitions this member owns."""

    def __init__(self, factory: Callable[[], Pipeline]) -> None:
        self.factory = factory
        self.owned: dict[PartitionKey, Partition] = {}

    def pipelines(self) -> list[Pipeline]:
        return [p.pipeline for p in list(self.owned.values())]

    def get(self, key: PartitionKey) -> Partition:
        part = self.owned.get(key)
        if part is None:
            part = self.owned[key] = Partition(self.factory())
        return part

    def add(self, records: list[SourceRecord]) -> None:
        for r in records:
            self.get((r.topic, r.partition)).pending.append(r)

    def pending(self) -> int:
        return max((len(p.pending) for p in self.owned.values()), default=0)
