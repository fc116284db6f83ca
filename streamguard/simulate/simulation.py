"""Run a scenario into one time-ordered stream with its ground truth, and write it out.

Order of work, and why: campaign sizes are planned first so the benign share is known
and the run has exactly ``events`` events; benign traffic comes next, because attackers
choose targets and filler from what they can observe of it; then the bursts and the
campaigns; last, everything is merged by time and given ids and metadata in one pass,
which is what keeps the two sides from differing in any formatting detail.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
from tqdm import tqdm

from streamguard.simulate import bursts as burst_mod
from streamguard.simulate import movielens
from streamguard.simulate.attacks import Injection
from streamguard.simulate.benign import benign_traffic, synthetic_world, unique_ints
from streamguard.simulate.bursts import BurstInfo
from streamguard.simulate.scenarios import Scenario, get_scenario
from streamguard.simulate.text import load_bank
from streamguard.simulate.world import KINDS, Frame, ItemStats, World

BASES = ("synthetic", "movielens")
MAX_POISON = 0.5  # never let campaigns take more than half of a (tiny) run
MAX_BURSTS = 0.25
COMPANION_SHARE = 0.15  # MovieLens text companions per replayed rating (text scenarios)
# Per-event chance that an account's known metadata is on an event (clients differ).
P_EVENT_AGE, P_EVENT_IP, P_EVENT_DEVICE = 0.95, 0.9, 0.9
PROGRESS_FROM = 200_000


class TruthRow(NamedTuple):
    event_id: str
    poisoned: int
    attack: str
    campaign: str


@dataclass(frozen=True)
class CampaignInfo:
    """One injected campaign: who, on what, when, and with which knobs."""

    id: str
    attack: str
    targets: list[str]
    accounts: list[str]
    start_ts: float
    end_ts: float
    events: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Simulation:
    scenario: str
    seed: int
    base: str
    events: list[dict[str, Any]]
    truth: list[TruthRow]
    campaigns: list[CampaignInfo]
    bursts: list[BurstInfo]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building millions of small objects (none are cyclic).

    Without this, generation-0 collections rescan the growing event list over and over
    and building a million events takes several times longer.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def simulate(
    scenario: str | Scenario, events: int, seed: int, base: str = "synthetic"
) -> Simulation:
    """Simulate ``events`` events of ``scenario`` on ``base``; deterministic per ``seed``.

    ``scenario`` is a name from ``SCENARIOS`` or a :class:`Scenario` with custom knobs.
    On MovieLens the run is shorter than ``events`` when the file runs out of rows.
    """
    with _gc_paused():
        return _simulate(scenario, events, seed, base)


def _simulate(scenario: str | Scenario, events: int, seed: int, base: str) -> Simulation:
    spec = scenario if isinstance(scenario, Scenario) else get_scenario(scenario)
    if base not in BASES:
        raise ValueError(f"unknown base {base!r}; choose one of: {', '.join(BASES)}")
    if events < 0:
        raise ValueError("events must be >= 0")
    # Independent streams per component: adding a campaign does not reshuffle the rest.
    root = np.random.SeedSequence([seed % 2**63, BASES.index(base)])
    r_world, r_plan, r_benign, r_burst, r_extra, r_out, *r_attacks = (
        np.random.default_rng(s) for s in root.spawn(6 + len(spec.attacks))
    )
    bank = load_bank()
    if base == "synthetic":
        world = synthetic_world(events, r_world, bank)
    else:
        world = movielens.movielens_world(events, bank)
        world.has_text = spec.needs_text

    budget = int(events * MAX_POISON)
    plans = []
    for attack in spec.attacks:
        plan = attack.plan(world, r_plan, budget)
        budget -= plan.events
        plans.append(plan)
    burst_budget = int(events * MAX_BURSTS)
    burst_plans = []
    for knobs in spec.bursts:
        bp = burst_mod.plan(knobs, world, r_plan, burst_budget)
        burst_budget -= bp.events
        burst_plans.append(bp)
    planned = sum(p.events for p in plans) + sum(b.events for b in burst_plans)

    replay = Frame.empty()
    if base == "synthetic":
        for bp in burst_plans:
            burst_mod.prepare(bp, world, r_burst)
        benign = benign_traffic(world, r_benign, events - planned)
    else:
        share = COMPANION_SHARE if world.has_text else 0.0
        replay = movielens.replay(world, round((events - planned) / (1 + share)))
        benign = replay
    world.benign = benign
    world.stats = ItemStats.observe(benign, len(world.items))

    made_bursts = [burst_mod.generate(bp, world, r_burst) for bp in burst_plans]
    injections = [
        a.generate(world, r, p) for a, r, p in zip(spec.attacks, r_attacks, plans, strict=True)
    ]
    other = sum(len(f) for f, _ in made_bursts) + sum(len(i.frame) for i in injections)

    extra = Frame.empty()
    if base == "synthetic":
        # Planned sizes are met except on tiny catalogues; top up with benign traffic.
        extra = benign_traffic(world, r_extra, events - other - len(benign))
    else:
        share = COMPANION_SHARE if world.has_text else 0.0
        remaining = events - other
        n_replay = round(remaining / (1 + share))
        replay = movielens.replay(world, n_replay)  # a superset of the first slice
        n_comp = remaining - len(replay) if share else 0
        extra = movielens.companions(world, r_extra, replay, n_comp)
        benign = replay
    return _assemble(spec.name, seed, world, benign, extra, made_bursts, injections, r_out)


def _assemble(
    scenario: str,
    seed: int,
    world: World,
    benign: Frame,
    extra: Frame,
    made_bursts: list[tuple[Frame, BurstInfo]],
    injections: list[Injection],
    rng: np.random.Generator,
) -> Simulation:
    kept = [inj for inj in injections if len(inj.frame)]
    for c, inj in enumerate(kept):
        inj.frame.campaign[:] = c
    frames = [benign, extra, *(f for f, _ in made_bursts), *(inj.frame for inj in kept)]
    allf = Frame.concat(frames)
    n = len(allf)
    ts = allf.ts if world.integer_ts else np.round(allf.ts, 3)
    # Random tie-break so attack events are not always last within one second; replayed
    # rows keep their file order among themselves (their keys are sorted ascending).
    tie = rng.random(n)
    if world.base == "movielens":
        tie[: len(benign)] = np.sort(tie[: len(benign)])
    order = np.lexsort((tie, ts))
    f = allf.take(order)
    ts = ts[order]

    event_ids = [f"e{v:016x}" for v in unique_ints(rng, n, 0, 2**63)]
    names = _account_names(world, rng, f)
    acc = world.accounts
    created = np.asarray(acc.created_at, dtype=float)[f.account]
    created = np.where(rng.random(n) < P_EVENT_AGE, created, np.nan)
    ip_of = np.asarray(acc.ip, dtype=object)[f.account]
    dev_of = np.asarray(acc.device, dtype=object)[f.account]
    ip_of[rng.random(n) >= P_EVENT_IP] = None
    dev_of[rng.random(n) >= P_EVENT_DEVICE] = None

    columns = zip(
        event_ids,
        ts.tolist(),
        [KINDS[k] for k in f.kind.tolist()],
        np.asarray(names, dtype=object)[f.account].tolist(),
        world.items.ids[f.item].tolist(),
        f.rating.tolist(),
        f.text.tolist(),
        f.label.tolist(),
        created.tolist(),
        ip_of.tolist(),
        dev_of.tolist(),
        strict=True,
    )
    events: list[dict[str, Any]] = []
    append = events.append
    bar = tqdm(
        total=n, desc="events", unit="ev", file=sys.stderr, disable=n < PROGRESS_FROM or None
    )
    for i, (eid, t, kind, account, item, rating, text, label, age, ip, dev) in enumerate(columns):
        e: dict[str, Any] = {
            "event_id": eid,
            "ts": t,
            "kind": kind,
            "account_id": account,
            "item_id": item,
        }
        if rating == rating:  # not NaN
            e["rating"] = rating
        if text is not None:
            e["text"] = text
        if label is not None:
            e["label"] = label
        if age == age:
            e["account_created_at"] = age
        if ip is not None:
            e["ip"] = ip
        if dev is not None:
            e["device_id"] = dev
        append(e)
        if not i % 100_000:
            bar.update(min(100_000, n - i))
    bar.close()

    campaign_ids = [f"c{c + 1}" for c in range(len(kept))]
    attack_of = [inj.attack for inj in kept]
    truth = [
        TruthRow(eid, 1, attack_of[c], campaign_ids[c]) if c >= 0 else TruthRow(eid, 0, "", "")
        for eid, c in zip(event_ids, f.campaign.tolist(), strict=True)
    ]
    campaigns = []
    for c, inj in enumerate(kept):
        mine = f.campaign == c
        campaigns.append(
            CampaignInfo(
                id=campaign_ids[c],
                attack=inj.attack,
                targets=[str(world.items.ids[i]) for i in inj.targets],
                accounts=[names[a] for a in inj.accounts.tolist()],
                start_ts=float(ts[mine].min()),
                end_ts=float(ts[mine].max()),
                events=int(mine.sum()),
                params={**inj.params, "window": list(inj.window)},
            )
        )
    bursts = [b for _, b in made_bursts if b.events]
    return Simulation(scenario, seed, world.base, events, truth, campaigns, bursts)


def _account_names(world: World, rng: np.random.Generator, f: Frame) -> list[str]:
    """Names for accounts without one, from one id space shared by both sides.

    Synthetic: random 8-digit ids. MovieLens: new users get ids above the file's largest,
    increasing in order of their first event, as sign-ups would.
    """
    names = list(world.accounts.name)
    missing = [i for i, v in enumerate(names) if v is None]
    if not missing:
        return names  # type: ignore[return-value]
    if world.base == "synthetic":
        for i, v in zip(
            missing, unique_ints(rng, len(missing), 10_000_000, 100_000_000), strict=True
        ):
            names[i] = f"u{v}"
        return names  # type: ignore[return-value]
    first = np.full(len(names), np.inf)
    np.minimum.at(first, f.account, f.ts)
    missing_arr = np.asarray(missing)
    ordered = missing_arr[np.argsort(first[missing_arr], kind="stable")]
    ids = world.extra["max_user_id"] + np.cumsum(rng.integers(1, 4, len(ordered)))
    for i, v in zip(ordered.tolist(), ids.tolist(), strict=True):
        names[i] = f"ml-u{v}"
    return names  # type: ignore[return-value]


def write_simulation(sim: Simulation, out_dir: Path, campaigns: bool = False) -> None:
    """Write ``events.jsonl`` and ``truth.csv`` (and ``campaigns.json`` if asked)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dumps = orjson.dumps
    with (out_dir / "events.jsonl").open("wb") as fh:
        for start in range(0, len(sim.events), 50_000):
            fh.write(b"".join(dumps(e) + b"\n" for e in sim.events[start : start + 50_000]))
    lines = ["event_id,poisoned,attack,campaign"]
    lines.extend(f"{t.event_id},{t.poisoned},{t.attack},{t.campaign}" for t in sim.truth)
    (out_dir / "truth.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if campaigns:
        info = {
            "scenario": sim.scenario,
            "seed": sim.seed,
            "base": sim.base,
            "campaigns": [c.__dict__ for c in sim.campaigns],
            "bursts": [b.__dict__ for b in sim.bursts],
        }
        (out_dir / "campaigns.json").write_bytes(
            orjson.dumps(info, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        )
