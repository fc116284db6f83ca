"""``streamguard run``: the long-running consumer-group member.

The loop is poll -> process -> commit, one tick at a time, so a tick is always committed
before the next poll. That is what keeps rebalances safe (partitions are only revoked
inside ``poll``) and what bounds the time between polls: a tick is at most
``max_poll_records`` records, a few milliseconds of work, far below
``max_poll_interval_ms`` even while a commit is being retried (the retry deadline is half
of it).

SIGTERM or Ctrl-C sets a flag; the current tick finishes, its outputs are committed, the
clients close and the process exits 0. A broker that is down or goes away is retried with
backoff while ``/readyz`` reports not-ready; no record is skipped, because offsets only
move with committed outputs.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from streamguard.config import Settings
from streamguard.kafka import (
    CommitAbandoned,
    CommitOnRevoke,
    KafkaSink,
    make_consumer,
    make_producer,
    to_source_records,
)
from streamguard.metrics import Metrics
from streamguard.pipeline import Pipeline, SourceRecord, TickResult
from streamguard.probes import Liveness
from streamguard.state import Checkpoint, CheckpointStore, Offsets, fingerprint

log = logging.getLogger(__name__)


class Service:
    """One consumer-group member running the pipeline."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        metrics: Metrics,
        liveness: Liveness,
        on_tick: Callable[[TickResult], None] = lambda result: None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self.liveness = liveness
        self.on_tick = on_tick
        self.stopping = threading.Event()
        self.consumer: KafkaConsumer | None = None
        self.sink: KafkaSink | None = None
        self.seen: Offsets = {}  # next offset per partition covered by the pipeline state
        self.replay_until: Offsets = {}  # silent replay up to the committed offsets
        self.replay_ticks: list[Offsets] = []  # where the first run's ticks ended, in order
        self.replay_buffer: list[SourceRecord] = []  # read, not yet replayed
        self.newly_assigned: list[TopicPartition] = []  # to check against the checkpoint
        self.ticks_since_checkpoint = 0
        self.checkpoints: CheckpointStore | None = None
        if settings.state.dir is not None:
            k = settings.kafka
            self.checkpoints = CheckpointStore(settings.state.dir, f"{k.group_id}-{k.instance_id}")
            restored = self.checkpoints.load(fingerprint(settings))
            if restored is not None:
                self.pipeline = restored.pipeline
                self.seen = dict(restored.offsets)
                self.replay_ticks = [
                    ends
                    for ends in self.checkpoints.ticks()
                    if any(o > self.seen.get(key, -1) for key, o in ends.items())
                ]
                log.info(
                    "restored detector state from %s (%d partitions)",
                    self.checkpoints.path,
                    len(self.seen),
                )

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
                self.sink = KafkaSink(
                    k, consumer, self._new_producer, self._commit_error, self.stopping.is_set
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

    def _new_producer(self) -> KafkaProducer:
        k = self.settings.kafka
        # Stable across restarts, so a restarted member fences its own zombie and aborts
        # its open transaction instead of leaving readers waiting for it to time out.
        txn_id = f"{k.transactional_id_prefix}-{k.group_id}-{k.instance_id}"
        return make_producer(k, txn_id if k.guarantee == "exactly_once" else None)

    def _tick(self) -> None:
        self.liveness.beat()
        if self.consumer is None or self.sink is None:
            return
        try:
            records = self._gather()
        except KafkaError as exc:
            self.liveness.set_ready(False, f"poll failed: {exc!r}")
            log.warning("poll failed: %r", exc)
            self.stopping.wait(1.0)
            return
        records = self._replay(records)
        if not records:
            self._update_readiness()
            return
        started = time.perf_counter()
        result = self.pipeline.process(records)
        self.metrics.observe_tick(result, time.perf_counter() - started)
        committed = time.perf_counter()
        try:
            self.sink.commit(result, records)
        except CommitAbandoned as exc:
            if self.stopping.is_set():
                log.warning("stopping with this tick uncommitted; it will be processed again")
                return
            log.error("giving up on this tick's commit (%s); rewinding to committed offsets", exc)
            self._rewind({(r.topic, r.partition) for r in records})
            return
        self.metrics.commit_latency.observe(time.perf_counter() - committed)
        self._advance(records, live=True)
        self.on_tick(result)
        self.liveness.set_ready(True)
        self.metrics.ready.set(1)
        self._observe_lag()

    def _gather(self) -> list[SourceRecord]:
        """One tick of records: what one poll returns, or, with ``tick_linger_ms``, polls
        until ``max_poll_records`` are gathered or the linger time is up (fixed-size ticks
        make a replay through Kafka score exactly like the in-process replay)."""
        assert self.consumer is not None
        k = self.settings.kafka
        records: list[SourceRecord] = []
        deadline = time.monotonic() + k.tick_linger_ms / 1000.0
        while True:
            want = k.max_poll_records - len(records)
            polled = self.consumer.poll(timeout_ms=k.poll_timeout_ms, max_records=want)
            if polled and not records:  # linger counts from the tick's first record
                deadline = time.monotonic() + k.tick_linger_ms / 1000.0
            records.extend(self._align_assigned(to_source_records(polled)))
            if len(records) >= k.max_poll_records or time.monotonic() >= deadline:
                return records
            if self.stopping.is_set():
                # A partial fixed-size tick is left uncommitted and re-read after a restart,
                # so tick boundaries (and with them the verdicts) stay the same.
                return records if k.tick_linger_ms == 0 else []

    def _replay(self, records: list[SourceRecord]) -> list[SourceRecord]:
        """While a restored state lags the committed offsets, feed the gap to the pipeline
        without publishing, cut into the first run's ticks; return the records to publish."""
        if not self.replay_until:
            return records
        self.replay_buffer.extend(records)
        self._replay_ticks()
        if self.replay_until:
            return []
        # Caught up: records read past the gap go back, to be read again as whole ticks.
        assert self.consumer is not None
        first: Offsets = {}
        for r in self.replay_buffer:
            first.setdefault((r.topic, r.partition), r.offset)
        for (topic, partition), offset in first.items():
            self.consumer.seek(TopicPartition(topic, partition), offset)
        self.replay_buffer = []
        return []

    def _replay_ticks(self) -> None:
        """Replay every whole tick of the gap the buffer holds."""
        while self.replay_until:
            final = not self.replay_ticks
            ends = self.replay_until if final else self.replay_ticks[0]
            ends = {
                k: min(o, self.replay_until[k]) for k, o in ends.items() if k in self.replay_until
            }
            if not all(self._read_up_to(k, o) for k, o in ends.items()):
                return

            tick: list[SourceRecord] = []
            rest: list[SourceRecord] = []
            for r in self.replay_buffer:
                (tick if r.offset < ends.get((r.topic, r.partition), -1) else rest).append(r)
            self.replay_buffer = rest
            if tick:
                self.pipeline.process(tick)
                self._advance(tick, live=False)
                log.info("replayed %d already-committed records to catch state up", len(tick))
            if final:
                self.replay_until.clear()
            else:
                self.replay_ticks.pop(0)

    def _read_up_to(self, key: tuple[str, int], end: int) -> bool:
        """Whether everything before ``end`` was read (the position also moves past
        transaction markers, which no record follows)."""
        assert self.consumer is not None
        if any(r.offset >= end - 1 for r in self.replay_buffer if (r.topic, r.partition) == key):
            return True
        return self.consumer.position(TopicPartition(*key)) >= end

    def _advance(self, records: list[SourceRecord], live: bool) -> None:
        for r in records:
            self.seen[(r.topic, r.partition)] = r.offset + 1
        if not live:
            return  # no checkpoint mid-replay: it would drop the tick log the replay follows
        if self.checkpoints is not None:
            self.checkpoints.log_tick({(r.topic, r.partition): r.offset + 1 for r in records})
        self.ticks_since_checkpoint += 1
        if self.ticks_since_checkpoint >= self.settings.state.every_ticks:
            self._checkpoint()

    def _checkpoint(self) -> None:
        if self.checkpoints is None or not self.seen or self.replay_until:
            return  # mid-replay, the older checkpoint and its tick log are still what counts
        self.checkpoints.save(
            Checkpoint(fingerprint(self.settings), dict(self.seen), self.pipeline)
        )
        self.ticks_since_checkpoint = 0

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

    def _rewind(self, partitions: set[tuple[str, int]]) -> None:
        assert self.consumer is not None
        for topic, partition in partitions:
            tp = TopicPartition(topic, partition)
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
        if what == "revoked":
            self.metrics.lag.clear()  # lag of partitions we no longer own is not ours to report
            self._checkpoint()
            gone = {(tp.topic, tp.partition) for tp in partitions}
            self.replay_buffer = [
                r for r in self.replay_buffer if (r.topic, r.partition) not in gone
            ]
            for key in gone & self.replay_until.keys():
                del self.replay_until[key]
            return
        # kafka-python runs this hook on its IO thread, where blocking calls such as
        # committed() are refused; the main loop does the work after the poll returns.
        self.newly_assigned.extend(partitions)

    def _align_assigned(self, polled: list[SourceRecord]) -> list[SourceRecord]:
        """For partitions just assigned whose checkpoint is older than the committed
        offset, seek back to the checkpoint (the gap is replayed silently) and drop what
        the poll already returned from the committed offset on."""
        if not self.newly_assigned:
            return polled
        assert self.consumer is not None
        rewound: set[tuple[str, int]] = set()
        for tp in self.newly_assigned:
            key = (tp.topic, tp.partition)
            if key not in self.seen:
                continue
            committed = self.consumer.committed(tp) or 0
            if self.seen[key] < committed:
                self.consumer.seek(tp, self.seen[key])
                self.replay_until[key] = committed
                rewound.add(key)
            elif self.seen[key] > committed:
                log.warning("checkpoint of %s is ahead of the committed offset; using it", tp)
        self.newly_assigned = []
        return [r for r in polled if (r.topic, r.partition) not in rewound]

    def _close(self) -> None:
        self._checkpoint()
        if self.sink is not None:
            try:
                self.sink.close()
            except Exception:  # noqa: BLE001
                log.warning("producer did not close cleanly", exc_info=True)
        if self.consumer is not None:
            self.consumer.close(autocommit=False, timeout_ms=5_000)
        self.liveness.set_ready(False, "stopped")
