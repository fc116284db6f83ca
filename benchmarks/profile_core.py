"""Profile the detector core on the benchmark stream and print its hot spots.

    python benchmarks/profile_core.py [--kind rating|review] [--events 100000] [--top 30]
    python benchmarks/profile_core.py --stages [--kind rating|review] [--tick 500]

The same stream and tick size as section 1 of BENCHMARKS.md. By default under cProfile,
sorted by time spent inside each function. ``--stages`` instead times each stage of a
tick (parsing, features, each detector's scoring and learning, the policy, the release
log) with the wall clock and no profiler: cProfile inflates code made of many small
Python calls, and it hides the garbage collector, whose pauses land on whichever stage
allocated last. benchmarks/profile.md records what it found.

Detectors in the second process (``pipeline.second_process_detectors``) show as "send"
(their columns, right after parsing), "score" (waiting for and reading their answers) and
"learn" (sending ``keep``); cProfile sees only this process. To profile them inline, run
with ``STREAMGUARD_PIPELINE__SECOND_PROCESS_DETECTORS='[]'``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from run_all import TICK, core_eps, run_ticks, stream

import streamguard.pipeline as pipeline_module
from streamguard.assembly import build_pipeline
from streamguard.config import load_settings
from streamguard.detectors.offload import OffloadedDetector

SCENARIO = {"rating": "shilling_random", "review": "review_spam"}


def timed(spent: Counter[str], label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - started

    return run


def stages(lines: list[bytes], tick: int) -> None:
    """Wall-clock seconds per stage over one pass of the stream."""
    spent: Counter[str] = Counter()
    pipeline = build_pipeline(load_settings())
    parse = pipeline_module.parse_events
    pipeline_module.parse_events = timed(spent, "parse", parse)
    hooks = [
        (pipeline.features, "extract", "features extract"),
        (pipeline.features, "learn", "features learn"),
        (pipeline.policy, "decide", "policy decide"),
        (pipeline.policy, "learn", "policy learn"),
        (pipeline, "_outcomes", "outcomes"),
        (pipeline, "_revoke", "revocations"),
        (pipeline, "_record_releases", "release log"),
    ]
    for d in pipeline.detectors:
        hooks += [(d, "score_batch", f"{d.name} score"), (d, "learn_batch", f"{d.name} learn")]
        if isinstance(d, OffloadedDetector):  # its score: waiting for the second process
            hooks.append((d, "begin_score", f"{d.name} send"))
    pipeline.start()
    for obj, name, label in hooks:
        setattr(obj, name, timed(spent, label, getattr(obj, name)))
    try:
        total = run_ticks(pipeline, lines, tick)
    finally:
        pipeline_module.parse_events = parse
    print(f"{len(lines)} events, {len(lines) / total:,.0f} events/s, {total:.2f} s")
    spent["(rest of the tick)"] = total - sum(spent.values())
    for label, seconds in spent.most_common():
        share = 100 * seconds / total
        print(f"{label:32s} {seconds:7.3f} s {share:5.1f}% {1e6 * seconds / len(lines):6.2f} us/ev")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=sorted(SCENARIO), default="rating")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--tick", type=int, default=TICK, help="records per tick")
    parser.add_argument("--stages", action="store_true", help="wall clock per stage, no cProfile")
    args = parser.parse_args()
    settings = load_settings()
    lines = stream(SCENARIO[args.kind], args.events, args.kind)
    if args.stages:
        stages(lines, args.tick)
        return
    eps = core_eps(settings, lines, args.tick)
    print(f"{len(lines)} {args.kind} events, {eps:,.0f} events/s unprofiled")
    profiler = cProfile.Profile()
    profiler.runcall(core_eps, settings, lines, args.tick)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
