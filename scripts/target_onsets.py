"""How soon could a test on the target see a shilling campaign? Read a matrix folder.

    python scripts/target_onsets.py DIR [--accounts 3] [--within 50] [--alarm-within 100]

For each campaign of the shilling and rating-bombing runs (``*-shilling_*-N``,
``*-no_metadata-N``, ``*-rating_bombing-N``), its target is the item most of its accounts
rated, and its target ratings are its own ratings of that item. Two questions, each
against what ``metrics.json`` measured:

- issue 5 (detected within ``--within`` campaign events): at which campaign event had
  ``--accounts`` of its accounts rated the target? The campaign detector finds groups of
  at least 3 accounts on one item; before then it cannot, unless something else gives
  the first accounts away. Nor can it before its warm-up (``--warmup`` kept ratings,
  ``detectors.campaign.warmup_events``): how many of the campaign's events came before
  the stream's rating of that number?
- issue 4 (a drift alarm within ``--alarm-within``): how many target ratings had come
  when the drift detector alarmed, and when did the campaign reach as many (the median
  over the campaigns it alarmed on)? A change test on the target's ratings needs a
  number of shifted values, whoever is behind them; a fake that rates dozens of other
  items first spends many campaign events on each target rating.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from itertools import islice
from pathlib import Path
from statistics import median
from typing import Any

import orjson

from streamguard.detectors.campaign import CampaignSettings
from streamguard.evaluate.metrics import read_truth_csv

_RUNS = ("-shilling_", "-no_metadata-", "-rating_bombing-")


_WARMUP = CampaignSettings().warmup_events  # the campaign detector's, by default


def campaigns(run: Path, accounts: int, warmup: int = _WARMUP) -> list[dict[str, Any]]:
    """Per campaign: its events, the two times measured, when ``accounts`` of its accounts
    had rated the target, the campaign event of each of its target ratings, and how many
    of its events came before the stream's ``warmup``-th rating."""
    truth = read_truth_csv(run / "truth.csv")
    campaign_of = {event_id: t.campaign for event_id, t in truth.items() if t.campaign}
    stream: list[dict[str, Any]] = []
    with (run / "events.jsonl").open("rb") as f:
        for line in f:
            try:
                stream.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    raters: dict[str, dict[Any, set[Any]]] = defaultdict(lambda: defaultdict(set))
    for e in stream:
        campaign = campaign_of.get(str(e.get("event_id")))
        if campaign:
            raters[campaign][e.get("item_id")].add(e.get("account_id"))
    measured = orjson.loads((run / "metrics.json").read_bytes())["by_campaign"]
    ratings = (k for k, e in enumerate(stream) if e.get("rating") is not None)
    warm = next(islice(ratings, warmup - 1, None), len(stream)) if warmup > 0 else 0
    out = []
    for campaign, by_item in raters.items():
        target = max(by_item, key=lambda item: len(by_item[item]))
        seen, events, in_warmup = set(), 0, 0
        account_at = None
        target_at = []  # the campaign event of each of its target ratings
        for k, e in enumerate(stream):
            if campaign_of.get(str(e.get("event_id"))) != campaign:
                continue
            events += 1
            in_warmup += k < warm
            if e.get("item_id") != target or e.get("rating") is None:
                continue
            target_at.append(events)
            if e.get("account_id") not in seen:
                seen.add(e.get("account_id"))
                if len(seen) == accounts:
                    account_at = events
        m = measured.get(campaign, {})
        out.append({
            "run": run.name, "campaign": campaign, "events": events,
            "detected": m.get("time_to_detect_events"),
            "alarm": m.get("time_to_drift_alarm_events"),
            "account_at": account_at, "target_at": target_at, "in_warmup": in_warmup,
        })  # fmt: skip
    return out


def _late(at: int | None, bar: int) -> bool:
    return at is None or at > bar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path, help="a `streamguard matrix --out` folder")
    parser.add_argument("--accounts", type=int, default=3)
    parser.add_argument("--within", type=int, default=50)
    parser.add_argument("--alarm-within", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=_WARMUP)
    args = parser.parse_args()
    runs = sorted(
        p for p in args.folder.iterdir() if p.is_dir() and any(r in p.name for r in _RUNS)
    )
    found = [c for run in runs for c in campaigns(run, args.accounts, args.warmup)]
    shilling = [c for c in found if "-rating_bombing-" not in c["run"]]
    late = [c for c in shilling if _late(c["detected"], args.within)]
    for c in late:
        print(f"{c['run']:36s} {c['campaign']}: detected after {c['detected']} events, "
              f"{args.accounts} accounts on the target after {c['account_at']}, "
              f"events in the warm-up: {c['in_warmup']}")  # fmt: skip
    few = [c for c in late if _late(c["account_at"], args.within)]
    cold = [c for c in late if c not in few and c["in_warmup"] >= args.within]
    print(f"issue 5: {len(late)} of {len(shilling)} shilling campaigns detected after "
          f"{args.within} events or never; in {len(few)} of them fewer than {args.accounts} "
          f"accounts had rated the target by then, and in {len(cold)} more all those events "
          f"came in the warm-up")  # fmt: skip
    alarmed = [c for c in found if c["alarm"] is not None]
    if not alarmed:
        return
    needed = int(median(sum(1 for at in c["target_at"] if at <= c["alarm"]) for c in alarmed))
    quiet = [c for c in found if _late(c["alarm"], args.alarm_within)]
    short = [c for c in quiet if len(c["target_at"]) < needed
             or c["target_at"][needed - 1] > args.alarm_within]  # fmt: skip
    print(f"issue 4: drift alarmed on {len(alarmed)} of {len(found)} shilling and bombing "
          f"campaigns, after a median of {needed} target ratings; {len(quiet)} had no alarm "
          f"within {args.alarm_within} events, and in {len(short)} of those the campaign "
          f"had not given {needed} target ratings by then")  # fmt: skip


if __name__ == "__main__":
    main()
