"""``streamguard run``: the long-running consumer-group member.

The loop is poll -> process -> settle the tick before -> submit this one: a publisher
(a child process by default, ``streamguard.outbox``) commits tick N while tick N+1 is
polled and scored, and at most one tick is in flight. Rebalances stay safe because
partitions are only revoked inside ``poll``, and the revoke hook settles the tick in flight
before anything moves; with at-least-once every tick settles before the next poll. The
time between polls stays bounded: a tick is at most ``max_poll_records`` records, a few
milliseconds of work, far below ``max_poll_interval_ms`` even while a commit is being
retried (the retry deadline is half of it).

SIGTERM or Ctrl-C sets a flag; the current tick finishes, its outputs are committed, the
clients close and the process exits 0. A broker that is down or goes away is retried with
backoff while ``/readyz`` reports not-ready; no record is skipped, because offsets only
move with committed outputs.

Detector state is kept per input partition (``streamguard.partitions``) and checkpointed
under the partition's name, so a partition that moves to another member takes its state
along; a checkpoint older than the committed offset is caught up by a silent replay cut
into the first run's ticks (``streamguard.state``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from streamguard.config import Settings
from streamguard.kafka import CommitAbandoned, CommitOnRevoke, make_consumer, to_source_records
from streamguard.metrics import Metrics
from streamguard.outbox import Outbox, make_runner
from streamguard.partitions import Partition, PartitionKey, Partitions
from streamguard.pipeline import Pipeline, SourceRecord, TickResult
from streamguard.probes import Liveness
from streamguard.state import Checkpoint, CheckpointStore, fingerprint

log = logging.getLogger(__name__)


class Service:
    """One consumer-group member running one pipeline per owned input partition."""

    def __init__(
        self,
        settings: Settings,
        new_pipeline: Callable[[], Pipeline],
        metrics: Metrics,
        liveness: Liveness,
        on_tick: Callable[[TickResult], None] = lambda result: None,
    ) -> None:
        self.settings = settings
        self.partitions = Partitions(new_pipeline)
        self.metrics = metrics
        self.liveness = liveness
        self.on_tick = on_tick
        self.stopping = threading.Event()
        self.consumer: KafkaConsumer | None = None
        self.outbox: Outbox | None = None
        # The tick submitted to the outbox and not yet settled, and when (wall clock).
        self.in_flight: tuple[dict[PartitionKey, list[SourceRecord]], TickResult, float] | None = (
            None
        )
        self.newly_assigned: list[TopicPartition] = []  # to check against checkpoints
        self.stores: dict[PartitionKey, CheckpointStore] = {}
        self.fingerprint = fingerprint(settings)
        self.dirty = False  # some scored tick was given up uncommitted: skip the last checkpoint

    def install_signal_handlers(self) -> None:
        def handle(signum: int, frame: FrameType | None) -> None:
            log.info(
                "received %s: finishing the current batch, then stopping",
                signal.Signals(signum).name,
            )
            self.stopping.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self) -> int:
        self._connect()
        try:
            while not self.stopping.is_set():
                self._tick()
        finally:
            self._close()
        log.info("stopped cleanly")
        return 0

    def _connect(self) -> None:
        """Create the clients, retrying with backoff until the brokers answer or we stop."""
        k = self.settings.kafka
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                consumer = make_consumer(k)
                consumer.subscribe([k.input_topic], listener=CommitOnRevoke(self._rebalanced))
                self.outbox = Outbox(
                    k,
                    consumer,
                    lambda: make_runner(k, self.settings.log_level, self.settings.log_format),
                    self._commit_error,
                    self.stopping.is_set,
                )
                self.consumer = consumer
                log.info(
                    "connected to %s, group %s, topic %s",
                    k.bootstrap_servers,
                    k.group_id,
                    k.input_topic,
                )
                return
            except KafkaError as exc:
                self.liveness.set_ready(False, f"cannot reach Kafka: {exc!r}")
                self.liveness.beat()
                log.warning("Kafka not reachable (%r); retrying in %.1fs", exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, k.retry_backoff_max_s)

    def _tick(self) -> None:
        self.liveness.beat()
        if self.consumer is None or self.outbox is None:
            return
        try:
            records = self._gather()
        except KafkaError as exc:
            self.liveness.set_ready(False, f"poll failed: {exc!r}")
            log.warning("poll failed: %r", exc)
            self._settle()
            self.stopping.wait(1.0)
            return
        if not records:
            self._settle()
            self._update_readiness()
            return
        # The checkpoint written when the tick in flight settles must not hold this tick's
        # learning, so such a tick settles first.
        due = self.in_flight is not None and self._checkpoint_due(self.in_flight[0])
        if due and not self._settle(also_rewind=set(records)):
            return
        started = time.perf_counter()
        result = TickResult([])
        for key, tick in records.items():
            result.extend(self.partitions.owned[key].pipeline.process(tick))
        self.metrics.observe_tick(result, time.perf_counter() - started)
        if not self._settle(also_rewind=set(records)):
            return  # this tick is dropped with the one before it, and read again
        try:
            self.outbox.submit(result, [r for tick in records.values() for r in tick])
        except KafkaError as exc:  # no publisher: read the tick again once there is one
            self._commit_error(exc)
            log.warning("cannot publish (%r); rewinding to committed offsets", exc)
            self.dirty = True
            self._rewind(set(records))
            self.stopping.wait(1.0)
            return
        self.in_flight = (records, result, time.time())
        if not self.outbox.pipelined:
            self._settle()

    def _settle(self, also_rewind: set[PartitionKey] | None = None, revoking: bool = False) -> bool:
        """Finish the tick in flight: wait until it is published and committed, then move
        the partitions on (tick log, checkpoint) and report it. False when it could not be
        committed: its partitions (and ``also_rewind``, a tick scored after it) are read
        again from the committed offsets; inside the revoke hook, where the consumer may
        not be called, their state is dropped instead, to be restored from a checkpoint."""
        if self.in_flight is None or self.outbox is None:
            return True
        records, result, submitted = self.in_flight
        self.in_flight = None
        if revoking:
            log.info("settling the tick in flight before partitions move")
        try:
            committed_at = self.outbox.settle()
        except CommitAbandoned as exc:
            self.dirty = True
            if self.stopping.is_set():
                log.warning("stopping with this tick uncommitted; it will be processed again")
            elif revoking:
                log.error("giving up on this tick's commit (%s) during a rebalance", exc)
                for key in records:
                    self.partitions.owned.pop(key, None)
            else:
                log.error(
                    "giving up on this tick's commit (%s); rewinding to committed offsets", exc
                )
                try:  # a publisher that died mid-commit left its transaction open, and
                    # reading the committed offsets waits until its successor aborts it
                    self.outbox.replace_dead_publisher()
                except KafkaError as replace_error:
                    log.warning("cannot start a publisher yet: %r", replace_error)
                self._rewind(set(records) | (also_rewind or set()))
            return False
        self.metrics.commit_latency.observe(max(committed_at - submitted, 0.0))
        for key, tick in records.items():
            self._advance(key, tick, live=True)
        self.on_tick(result)
        self.liveness.set_ready(True)
        self.metrics.ready.set(1)
        if not revoking:
            self._observe_lag()
        return True

    def _checkpoint_due(self, records: dict[PartitionKey, list[SourceRecord]]) -> bool:
        every = self.settings.state.every_ticks
        return self.settings.state.dir is not None and any(
            key in self.partitions.owned
            and self.partitions.owned[key].ticks_since_checkpoint + 1 >= every
            for key in records
        )

    def _gather(self) -> dict[PartitionKey, list[SourceRecord]]:
        """One tick: per partition, ``max_poll_records`` of its records. With
        ``tick_linger_ms`` 0 a tick is whatever one poll brought; otherwise polling goes on
        until a partition has a whole tick or the linger (from the first record) is up.
        Whole ticks per partition make a partition's verdicts independent of how polls
        interleaved partitions, of restarts and of how many members share the topic."""
        assert self.consumer is not None
        k = self.settings.kafka
        size = k.max_poll_records
        linger = k.tick_linger_ms / 1000.0
        deadline = time.monotonic() + linger
        while True:
            if self.partitions.pending() < size:
                had_records = self.partitions.pending() > 0
                # With a tick in flight, take only what is fetched already: when nothing
                # is, settling that tick comes before waiting for more.
                timeout = 0 if self.in_flight is not None else k.poll_timeout_ms
                polled = self.consumer.poll(timeout_ms=timeout, max_records=size)
                fresh = self._replay(self._align_assigned(to_source_records(polled)))
                if not fresh and self.in_flight is not None:
                    if not had_records:
                        return {}
                    self._settle()  # finish the tick in flight before lingering for more
                if fresh and not had_records:  # linger counts from the tick's first record
                    deadline = time.monotonic() + linger
                self.partitions.add(fresh)
            expired = k.tick_linger_ms == 0 or time.monotonic() >= deadline
            if self.partitions.pending() >= size or expired:
                break
            if self.stopping.is_set():
                return {}  # partial ticks stay uncommitted; re-read after a restart
        ticks: dict[PartitionKey, list[SourceRecord]] = {}
        for key, part in self.partitions.owned.items():
            tick = part.take_tick(size, partial=expired)
            if tick:
                ticks[key] = tick
        return ticks

    def _replay(self, records: list[SourceRecord]) -> list[SourceRecord]:
        """Hold back records of partitions whose restored state lags the committed offset,
        feed the gap to their pipeline without publishing (cut into the first run's
        ticks), and return the records to process normally."""
        live: list[SourceRecord] = []
        for r in records:
            part = self.partitions.owned.get((r.topic, r.partition))
            if part is not None and part.replay_until is not None:
                part.replay_buffer.append(r)
            else:
                live.append(r)
        for key, part in list(self.partitions.owned.items()):
            if part.replay_until is not None:
                self._replay_partition(key, part)
        return live

    def _replay_partition(self, key: PartitionKey, part: Partition) -> None:
        assert self.consumer is not None
        tp = TopicPartition(*key)
        while part.replay_until is not None:
            final = not part.replay_ticks
            end = part.replay_until if final else min(part.replay_ticks[0], part.replay_until)
            # Everything before ``end`` is read once a record at end - 1 (or later) is, or
            # the position passed it (it also moves past transaction markers).
            read = any(r.offset >= end - 1 for r in part.replay_buffer)
            if not read and self.consumer.position(tp) < end:
                return
            tick = [r for r in part.replay_buffer if r.offset < end]
            part.replay_buffer = [r for r in part.replay_buffer if r.offset >= end]
            if tick:
                part.pipeline.process(tick)
                self._advance(key, tick, live=False)
                log.info("replayed %d already-committed records of %s", len(tick), tp)
            if final:
                part.replay_until = None
                if part.replay_buffer:  # read past the gap: read again as whole ticks
                    self.consumer.seek(tp, part.replay_buffer[0].offset)
                    part.replay_buffer = []
            else:
                part.replay_ticks.pop(0)

    def _advance(self, key: PartitionKey, tick: list[SourceRecord], live: bool) -> None:
        part = self.partitions.owned[key]
        part.seen = tick[-1].offset + 1
        if not live:
            return  # no checkpoint mid-replay: it would drop the tick log the replay follows
        store = self._store(key)
        if store is None:
            return
        store.log_tick({key: part.seen})
        part.ticks_since_checkpoint += 1
        if part.ticks_since_checkpoint >= self.settings.state.every_ticks:
            self._checkpoint(key)

    def _store(self, key: PartitionKey) -> CheckpointStore | None:
        """Checkpoints are named by group and partition, not by member, so whichever
        member owns the partition next finds them (a state dir shared by the members)."""
        directory = self.settings.state.dir
        if directory is None:
            return None
        store = self.stores.get(key)
        if store is None:  # once per partition, not per tick (the store makes its directory)
            name = f"{self.settings.kafka.group_id}-{key[0]}-{key[1]}"
            store = self.stores[key] = CheckpointStore(directory, name)
        return store

    def _checkpoint(self, key: PartitionKey) -> None:
        part = self.partitions.owned.get(key)
        store = self._store(key)
        if store is None or part is None or part.seen is None or part.replay_until is not None:
            return  # mid-replay, the older checkpoint and its tick log are still what counts
        store.save(Checkpoint(self.fingerprint, {key: part.seen}, part.pipeline))
        part.ticks_since_checkpoint = 0

    def _update_readiness(self) -> None:
        assert self.consumer is not None
        # The group coordinator is marked unknown as soon as its connection fails, which is
        # the earliest reliable sign that the broker went away (poll itself stays quiet).
        coordinator_known = not self.consumer._coordinator.coordinator_unknown()  # noqa: SLF001
        if self.consumer.assignment() and coordinator_known:
            self.liveness.set_ready(True)
            self.metrics.ready.set(1)
        else:
            self.liveness.set_ready(False, "no partitions assigned or no broker connection")
            self.metrics.ready.set(0)

    def _commit_error(self, exc: Exception) -> None:
        self.metrics.commit_errors.inc()
        self.metrics.ready.set(0)
        self.liveness.set_ready(False, f"commit failing: {exc!r}")
        self.liveness.beat()

    def _rewind(self, partitions: set[PartitionKey]) -> None:
        assert self.consumer is not None
        for topic, partition in partitions:
            tp = TopicPartition(topic, partition)
            part = self.partitions.owned.get((topic, partition))
            if part is not None:
                part.pending = []
                part.replay_buffer = []
            try:
                committed = self.consumer.committed(tp)
                if committed is None:
                    self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek(tp, committed)
            except (KafkaError, AssertionError, ValueError) as exc:
                log.warning("could not rewind %s: %r", tp, exc)

    def _observe_lag(self) -> None:
        assert self.consumer is not None
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None:
                self.metrics.lag.labels(str(tp.partition)).set(
                    max(high - self.consumer.position(tp), 0)
                )

    def _rebalanced(self, what: str, partitions: list[TopicPartition]) -> None:
        """Rebalance hook. kafka-python runs it on its IO thread, where blocking calls
        such as committed() are refused, so assignments are settled after the poll."""
        if what == "assigned":
            self.newly_assigned.extend(partitions)
            return
        self._settle(revoking=True)  # nothing may move with a scored tick uncommitted
        self.metrics.lag.clear()  # lag of partitions we no longer own is not ours to report
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._checkpoint(key)
            part = self.partitions.owned.get(key)
            if part is not None:
                # Uncommitted: whoever owns the partition next reads them again.
                part.first_dropped = part.pending[0].offset if part.pending else None
                part.pending = []
                part.replay_buffer = []
                part.replay_until = None

    def _align_assigned(self, polled: list[SourceRecord]) -> list[SourceRecord]:
        """Settle new assignments: keep the in-memory state of a partition that nobody
        else moved on, else load its checkpoint; when that state lags the committed
        offset, seek back to it so the gap is replayed silently. Drop what this poll
        already returned from such partitions."""
        if not self.newly_assigned:
            return polled
        assert self.consumer is not None
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        for key in [k for k in self.partitions.owned if k not in assigned]:
            del self.partitions.owned[key]
        rewound: set[PartitionKey] = set()
        for tp in self.newly_assigned:
            key = (tp.topic, tp.partition)
            committed = self.consumer.committed(tp)
            part = self.partitions.owned.get(key)
            if committed is None:  # nothing committed yet: re-read what was dropped, if any
                if part is not None and part.first_dropped is not None:
                    self.consumer.seek(tp, part.first_dropped)
                    part.first_dropped = None
                    rewound.add(key)
                continue
            if part is None or part.seen != committed:
                part = self._restore(key)
            # Seek explicitly: records read before the rebalance were dropped (pending is
            # cleared on revoke), whether or not the client kept its fetch position.
            start = committed
            if part.seen is not None and part.seen < committed:
                start = part.seen
                part.replay_until = committed
            elif part.seen is not None and part.seen > committed:
                log.warning("checkpoint of %s is ahead of the committed offset; using it", tp)
            self.consumer.seek(tp, start)
            rewound.add(key)
        self.newly_assigned = []
        return [r for r in polled if (r.topic, r.partition) not in rewound]

    def _restore(self, key: PartitionKey) -> Partition:
        """The partition's checkpointed state (and its tick log), or fresh state."""
        store = self._store(key)
        restored = store.load(self.fingerprint) if store is not None else None
        if store is None or restored is None or key not in restored.offsets:
            part = self.partitions.owned[key] = Partition(self.partitions.factory())
            return part
        seen = restored.offsets[key]
        part = Partition(restored.pipeline, seen=seen)
        part.replay_ticks = [e[key] for e in store.ticks() if e.get(key, -1) > seen]
        self.partitions.owned[key] = part
        log.info("restored detector state of %s from %s", key, store.path)
        return part

    def _close(self) -> None:
        self._settle()
        if not self.dirty:  # state that learned an uncommitted tick is not worth keeping
            for key in list(self.partitions.owned):
                self._checkpoint(key)
        if self.outbox is not None:
            try:
                self.outbox.close()
            except Exception:  # noqa: BLE001
                log.warning("publisher did not close cleanly", exc_info=True)
        if self.consumer is not None:
            self.consumer.close(autocommit=False, timeout_ms=5_000)
        self.liveness.set_ready(False, "stopped")
