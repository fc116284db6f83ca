"""A tick's outputs on their way out: submitted once scored, settled (published and
committed) while the service polls and scores the next tick.

Why a second process: kafka-python's producer is pure Python. Appending records, the
partitioner's murmur2 over every key and the transaction bookkeeping took about a third of
the service's time per event (py-spy, issue 10), all under the GIL the detectors need.
In a child process that work runs on the other core, so with exactly-once the service
scores tick N+1 while the child commits tick N's transaction; that is what brings end to
end throughput close to half of a raw kafka-python pass-through (BENCHMARKS.md).

What keeps it exactly-once: tick N+1 is *polled* before N is settled, but a rebalance can
only happen inside that poll, and the revoke hook settles N before anything moves (or,
when N cannot be committed, drops the partitions' state so the next owner restores it
from a checkpoint). A checkpoint is only written between ticks, never with a later tick
already learned. With at-least-once the offsets are committed by the consumer, which the
rebalance hook may not call, so there each tick is settled before the next poll.

``kafka.publisher = "inline"`` keeps the producer in the service's own process, the way
it was before, for platforms where a child process is unwelcome.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import ConsumerGroupMetadata, OffsetAndMetadata

from streamguard import logs
from streamguard.config import KafkaSettings
from streamguard.kafka import (
    CommitAbandoned,
    Message,
    Publisher,
    make_producer,
    next_offsets,
    output_messages,
    retry_until_deadline,
)
from streamguard.pipeline import SourceRecord, TickResult

log = logging.getLogger(__name__)

Offsets = dict[TopicPartition, OffsetAndMetadata]


class Runner(Protocol):
    """Where a :class:`Publisher` runs: ``submit`` hands a tick over, ``wait`` returns the
    wall-clock time it was published and committed (or raises CommitAbandoned)."""

    def submit(
        self, messages: list[Message], offsets: Offsets, group: ConsumerGroupMetadata | None
    ) -> None: ...

    def wait(
        self, on_error: Callable[[Exception], None], stopping: Callable[[], bool]
    ) -> float: ...

    def alive(self) -> bool: ...

    def close(self) -> None: ...


class InlineRunner:
    """The publisher in this process: ``submit`` only remembers, ``wait`` does the work."""

    def __init__(self, settings: KafkaSettings, transactional_id: str | None) -> None:
        self.publisher = Publisher(settings, lambda: make_producer(settings, transactional_id))
        self.job: tuple[list[Message], Offsets, ConsumerGroupMetadata | None] | None = None

    def submit(
        self, messages: list[Message], offsets: Offsets, group: ConsumerGroupMetadata | None
    ) -> None:
        self.job = (messages, offsets, group)

    def wait(self, on_error: Callable[[Exception], None], stopping: Callable[[], bool]) -> float:
        job, self.job = self.job, None
        if job is not None:
            self.publisher.on_error, self.publisher.stopping = on_error, stopping
            self.publisher.publish(*job)
        return time.time()

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        self.publisher.close()


class ProcessRunner:
    """The publisher in a child process, fed one tick at a time over a pipe.

    The child is spawned (not forked: this process runs Kafka I/O threads), ignores the
    signals meant for the service and exits when its pipe closes, so a killed service
    takes it along; an abandoned transaction is fenced by the next producer of the same
    transactional id."""

    def __init__(
        self,
        settings: KafkaSettings,
        transactional_id: str | None,
        log_level: str = "INFO",
        log_format: str = "json",
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        # Set when the pipe fails: a killed child closes it before it can be reaped, and
        # a publisher found alive then would not be replaced (its open transaction would
        # hold the group's committed offsets unstable until it timed out).
        self.broken = False
        self.conn, child_end = ctx.Pipe()
        self.stop = ctx.Event()
        self.process = ctx.Process(
            target=_serve,
            args=(child_end, settings, transactional_id, self.stop, log_level, log_format),
            name="streamguard-publisher",
            daemon=True,
        )
        self.process.start()
        child_end.close()
        try:  # the producer's init_transactions waits for the broker
            kind, text = self._receive(timeout=settings.request_timeout_ms / 1000.0 + 30.0)
        except CommitAbandoned as exc:
            kind, text = "failed", str(exc)
        if kind != "ready":
            self.close()
            raise KafkaError(f"publisher process could not start: {text or 'timed out'}")

    def submit(
        self, messages: list[Message], offsets: Offsets, group: ConsumerGroupMetadata | None
    ) -> None:
        try:
            self.conn.send((messages, offsets, group))
        except OSError as exc:  # died since it was last seen alive: the tick is read again
            self.broken = True
            raise KafkaError(f"publisher process gone: {exc!r}") from exc

    def wait(self, on_error: Callable[[Exception], None], stopping: Callable[[], bool]) -> float:
        while True:
            if stopping():
                self.stop.set()  # only cuts a retry short; a healthy commit still completes
            kind, text = self._receive(timeout=1.0)
            if kind == "done":
                return float(text)  # when the child committed, not when we looked
            if kind == "abandoned":
                raise CommitAbandoned(text)
            if kind == "error":
                on_error(KafkaError(text))
            # "waiting": nothing yet; the loop lets the caller's stop be seen

    def _receive(self, timeout: float) -> tuple[str, str]:
        if not self.conn.poll(timeout):
            if not self.process.is_alive():
                raise CommitAbandoned(f"publisher process died (exit {self.process.exitcode})")
            return ("waiting", "")
        try:
            reply: tuple[str, str] = self.conn.recv()
        except (EOFError, OSError) as exc:  # a killed child may reset the pipe instead
            self.broken = True
            raise CommitAbandoned(f"publisher process closed its pipe ({exc!r})") from exc
        return reply

    def alive(self) -> bool:
        return not self.broken and self.process.is_alive()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # the child may be gone already
            self.conn.send(None)
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.conn.close()


def _serve(
    conn: Connection,
    settings: KafkaSettings,
    transactional_id: str | None,
    stop: Any,
    log_level: str,
    log_format: str,
) -> None:
    """The child: publish each tick it is sent, report "done", "abandoned" or "error"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.configure(log_level, log_format)
    try:
        publisher = Publisher(
            settings,
            lambda: make_producer(settings, transactional_id),
            on_error=lambda exc: conn.send(("error", repr(exc))),
            stopping=stop.is_set,
        )
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which retries
        conn.send(("failed", repr(exc)))
        return
    conn.send(("ready", ""))
    try:
        while True:
            try:
                job = conn.recv()
            except EOFError:
                break  # the service is gone
            if job is None:
                break
            try:
                publisher.publish(*job)
                conn.send(("done", repr(time.time())))
            except CommitAbandoned as exc:
                conn.send(("abandoned", str(exc)))
    except (BrokenPipeError, OSError):
        pass  # the service died mid-commit
    finally:
        publisher.close()


class Outbox:
    """The service's side: one tick in flight at most, submitted, then settled."""

    def __init__(
        self,
        settings: KafkaSettings,
        consumer: KafkaConsumer,
        new_runner: Callable[[], Runner],
        on_error: Callable[[Exception], None] = lambda exc: None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.new_runner = new_runner
        self.runner = new_runner()
        self.on_error = on_error
        self.stopping = stopping
        self.transactional = settings.guarantee == "exactly_once"
        self.offsets: Offsets | None = None  # of the tick in flight
        self.committed_at = 0.0  # wall-clock time the last settled tick was committed

    @property
    def pipelined(self) -> bool:
        """Whether the next tick may be polled and scored before this one settles."""
        return self.transactional and isinstance(self.runner, ProcessRunner)

    def submit(self, result: TickResult, records: Sequence[SourceRecord]) -> None:
        """Hand a tick over. A publisher process that died is replaced first (which
        raises KafkaError while the brokers cannot be reached)."""
        assert self.offsets is None, "a tick is already in flight"
        self.replace_dead_publisher()
        self.offsets = next_offsets(records)
        group = self.consumer.group_metadata() if self.transactional else None
        self.runner.submit(output_messages(result, self.settings), self.offsets, group)

    def replace_dead_publisher(self) -> None:
        """Start a new publisher process if the last one died (raises KafkaError while the
        brokers cannot be reached). Its producer takes over the transactional id, which
        aborts the transaction the dead one left open: until then the broker answers
        reads of the group's committed offsets with UNSTABLE_OFFSET_COMMIT, and
        kafka-python retries those until the transaction times out."""
        if not self.runner.alive():
            log.warning("the publisher process is gone; starting a new one")
            self.runner.close()
            self.runner = self.new_runner()

    def settle(self) -> float:
        """Wait for the tick in flight to be published and its offsets committed, and
        return the wall-clock time that happened; raises CommitAbandoned when that could
        not be done in time."""
        offsets, self.offsets = self.offsets, None
        if offsets is None:
            return self.committed_at
        self.committed_at = self.runner.wait(self.on_error, self.stopping)
        if not self.transactional and offsets:
            retry_until_deadline(
                lambda: self.consumer.commit(offsets), self.settings, self.on_error, self.stopping
            )
            self.committed_at = time.time()
        return self.committed_at

    def close(self) -> None:
        self.runner.close()


def make_runner(
    settings: KafkaSettings, log_level: str = "INFO", log_format: str = "json"
) -> Runner:
    # Stable across restarts, so a restarted member fences its own zombie and aborts
    # its open transaction instead of leaving readers waiting for it to time out.
    txn_id = None
    if settings.guarantee == "exactly_once":
        txn_id = f"{settings.transactional_id_prefix}-{settings.group_id}-{settings.instance_id}"
    if settings.publisher == "inline":
        return InlineRunner(settings, txn_id)
    return ProcessRunner(settings, txn_id, log_level, log_format)
