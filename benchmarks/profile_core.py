"""Profile the detector core on the benchmark stream and print its hot spots.

    python benchmarks/profile_core.py [--kind rating|review] [--events 100000] [--top 30]

The same stream and tick size as section 1 of BENCHMARKS.md, under cProfile, sorted by
time spent inside each function. benchmarks/profile.md records what it found.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

from run_all import core_eps, stream

from streamguard.config import load_settings

SCENARIO = {"rating": "shilling_random", "review": "review_spam"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=sorted(SCENARIO), default="rating")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    settings = load_settings()
    lines = stream(SCENARIO[args.kind], args.events, args.kind)
    print(f"{len(lines)} {args.kind} events, {core_eps(settings, lines):,.0f} events/s unprofiled")
    profiler = cProfile.Profile()
    profiler.runcall(core_eps, settings, lines)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
