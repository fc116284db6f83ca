"""Detectors in a second process: the same verdicts as inline, checkpoints, failures."""

from __future__ import annotations

import os
import pickle
import signal

import numpy as np
import orjson
import pytest
from factories import benign_stream, records

from streamguard.assembly import build_pipeline
from streamguard.config import load_settings
from streamguard.detectors.base import Batch, DetectorLost, Scores
from streamguard.detectors.offload import DetectorProcess, OffloadedDetector
from streamguard.events import Action
from streamguard.pipeline import Pipeline, SourceRecord
from streamguard.policy import Policy, PolicyConfig
from streamguard.simulate import simulate

SLOW_PUSH = {"detectors": {"slow_push": {"enabled": True}}}  # opt-in; in the child when on
INLINE = {**SLOW_PUSH, "pipeline": {"second_process_detectors": []}}


def _ticks(scenario: str, n: int, seed: int, base: str = "synthetic") -> list[list[SourceRecord]]:
    lines = [orjson.dumps(e) for e in simulate(scenario, n, seed, base=base).events]
    recs = [SourceRecord(v, "t", 0, i) for i, v in enumerate(lines)]
    return [recs[s : s + 500] for s in range(0, len(recs), 500)]


def _run(pipeline: Pipeline, ticks: list[list[SourceRecord]]) -> list[tuple[object, ...]]:
    """Every outcome and revocation, as comparable values."""
    seen: list[tuple[object, ...]] = []
    for tick in ticks:
        result = pipeline.process(tick)
        for o in result.outcomes:
            reasons = tuple((r.detector, r.detail) for r in o.verdict.reasons) if o.verdict else ()
            seen.append((o.record.offset, o.action, reasons))
        seen += [(r.event_id, r.verdict.reasons[0].detail) for r in result.revocations]
        seen += [(name, col.tobytes()) for name, col in sorted(result.scores.items())]
    return seen


@pytest.mark.parametrize(
    ("scenario", "seed", "base"),
    [
        ("shilling_bandwagon", 3, "synthetic"),
        ("shilling_spread", 1, "movielens"),
        ("mixed", 2, "synthetic"),  # templated reviews and label flips too
    ],
)
def test_second_process_gives_the_verdicts_of_inline(scenario, seed, base):
    """Campaigns, slow pushes and their revocations, byte for byte: the child runs the
    same detectors over the columns it is sent."""
    ticks = _ticks(scenario, 12_000, seed, base)
    offloaded = build_pipeline(load_settings(overrides=SLOW_PUSH))
    names = {d.name for d in offloaded.detectors if isinstance(d, OffloadedDetector)}
    assert names == {"campaign", "slow_push", "near_duplicate", "label_flip"}
    inline = build_pipeline(load_settings(overrides=INLINE))
    assert not any(isinstance(d, OffloadedDetector) for d in inline.detectors)
    got, want = _run(offloaded, ticks), _run(inline, ticks)
    assert got == want
    found = {r[0] for o in got if len(o) == 3 for r in o[2]}  # type: ignore[union-attr]
    assert found & names  # the stream's attack was found there
    offloaded.close()


def test_a_checkpoint_carries_the_child_state_over():
    """Pickled between ticks (as a checkpoint is), a pipeline goes on in a new child exactly
    as the one that never stopped."""
    ticks = _ticks("shilling_random", 6_000, 4)
    settings = load_settings(overrides=SLOW_PUSH)
    kept, restored = build_pipeline(settings), build_pipeline(settings)
    _run(kept, ticks[:6])
    _run(restored, ticks[:6])
    restored = pickle.loads(pickle.dumps(restored))
    assert _run(restored, ticks[6:]) == _run(kept, ticks[6:])
    (process,) = {d.process for d in restored.detectors if isinstance(d, OffloadedDetector)}
    assert [d.name for d in process.detectors()] == [
        "near_duplicate",
        "label_flip",
        "slow_push",
        "campaign",
    ]
    kept.close()
    restored.close()


class Fragile:
    """A decisive test detector that raises on the events of one account."""

    name = "fragile"
    EVENT_FIELDS = ("account_id",)

    def __init__(self) -> None:
        self.learnt = 0

    def score_batch(self, batch: Batch) -> Scores:
        if "a13" in [e.account_id for e in batch.events]:
            raise ValueError("poison")
        return Scores(np.zeros(len(batch)), [None] * len(batch))

    def learn_batch(self, batch: Batch, keep: np.ndarray) -> None:
        self.learnt += int(keep.sum())

    def stats(self) -> dict[str, float]:
        return {"learnt": float(self.learnt)}


def _fragile_pipeline() -> Pipeline:
    process = DetectorProcess([Fragile()])
    return Pipeline(process.proxies(), Policy([], ["fragile"], PolicyConfig()))


def test_an_error_in_the_child_isolates_the_poison_record():
    pipeline = _fragile_pipeline()
    values = benign_stream(200, accounts=40)
    result = pipeline.process(records(values))
    poisoned = [o for o in result.outcomes if orjson.loads(o.record.value)["account_id"] == "a13"]
    assert poisoned and all(o.action == Action.DLQ for o in poisoned)
    assert all(o.action == Action.CLEAN for o in result.outcomes if o not in poisoned)
    pipeline.process(records(benign_stream(10, seed=1, accounts=5), start=200))
    (fragile,) = pipeline.detectors
    assert fragile.stats() == {"learnt": float(200 - len(poisoned))}
    pipeline.close()


def test_a_dead_child_stops_the_pipeline():
    """Its state is gone: the pipeline raises rather than score on without it."""
    pipeline = _fragile_pipeline()
    pipeline.process(records(benign_stream(10, accounts=5)))
    (process,) = {d.process for d in pipeline.detectors}
    os.kill(process.pid(), signal.SIGKILL)
    with pytest.raises(DetectorLost, match="fragile"):
        pipeline.process(records(benign_stream(10, seed=1, accounts=5), start=10))


def test_close_stops_the_child_and_keeps_its_state():
    pipeline = _fragile_pipeline()
    pipeline.process(records(benign_stream(50, accounts=5)))
    (process,) = {d.process for d in pipeline.detectors}
    pid = process.pid()
    pipeline.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    pipeline.process(records(benign_stream(20, seed=1, accounts=5), start=50))
    assert process.pid() != pid
    assert process.detectors()[0].learnt == 70
    pipeline.close()


def test_an_unknown_detector_name_is_refused():
    with pytest.raises(ValueError, match="second_process_detectors"):
        load_settings(overrides={"pipeline": {"second_process_detectors": ["drift"]}})
