"""Detectors run in a second process, scoring while the service's process scores the rest.

Why. The detector core is one Python process, and the GIL keeps its detectors on one core
while the machine's other core waits. The detectors named in
``pipeline.second_process_detectors`` (by default the campaign detector, about 6.5 us an
event, the two text detectors, and the slow-push detector when it is on) need nothing
from the others within a tick, so they run in one child process
(:class:`DetectorProcess`): :class:`~streamguard.pipeline.Pipeline` sends the child each
tick before it scores the other detectors, and reads the child's answers after. Learning
overlaps too: the tick's ``keep`` is sent as soon as the policy has decided, and the child
learns while this process writes the outcomes and parses the next tick. What this process
pays is sending the columns and ``keep`` and reading the answers: about 1.9 us a rating
event and 3.6 us a review (``profile_core.py --stages``, benchmarks/profile.md).

Exactness. The child runs the same detectors over the same columns in the same order, so
scores, details, flags and verdicts are the ones they give inline (a test runs both over
the same stream). Only the columns they read cross the pipe: the batch's ``ts``,
``rating`` and ``kind``, and the event attributes each detector class names in
``EVENT_FIELDS`` (an attribute it does not name fails loudly in the child).

Failures. A detector's error in the child comes back as that detector's exception for
the call, so the pipeline isolates the poison record as for any detector; an error while
learning is logged here with the next answer. A child that dies takes the detectors' state
with it, so :class:`~streamguard.detectors.base.DetectorLost` is raised and the pipeline
lets it through: the service stops and a restart resumes from its last checkpoint, as
after any crash, instead of scoring on without them.

Checkpoints. Pickling asks the child for its detectors (between ticks); unpickling keeps
them until the first use starts a new child. The child is forked from a fork server
(started clean, so it holds none of the service's Kafka threads), ignores the signals
meant for the service and exits when its pipe closes, so a killed service takes it along.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import signal
import traceback
import weakref
from collections import namedtuple
from collections.abc import Sequence
from itertools import repeat
from multiprocessing.connection import Connection
from operator import attrgetter
from typing import Any

import numpy as np

from streamguard.detectors.base import Batch, Detector, DetectorLost, Scores
from streamguard.gc_tuning import tune_collector

log = logging.getLogger(__name__)

_PROCESS_ATTRS = ("_conn", "_process", "_held", "_awaiting", "_answers", "_learnt", "_finalizer")


class DetectorProcess:
    """A child process holding ``detectors``; :meth:`proxies` are what the pipeline sees.

    ``gc_threshold`` is the child's garbage-collector setting (:mod:`streamguard.gc_tuning`).
    """

    def __init__(self, detectors: Sequence[Detector], gc_threshold: int = 0) -> None:
        self.names = [d.name for d in detectors]
        fields: dict[str, None] = {}
        for d in detectors:
            fields.update(dict.fromkeys(type(d).EVENT_FIELDS))  # type: ignore[attr-defined]
        self.event_fields = tuple(fields)
        self.gc_threshold = gc_threshold
        self._modules = sorted({type(d).__module__ for d in detectors})
        self._state = pickle.dumps(list(detectors), pickle.HIGHEST_PROTOCOL)
        self._stats: list[dict[str, float]] = [{} for _ in detectors]
        self._reset()

    def _reset(self) -> None:
        self._conn: Connection | None = None
        self._process: Any = None
        self._held: Batch | None = None  # the batch whose columns the child holds
        self._awaiting: Batch | None = None  # sent to be scored, answers not yet read
        self._answers: list[Any] | None = None  # the answers read, one per detector
        self._learnt: Batch | None = None  # the batch last sent to be learnt

    def proxies(self) -> list[OffloadedDetector]:
        return [OffloadedDetector(self, i) for i in range(len(self.names))]

    # ------------------------------------------------------------------ per tick

    def begin(self, batch: Batch, only: int | None = None) -> None:
        """Send ``batch`` to be scored (by every detector, or by detector ``only``)."""
        if self._awaiting is batch:
            return
        self._send(("score", self._columns(batch), only))
        self._held = self._awaiting = batch
        self._answers = None

    def scores(self, batch: Batch, index: int) -> Scores:
        if self._awaiting is not batch:
            self.begin(batch, only=index)
        if self._answers is None:
            self._answers = self._receive_value()
        answer = self._answers[index]
        if answer[0] == "error":
            raise RuntimeError(f"{self.names[index]} failed in its process:\n{answer[1]}")
        _, scored, sparse, flags, warming, self._stats[index] = answer
        n = len(batch)
        out = Scores(np.zeros(n), [None] * n, [None] * n, list(flags), warming=warming)
        if scored:
            at, values = zip(*scored, strict=True)
            out.scores[list(at)] = values
        for i, detail, campaign_id in sparse:
            out.details[i] = detail
            out.campaign_ids[i] = campaign_id  # type: ignore[index]
        return out

    def learn(self, batch: Batch, keep: np.ndarray) -> None:
        """Send ``keep`` now, so the child learns while this process finishes the tick and
        parses the next. Every detector learns a tick from the same ``keep``, so the
        first call of a tick is the one sent."""
        if self._learnt is batch:
            return
        self._send(("learn", keep, None if batch is self._held else self._columns(batch)))
        self._held = self._learnt = batch
        self._awaiting = None

    # ------------------------------------------------------------------ between ticks

    def start(self) -> None:
        """Start the child now and wait until it answers, so that the first tick does not
        wait for it (it imports the service's modules: a fraction of a second)."""
        self._send(("ping",))
        self._receive_value()

    def close(self) -> None:
        """Stop the child; the next use starts a new one from the state it had."""
        if self._conn is not None:
            self._state = self._pickled()
            self._finalizer()
            self._reset()

    def detectors(self) -> list[Any]:
        """A copy of the detectors as the child holds them now."""
        state = self._state if self._conn is None else self._pickled()
        copies: list[Any] = pickle.loads(state)  # noqa: S301 - our own bytes
        return copies

    def pid(self) -> int | None:
        """The child's process id, None while none runs."""
        return self._process.pid if self._process is not None else None

    def stats(self, index: int) -> dict[str, float]:
        """Detector ``index``'s stats as of its last answer: metrics read them from
        another thread, which must not talk on the pipe."""
        return dict(self._stats[index])

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in _PROCESS_ATTRS}
        if self._conn is not None:
            state["_state"] = self._pickled()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # ------------------------------------------------------------------ the pipe

    def _pickled(self) -> bytes:
        self._send(("pickled",))
        state: bytes = self._receive_value()
        return state

    def _columns(self, batch: Batch) -> tuple[Any, ...]:
        events = batch.events
        fields = [list(map(attrgetter(name), events)) for name in self.event_fields]
        return batch.ts, batch.rating, batch.kind, fields

    def _send(self, request: tuple[Any, ...]) -> None:
        conn = self._conn or self._start()
        if self._awaiting is not None and self._answers is None:
            self._answers = self._receive_value()  # answers to a tick left unread
        try:
            conn.send(request)
        except (OSError, ValueError) as exc:
            raise DetectorLost(f"the process of {', '.join(self.names)} is gone: {exc!r}") from exc

    def _receive_value(self) -> Any:
        """The child's answer. A child that dies closes its end of the pipe, so this
        raises rather than waits (no polling: a poll cost more than the answer)."""
        assert self._conn is not None
        try:
            kind, value, learn_error = self._conn.recv()
        except (EOFError, OSError) as exc:
            code = self._process.exitcode if self._process is not None else None
            names = ", ".join(self.names)
            raise DetectorLost(f"the process of {names} died (exit {code}): {exc!r}") from exc
        if learn_error:
            log.error("a detector failed to learn in its process; skipped a tick for it:\n%s",
                      learn_error)  # fmt: skip
        if kind == "error":
            raise RuntimeError(f"the process of {', '.join(self.names)} failed:\n{value}")
        return value

    def _start(self) -> Connection:
        ctx = _context([__name__, *self._modules])
        conn, child_end = ctx.Pipe()
        process = ctx.Process(
            target=_serve,
            args=(child_end, self._state, self.event_fields, self.gc_threshold),
            name=f"streamguard-{'-'.join(self.names)}",
            daemon=True,
        )
        process.start()
        child_end.close()
        self._conn, self._process = conn, process
        self._finalizer = weakref.finalize(self, _stop, conn, process)
        return conn


class OffloadedDetector:
    """Detector ``index`` of a :class:`DetectorProcess`, as the pipeline sees it."""

    def __init__(self, process: DetectorProcess, index: int) -> None:
        self.process = process
        self.index = index
        self.name = process.names[index]

    def begin_score(self, batch: Batch) -> None:
        self.process.begin(batch)

    def score_batch(self, batch: Batch) -> Scores:
        return self.process.scores(batch, self.index)

    def learn_batch(self, batch: Batch, keep: np.ndarray) -> None:
        self.process.learn(batch, keep)

    def stats(self) -> dict[str, float]:
        return self.process.stats(self.index)


def _context(preload: list[str]) -> Any:
    """A fork server's context where there is one (it forks children from a clean process
    with ``preload`` imported), else spawn's."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(preload)
    return ctx


def _stop(conn: Connection, process: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        conn.send(None)
    conn.close()
    process.join(10)
    if process.is_alive():
        process.terminate()
        process.join(5)


def _serve(
    conn: Connection, state: bytes, event_fields: tuple[str, ...], gc_threshold: int
) -> None:
    """The child: learn each tick it is sent, answer each request, until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    tune_collector(gc_threshold)
    detectors = pickle.loads(state)  # noqa: S301 - sent by our own parent
    event_type: Any = namedtuple("Event", event_fields)  # type: ignore[misc]  # noqa: PYI024
    event = event_type._make
    batch: Batch | None = None
    learn_error = ""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        if message[0] == "learn":
            _, keep, columns = message
            if columns is not None:
                batch = _batch(columns, event)
            for detector in detectors:
                try:
                    detector.learn_batch(batch, keep)
                except Exception:  # noqa: BLE001 - reported with the next answer
                    learn_error += traceback.format_exc()
            continue
        try:
            if message[0] == "score":
                batch = _batch(message[1], event)
                only = message[2]
                chosen = detectors if only is None else [detectors[only]]
                value: Any = [_answer(d, batch) for d in chosen]
                if only is not None:
                    value = [None] * only + value
            elif message[0] == "pickled":
                value = pickle.dumps(detectors, pickle.HIGHEST_PROTOCOL)
            else:  # "ping"
                value = None
            conn.send(("value", value, learn_error))
        except Exception:  # noqa: BLE001 - the parent raises it for this call
            conn.send(("error", traceback.format_exc(), learn_error))
        learn_error = ""


def _batch(columns: tuple[Any, ...], event: Any) -> Batch:
    ts, rating, kind, fields = columns
    return Batch(list(map(event, zip(*fields, strict=True))), ts, rating, kind)


def _answer(detector: Detector, batch: Batch) -> tuple[Any, ...]:
    """A detector's scores as they cross the pipe, only where there are any: most ticks
    have none. An ``explain`` is asked here, for every event with a score (the only ones
    the policy could hold)."""
    try:
        out = detector.score_batch(batch)
    except Exception:  # noqa: BLE001 - this detector's exception, in the parent
        return ("error", traceback.format_exc())
    at = np.flatnonzero(out.scores).tolist()
    scored = list(zip(at, out.scores[at].tolist(), strict=True))
    if out.explain is not None:
        for i in at:
            out.details[i] = out.detail(i)
    ids = out.campaign_ids or repeat(None)
    sparse = [(i, d, c) for i, (d, c) in enumerate(zip(out.details, ids, strict=False)) if d or c]
    stats = getattr(detector, "stats", None)
    return ("ok", scored, sparse, out.flagged_accounts, out.warming,
            dict(stats()) if callable(stats) else {})  # fmt: skip
