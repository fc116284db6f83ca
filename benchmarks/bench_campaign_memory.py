"""Memory of the campaign detector's state at 10k, 100k and 1M tracked accounts.

Each size runs in its own subprocess, so one size's garbage never shows in the next. The
stream gives every account a few ratings (a fifth of them with creation date, IP and device,
the fields the detector keeps) on items drawn from a skewed catalogue capped at the
detector's ``max_items``; events are built directly, not parsed from JSON, so that the
numbers are the detector's, not the parser's. Reported per size:

- RSS growth of the process while the detector takes the stream (Linux ``/proc``),
- the pickled state (what a checkpoint writes),
- the tables' entry counts, bytes of RSS growth per tracked account, and the detector's CPU
  time per event (score and learn only; this stream is harsh: uniform ratings on a very
  skewed catalogue give every popular item a large extreme group to scan).

    python benchmarks/bench_campaign_memory.py [--sizes 10000,100000,1000000] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

T0 = 1_700_000_000.0
EVENTS_PER_ACCOUNT = 3
MAX_ITEMS = 200_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def measure(accounts: int, tick: int = 2_000) -> dict[str, float]:
    """Feed ``accounts`` accounts through a fresh detector; return the numbers."""
    from streamguard.detectors.base import Batch
    from streamguard.detectors.campaign import CampaignDetector
    from streamguard.events import FeedbackEvent

    rng = np.random.default_rng(7)
    n = accounts * EVENTS_PER_ACCOUNT
    n_items = min(MAX_ITEMS, max(1_000, accounts // 5))
    order = rng.permutation(n) % accounts  # every account gets its events, interleaved
    items = np.minimum(rng.zipf(1.3, n) - 1, n_items - 1)
    ratings = rng.integers(1, 6, n)
    meta = rng.random(accounts) < 0.2
    det = CampaignDetector(warmup_events=0)
    gc.collect()
    before = rss_bytes()
    elapsed = 0.0
    for start in range(0, n, tick):
        events = []
        for k in range(start, min(start + tick, n)):
            a = int(order[k])
            extra = (
                {
                    "account_created_at": T0 - 86400.0 * (a % 900),
                    "ip": f"10.{a % 250}.{a % 97}.1",
                    "device_id": f"d{a:012x}",
                }  # fmt: skip
                if meta[a]
                else {}
            )
            events.append(
                FeedbackEvent(
                    event_id=f"e{k}",
                    ts=T0 + k * 0.05,
                    kind="rating",
                    account_id=f"acc{a:09d}",
                    item_id=f"item{int(items[k]):07d}",
                    rating=float(ratings[k]),
                    text=None,
                    label=None,
                    attrs=None,
                    **{"account_created_at": None, "ip": None, "device_id": None, **extra},
                )  # fmt: skip
            )
        batch = Batch.of(events)
        started = time.process_time()
        out = det.score_batch(batch)
        det.learn_batch(batch, out.scores < 0.5)
        elapsed += time.process_time() - started
    gc.collect()
    grown = rss_bytes() - before
    state = len(pickle.dumps(det, protocol=pickle.HIGHEST_PROTOCOL))
    stats = det.stats()
    return {
        "accounts": float(accounts),
        "events": float(n),
        "tracked_accounts": float(len(det._accounts)),
        "tracked_items": float(len(det._items)),
        "rss_growth_mib": grown / 2**20,
        "pickle_mib": state / 2**20,
        "bytes_per_account": grown / max(len(det._accounts), 1),
        "state_entries": stats["state_entries"],
        "us_per_event": elapsed / n * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:  # the subprocess side
        print(json.dumps(measure(args.one)))
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(size)],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| accounts | events | tracked accounts | tracked items | RSS growth MiB | "
          "pickle MiB | bytes/account | us/event |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['accounts']:,.0f} | {r['events']:,.0f} | {r['tracked_accounts']:,.0f} | "
            f"{r['tracked_items']:,.0f} | {r['rss_growth_mib']:.1f} | {r['pickle_mib']:.1f} | "
            f"{r['bytes_per_account']:.0f} | {r['us_per_event']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
