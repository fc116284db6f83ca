"""Soak: RSS over a long in-process run with state expiry on (issue 9's memory bound).

Accounts keep arriving and drifting away, as on a real product: account ids slide over
time, so old accounts go quiet and must expire (``pipeline.state_ttl_days``) instead of
piling up. Event time advances 0.5 s per event, so 10 million events span ~58 days, about
twice the default 30-day TTL: the second half of the run is where RSS must stay flat.

    python benchmarks/bench_soak.py --events 10000000 --out benchmarks/soak.md

The page it writes is folded into BENCHMARKS.md by benchmarks/run_all.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import orjson
from run_all import rss_bytes
from tqdm import tqdm

from streamguard.assembly import build_pipeline
from streamguard.config import load_settings
from streamguard.pipeline import SourceRecord

TICK = 500
T0 = 1_700_000_000.0
STEP_S = 0.5  # event time per event
EVENTS_PER_NEW_ACCOUNT = 40
ACCOUNT_SPREAD = 5_000
ITEMS = 50_000


def tick_records(start: int, rng: np.random.Generator) -> list[SourceRecord]:
    idx = np.arange(start, start + TICK)
    accounts = idx // EVENTS_PER_NEW_ACCOUNT + rng.integers(0, ACCOUNT_SPREAD, TICK)
    items = (rng.zipf(1.3, TICK) - 1) % ITEMS
    ratings = np.clip(np.round(rng.normal(3.8, 1.0, TICK)), 1, 5).astype(int)
    out = []
    columns = (idx.tolist(), accounts.tolist(), items.tolist(), ratings.tolist())
    for i, a, it, r in zip(*columns, strict=True):
        event = {
            "event_id": f"e{i}",
            "ts": T0 + i * STEP_S,
            "kind": "rating",
            "account_id": f"a{a}",
            "item_id": f"i{it}",
            "rating": r,
        }
        out.append(SourceRecord(orjson.dumps(event), "soak", 0, i))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--every", type=int, default=500_000, help="RSS sample interval")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("soak.md"))
    args = parser.parse_args()
    settings = load_settings()
    pipeline = build_pipeline(settings)
    rng = np.random.default_rng(1)
    samples: list[tuple[int, float, int, float]] = []
    started = time.perf_counter()
    for start in tqdm(range(0, args.events, TICK), unit="tick", mininterval=5):
        pipeline.process(tick_records(start, rng))
        done = start + TICK
        if done % args.every == 0:
            days = done * STEP_S / 86400
            samples.append((done, days, rss_bytes(pipeline), len(pipeline.features.accounts)))
    elapsed = time.perf_counter() - started
    half = [s for s in samples if s[0] > args.events // 2]
    growth = (half[-1][2] - half[0][2]) / 2**20 if len(half) > 1 else float("nan")
    lines = [
        "## Soak: RSS over a long run with state expiry on",
        "",
        f"`python benchmarks/bench_soak.py --events {args.events}` on {platform.node()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}): {args.events:,} "
        f"rating events, all default detectors, {elapsed:.0f} s "
        f"({args.events / elapsed:,.0f} events/s including event generation). "
        f"State TTL {settings.pipeline.state_ttl_days:g} days and revocation window "
        f"{settings.pipeline.revocation_window_days:g} days of event time; "
        f"the run spans {args.events * STEP_S / 86400:.0f} days.",
        "",
        f"RSS change over the second half: **{growth:+.1f} MiB**.",
        "",
        "| events | event-time days | RSS MiB | tracked accounts |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {n:,} | {d:.1f} | {r / 2**20:.0f} | {a:,} |" for n, d, r, a in samples]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
