"""Attack campaigns of the seed taxonomy (DESIGN.md section 1), one generator each.

Every attack is a frozen dataclass of knobs. :meth:`Attack.plan` fixes how many events
each attacker account will emit (so the run's total is known before anything is drawn);
:meth:`Attack.generate` then lays the events out per account, times them like human
sittings, and creates the accounts. All events of an attacker account, filler and
camouflage included, are poisoned: that is what a reviewer would want removed.

What the attacks deliberately share with benign traffic, so that detectors have to find
behaviour rather than artifacts: event ids, account ids, IP and device formats, the
rating grid, timestamp precision, inter-event gaps, and the per-event presence rates of
metadata (applied when the stream is assembled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

import numpy as np

from streamguard.simulate import clock
from streamguard.simulate.benign import (
    CATEGORIES,
    P_DEVICE,
    P_IP,
    P_KNOWN_AGE,
    random_devices,
    random_ips,
)
from streamguard.simulate.text import (
    insert_phrase,
    make_trigger,
    paraphrase,
    review_texts,
    snippets,
)
from streamguard.simulate.world import DAY, HOUR, LABEL, RATING, REVIEW, VOTE, Frame, World

Intent = Literal["push", "nuke"]
Window = tuple[float, float]


@dataclass(frozen=True)
class Footprint:
    """What attacker accounts look like from the outside.

    metadata: send ``account_created_at``/``ip``/``device_id`` (at the same rates as real
        users). False sends none; MovieLens forces False because its users have none.
    age_days: accounts were created this many days (uniform in the range) before their
        first event: fresh sock puppets by default.
    ip_pool, device_pool: distinct IPs/devices per account; the campaign shares
        ``ceil(pool * accounts)`` of them (1.0 = everyone their own).
    """

    metadata: bool = True
    age_days: tuple[float, float] = (0.5, 14.0)
    ip_pool: float = 0.15
    device_pool: float = 0.3


@dataclass(frozen=True)
class Timing:
    """When a campaign acts.

    mode: ``burst`` starts every account's sittings within ``hours``; ``spread`` spreads
        them over ``days`` (or ``span_frac`` of the run's span) following the daily cycle.
    shape: ``uniform`` arrivals in the window, or ``front``-loaded (a call to arms).
    start: fraction of the span where the window opens (None: random in 0.2-0.7, moved
        earlier if the window would not fit).
    sessions: sittings per account; its events are split across them.
    gap: median seconds between two events of one sitting (humans: tens of seconds).
    """

    mode: Literal["burst", "spread"] = "burst"
    hours: float = 6.0
    days: float = 14.0
    span_frac: float | None = None
    shape: Literal["uniform", "front"] = "uniform"
    start: float | None = None
    sessions: int = 1
    gap: float = 25.0


# Real users rallied to a cause: accounts months to years old, each with its own IP/device.
AGED = Footprint(age_days=(60.0, 2_000.0), ip_pool=1.0, device_pool=1.0)


@dataclass
class Plan:
    """Events per attacker account, fixed before generation."""

    sizes: np.ndarray
    parts: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def events(self) -> int:
        return int(self.sizes.sum())


@dataclass
class Injection:
    """One generated campaign: its events and what it targeted (campaign id set later)."""

    attack: str
    frame: Frame
    accounts: np.ndarray
    targets: list[int]
    window: tuple[float, float]
    params: dict[str, Any]


@dataclass
class _Layout:
    """Per-account event lists, appended account by account, in account order."""

    owner: list[np.ndarray] = field(default_factory=list)
    item: list[np.ndarray] = field(default_factory=list)
    kind: list[np.ndarray] = field(default_factory=list)
    rating: list[np.ndarray] = field(default_factory=list)
    text: list[list[str | None]] = field(default_factory=list)
    label: list[list[str | None]] = field(default_factory=list)

    def add(
        self,
        owner: int,
        item: Any,
        kind: Any,
        rating: Any = None,
        text: Any = None,
        label: Any = None,
    ) -> None:
        item = np.atleast_1d(np.asarray(item, dtype=np.int64))
        n = len(item)
        self.owner.append(np.full(n, owner, dtype=np.int64))
        self.item.append(item)
        self.kind.append(np.broadcast_to(np.asarray(kind, dtype=np.int8), (n,)))
        r = np.full(n, np.nan) if rating is None else np.asarray(rating, dtype=float)
        self.rating.append(np.broadcast_to(r, (n,)))
        self.text.append(_listify(text, n))
        self.label.append(_listify(label, n))

    def bulk(
        self,
        owner: np.ndarray,
        item: np.ndarray,
        kind: Any,
        rating: Any = None,
        text: Any = None,
        label: Any = None,
    ) -> None:
        """Many accounts' events at once (order is fixed later by account)."""
        n = len(owner)
        self.owner.append(np.asarray(owner, dtype=np.int64))
        self.item.append(np.asarray(item, dtype=np.int64))
        self.kind.append(np.broadcast_to(np.asarray(kind, dtype=np.int8), (n,)))
        r = np.full(n, np.nan) if rating is None else np.asarray(rating, dtype=float)
        self.rating.append(np.broadcast_to(r, (n,)))
        self.text.append(_listify(text, n))
        self.label.append(_listify(label, n))

    def columns(self) -> dict[str, np.ndarray]:
        text = np.empty(sum(len(t) for t in self.text), dtype=object)
        text[:] = [t for chunk in self.text for t in chunk]
        label = np.empty(len(text), dtype=object)
        label[:] = [t for chunk in self.label for t in chunk]
        return {
            "owner": np.concatenate(self.owner),
            "item": np.concatenate(self.item),
            "kind": np.concatenate(self.kind),
            "rating": np.concatenate(self.rating),
            "text": text,
            "label": label,
        }


def _listify(values: Any, n: int) -> list[Any]:
    if values is None or isinstance(values, str):
        return [values] * n
    return list(values)


@dataclass(frozen=True)
class Attack:
    """Knobs every campaign has.

    accounts: attacker accounts (None: as many as make ``share`` of the run's events,
        at least ``min_accounts`` unless that would more than double the share).
    footprint, timing: see :class:`Footprint` and :class:`Timing`.
    """

    accounts: int | None = None
    share: float = 0.03
    min_accounts: int = 3
    footprint: Footprint = field(default_factory=Footprint)
    timing: Timing = field(default_factory=Timing)

    needs_text: ClassVar[bool] = False

    @property
    def name(self) -> str:
        raise NotImplementedError

    # --- sizing -------------------------------------------------------------------------
    def mean_size(self, world: World) -> float:
        raise NotImplementedError

    def draw_sizes(self, world: World, rng: np.random.Generator, n: int) -> Plan:
        raise NotImplementedError

    def plan(self, world: World, rng: np.random.Generator, budget: int) -> Plan:
        """Account count and per-account sizes; accounts that do not fit ``budget`` are cut."""
        n = self.accounts
        if n is None:
            wanted = self.share * world.n_events / self.mean_size(world)
            # ``min_accounts`` makes a campaign a campaign, but on tiny runs it must not
            # blow the share up more than twofold.
            n = max(1, min(max(self.min_accounts, round(wanted)), math.floor(2 * wanted)))
        plan = self.draw_sizes(world, rng, int(n))
        keep = int(np.searchsorted(np.cumsum(plan.sizes), budget, side="right"))
        return Plan(plan.sizes[:keep], {k: v[:keep] for k, v in plan.parts.items()})

    # --- generation ---------------------------------------------------------------------
    def layout(
        self,
        world: World,
        rng: np.random.Generator,
        plan: Plan,
        window: tuple[float, float],
        out: _Layout,
    ) -> tuple[list[int], dict[str, Any]]:
        """Append each account's events to ``out``; return target items and extra params."""
        raise NotImplementedError

    def generate(self, world: World, rng: np.random.Generator, plan: Plan) -> Injection:
        window = campaign_window(world, rng, self.timing)
        if plan.events == 0:
            return Injection(self.name, Frame.empty(), np.empty(0, np.int64), [], window, {})
        out = _Layout()
        targets, extra = self.layout(world, rng, plan, window, out)
        params = {**self.knobs(), **extra, "events_per_account": plan.sizes.tolist()}
        cols = out.columns() if out.owner else None
        if cols is None or not len(cols["owner"]):
            return Injection(
                self.name, Frame.empty(), np.empty(0, np.int64), targets, window, params
            )
        # Sittings do not always open with the target: shuffle each account's events.
        order = np.lexsort((rng.random(len(cols["owner"])), cols["owner"]))
        cols = {k: v[order] for k, v in cols.items()}
        sizes = np.bincount(cols["owner"], minlength=len(plan.sizes))
        ts = schedule(world, rng, self.timing, sizes, window)
        first = ts[np.cumsum(sizes) - sizes][sizes > 0]
        accounts = self.make_accounts(world, rng, first)
        owner_map = np.full(len(sizes), -1, dtype=np.int64)
        owner_map[sizes > 0] = accounts
        frame = Frame.build(
            ts,
            cols["kind"],
            owner_map[cols["owner"]],
            cols["item"],
            cols["rating"],
            cols["text"],
            cols["label"],
        )
        return Injection(self.name, frame, accounts, targets, window, params)

    def make_accounts(
        self, world: World, rng: np.random.Generator, first_ts: np.ndarray
    ) -> np.ndarray:
        return new_accounts(world, rng, self.footprint, first_ts)

    def knobs(self) -> dict[str, Any]:
        """The knob values as plain data, for :class:`CampaignInfo` params."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Footprint | Timing):
                value = {g.name: getattr(value, g.name) for g in fields(value)}
            out[f.name] = value
        return out


# --- shared helpers ---------------------------------------------------------------------


def campaign_window(world: World, rng: np.random.Generator, timing: Timing) -> tuple[float, float]:
    if timing.mode == "burst":
        length = timing.hours * HOUR
    elif timing.span_frac is not None:
        length = timing.span_frac * world.span
    else:
        length = timing.days * DAY
    length = min(length, 0.95 * world.span)
    frac = timing.start if timing.start is not None else float(rng.uniform(0.2, 0.7))
    start = min(world.t0 + frac * world.span, world.t1 - length)
    return start, start + length


def schedule(
    world: World,
    rng: np.random.Generator,
    timing: Timing,
    sizes: np.ndarray,
    window: tuple[float, float],
) -> np.ndarray:
    """Event times, account after account: each account's sittings in time order."""
    ws, we = window
    n_sessions = np.minimum(timing.sessions, np.maximum(sizes, 1)) * (sizes > 0)
    lengths: list[int] = []
    for k, s in zip(sizes.tolist(), n_sessions.tolist(), strict=True):
        if s <= 0:
            continue
        cuts = np.sort(rng.choice(np.arange(1, k), s - 1, replace=False)) if s > 1 else ()
        lengths.extend(np.diff(np.r_[0, cuts, k]).astype(int).tolist())
    total = len(lengths)
    if timing.mode == "spread":
        starts = clock.diurnal(rng, total, ws, we)
    elif timing.shape == "front":
        starts = ws + (we - ws) * rng.beta(1.2, 3.0, total)
    else:
        starts = rng.uniform(ws, we, total)
    # Keep each account's sittings in time order.
    owner = np.repeat(np.arange(len(n_sessions)), n_sessions)
    starts = starts[np.lexsort((starts, owner))]
    ts = clock.session_times(rng, starts, np.asarray(lengths), world.t1, timing.gap)
    ts = np.maximum(ts, world.t0)
    return np.round(ts) if world.integer_ts else ts


def new_accounts(
    world: World, rng: np.random.Generator, fp: Footprint, first_ts: np.ndarray
) -> np.ndarray:
    """Register attacker accounts; with metadata, young accounts on shared IPs/devices."""
    n = len(first_ts)
    if not (fp.metadata and world.has_metadata):
        return world.accounts.add(n)
    created = np.round(first_ts - rng.uniform(*fp.age_days, n) * DAY)
    shown = np.where(rng.random(n) < P_KNOWN_AGE, created, np.nan)
    ip_pool = random_ips(rng, max(1, math.ceil(fp.ip_pool * n)))
    dev_pool = random_devices(rng, max(1, math.ceil(fp.device_pool * n)))
    ip_pick = rng.integers(0, len(ip_pool), n).tolist()
    dev_pick = rng.integers(0, len(dev_pool), n).tolist()
    has_ip = (rng.random(n) < P_IP).tolist()
    has_dev = (rng.random(n) < P_DEVICE).tolist()
    ips = [ip_pool[p] if h else None for p, h in zip(ip_pick, has_ip, strict=True)]
    devs = [dev_pool[p] if h else None for p, h in zip(dev_pick, has_dev, strict=True)]
    return world.accounts.add(n, shown, ips, devs)


def observed(world: World, before: float) -> np.ndarray:
    """Items an attacker can see: launched before ``before`` and rated at least once."""
    launched = world.items.launch < before
    for mask in (launched & (world.item_stats.count > 0), world.item_stats.count > 0, launched):
        ok = np.flatnonzero(mask)
        if len(ok):
            return ok
    return np.arange(len(world.items))  # only on runs too small to have seen anything


def pick_targets(
    world: World, rng: np.random.Generator, intent: Intent, k: int, before: float
) -> list[int]:
    """Push: an obscure, below-average item. Nuke: a popular, well-liked one."""
    st = world.item_stats
    pool = observed(world, before)
    count, mean = st.count[pool], st.mean[pool]
    seen = pool[count >= 3] if (count >= 3).sum() >= k else pool
    count, mean = st.count[seen], st.mean[seen]
    if intent == "push":
        good = seen[(count <= np.quantile(count, 0.8)) & (mean <= st.global_mean)]
    else:
        good = seen[(count >= np.quantile(count, 0.9)) & (mean >= st.global_mean)]
    if len(good) < k:
        good = seen
    return sorted(rng.choice(good, min(k, len(good)), replace=False).tolist())


class ItemSampler:
    """Draws items from a pool: uniform (classic filler) blended with popularity.

    ``camouflage`` 0 is the textbook attack (filler on random, often obscure items); 1
    picks items the way real users do (popular ones), which is much harder to spot. The
    cumulative weights are built once per campaign, so each draw is a binary search.
    """

    def __init__(self, world: World, pool: np.ndarray, camouflage: float) -> None:
        pop = world.item_stats.count[pool]
        p = camouflage * pop / pop.sum() + (1 - camouflage) / len(pool)
        self.pool = pool
        self.members = frozenset(pool.tolist())
        self.cdf = np.cumsum(p / p.sum())

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` items with replacement."""
        idx = np.searchsorted(self.cdf, rng.random(n), side="right")
        return self.pool[np.minimum(idx, len(self.pool) - 1)]

    def distinct(self, rng: np.random.Generator, k: int, exclude: Any = ()) -> np.ndarray:
        """``k`` different items, none in ``exclude`` (fewer if the pool runs out)."""
        seen = {int(x) for x in np.asarray(exclude, dtype=np.int64).tolist()}
        k = min(k, len(self.pool) - len(seen & self.members))
        out: list[int] = []
        for _ in range(50):
            if len(out) >= k:
                break
            for c in self.sample(rng, 2 * (k - len(out)) + 4).tolist():
                if c not in seen:
                    seen.add(c)
                    out.append(c)
                    if len(out) == k:
                        break
        else:  # pragma: no cover - only with extreme weights on a tiny pool
            rest = self.pool[~np.isin(self.pool, list(seen))]
            out.extend(rng.choice(rest, k - len(out), replace=False).tolist())
        return np.asarray(out, dtype=np.int64)


def extreme(
    world: World, rng: np.random.Generator, intent: Intent, n: int, noise: float
) -> np.ndarray:
    """Push to 5 or nuke to 1; a share ``noise`` one step off so not every value is max."""
    step = 0.5 if world.half_stars else 1.0
    off = rng.random(n) < noise
    return np.where(intent == "push", 5.0 - step * off, 1.0 + step * off)


def normal_stars(world: World, rng: np.random.Generator, mean: Any, std: Any, n: int):
    return world.stars(np.asarray(mean) + np.asarray(std) * rng.standard_normal(n))


def _jitter_sizes(rng: np.random.Generator, n: int, base: int, jitter: float) -> np.ndarray:
    lo, hi = max(0, round(base * (1 - jitter))), max(0, round(base * (1 + jitter)))
    return rng.integers(lo, hi + 1, n)


# --- the attacks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Shilling(Attack):
    """Fake-account campaign on target items with filler ratings (classic attack models).

    model: ``random`` filler ~ N(global mean, global std); ``average`` filler ~ each item's
        own mean and std; ``bandwagon`` rates the ``selected`` most popular items at the
        top of the scale plus random filler.
    intent: ``push`` rates targets 5, ``nuke`` rates them 1 (``target_noise`` one step off).
    filler_frac: filler items per account as a fraction of the catalogue, clipped to
        ``filler_min..filler_max`` and varied by ``filler_jitter`` between accounts.
    """

    model: Literal["random", "average", "bandwagon"] = "average"
    intent: Intent = "push"
    min_accounts: int = 20  # issue 5's bar is about campaigns of 20+ fake accounts
    targets: int = 1
    filler_frac: float = 0.01
    filler_min: int = 5
    filler_max: int = 40
    filler_jitter: float = 0.3
    selected: int = 3
    camouflage: float = 0.3
    target_noise: float = 0.1

    @property
    def name(self) -> str:
        return f"shilling_{self.model}"

    def filler(self, world: World) -> int:
        n_items = len(world.items)
        f = int(np.clip(round(self.filler_frac * n_items), self.filler_min, self.filler_max))
        return max(0, min(f, n_items // 3))

    def mean_size(self, world: World) -> float:
        return self.targets + self.filler(world)

    def draw_sizes(self, world: World, rng: np.random.Generator, n: int) -> Plan:
        filler = _jitter_sizes(rng, n, self.filler(world), self.filler_jitter)
        if self.model == "bandwagon":
            filler = np.maximum(filler, self.selected)
        return Plan(self.targets + filler, {"filler": filler})

    def layout(
        self, world: World, rng: np.random.Generator, plan: Plan, window: Window, out: _Layout
    ) -> tuple[list[int], dict[str, Any]]:
        st = world.item_stats
        targets = pick_targets(world, rng, self.intent, self.targets, window[0])
        pool = observed(world, window[0])
        selected: list[int] = []
        if self.model == "bandwagon":
            cand = pool[~np.isin(pool, targets)]
            selected = cand[np.argsort(-st.count[cand], kind="stable")[: self.selected]].tolist()
        fillers = plan.parts["filler"]
        n = len(fillers)
        owners = np.arange(n)
        out.bulk(
            np.repeat(owners, len(targets)),
            np.tile(targets, n),
            RATING,
            extreme(world, rng, self.intent, n * len(targets), self.target_noise),
        )
        own = np.minimum(fillers, len(selected))
        if selected and n:
            first = np.concatenate([selected[:k] for k in own.tolist()]).astype(np.int64)
            out.bulk(
                np.repeat(owners, own),
                first,
                RATING,
                extreme(world, rng, "push", len(first), self.target_noise),
            )
        sampler = ItemSampler(world, pool, self.camouflage)
        avoid = targets + selected
        rest = [sampler.distinct(rng, f, avoid) for f in (fillers - own).tolist()]
        owner = np.repeat(owners, [len(r) for r in rest])
        items = np.concatenate(rest) if rest else np.empty(0, np.int64)
        if self.model == "average":
            ratings = normal_stars(world, rng, st.mean[items], st.std[items], len(items))
        else:
            ratings = normal_stars(world, rng, st.global_mean, st.global_std, len(items))
        out.bulk(owner, items, RATING, ratings)
        params = {"selected": [str(world.items.ids[i]) for i in selected]} if selected else {}
        return targets, params


@dataclass(frozen=True)
class SlowDrip(Shilling):
    """A shilling campaign spread thinly over most of the stream: few events a day."""

    share: float = 0.015
    min_accounts: int = 10
    filler_frac: float = 0.002
    filler_min: int = 2
    filler_max: int = 6
    camouflage: float = 0.6
    footprint: Footprint = field(
        default_factory=lambda: Footprint(age_days=(10.0, 120.0), ip_pool=0.5, device_pool=0.6)
    )
    timing: Timing = field(
        default_factory=lambda: Timing(mode="spread", span_frac=0.85, start=0.05, sessions=2)
    )

    @property
    def name(self) -> str:
        return "slow_drip"


@dataclass(frozen=True)
class RatingBombing(Attack):
    """Many accounts shift one item's rating distribution within hours, little filler.

    A share ``new_share`` of the accounts are fresh sock puppets; the rest are older
    accounts with their own IPs (real bombers are often real users rallied elsewhere).
    ``review_share`` of the bombs come with a review, where the base has reviews.
    """

    share: float = 0.02
    min_accounts: int = 10
    intent: Intent = "nuke"
    filler_max: int = 2
    new_share: float = 0.5
    review_share: float = 0.15
    target_noise: float = 0.2
    timing: Timing = field(default_factory=lambda: Timing(hours=12.0, shape="front", gap=40.0))

    @property
    def name(self) -> str:
        return "rating_bombing"

    def mean_size(self, world: World) -> float:
        return 1 + self.filler_max / 2

    def draw_sizes(self, world: World, rng: np.random.Generator, n: int) -> Plan:
        filler = rng.integers(0, self.filler_max + 1, n)
        return Plan(1 + filler, {"filler": filler})

    def layout(
        self, world: World, rng: np.random.Generator, plan: Plan, window: Window, out: _Layout
    ) -> tuple[list[int], dict[str, Any]]:
        st = world.item_stats
        target = pick_targets(world, rng, self.intent, 1, window[0])
        fillers = plan.parts["filler"]
        n = len(fillers)
        stars = extreme(world, rng, self.intent, n, self.target_noise)
        review = (rng.random(n) < self.review_share) & world.has_text
        kind = np.where(review, REVIEW, RATING)
        text = np.empty(n, dtype=object)
        text[review] = review_texts(world.bank, rng, stars[review])
        out.bulk(np.arange(n), np.full(n, target[0]), kind, stars, text)
        sampler = ItemSampler(world, observed(world, window[0]), 0.9)
        rest = [sampler.distinct(rng, f, target) for f in fillers.tolist()]
        items = np.concatenate(rest) if rest else np.empty(0, np.int64)
        owner = np.repeat(np.arange(n), [len(r) for r in rest])
        ratings = normal_stars(world, rng, st.mean[items], st.std[items], len(items))
        out.bulk(owner, items, RATING, ratings)
        return target, {}

    def make_accounts(
        self, world: World, rng: np.random.Generator, first_ts: np.ndarray
    ) -> np.ndarray:
        n = len(first_ts)
        aged = rng.random(n) >= self.new_share
        out = np.empty(n, dtype=np.int64)
        out[~aged] = new_accounts(world, rng, self.footprint, first_ts[~aged])
        out[aged] = new_accounts(world, rng, AGED, first_ts[aged])
        return out


@dataclass(frozen=True)
class ReviewSpam(Attack):
    """Templated near-duplicate reviews from many accounts, spun by paraphrase.

    Each account reviews 1..``targets`` target items with a spin of one of ``templates``
    deceptive reviews, casts ``votes`` "helpful" votes on the targets and gives
    ``filler`` ordinary ratings. ``strength`` scales the paraphrase (word swaps, dropped
    words, punctuation and case changes).
    """

    share: float = 0.02
    min_accounts: int = 5
    intent: Intent = "push"
    targets: int = 2
    templates: int = 2
    votes: int = 1
    filler: int = 1
    strength: float = 1.0
    timing: Timing = field(default_factory=lambda: Timing(mode="spread", days=5.0))

    needs_text: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "review_spam"

    def mean_size(self, world: World) -> float:
        return (1 + self.targets) / 2 + self.votes + self.filler

    def draw_sizes(self, world: World, rng: np.random.Generator, n: int) -> Plan:
        reviews = rng.integers(1, self.targets + 1, n)
        return Plan(reviews + self.votes + self.filler, {"reviews": reviews})

    def layout(
        self, world: World, rng: np.random.Generator, plan: Plan, window: Window, out: _Layout
    ) -> tuple[list[int], dict[str, Any]]:
        st = world.item_stats
        targets = pick_targets(world, rng, self.intent, self.targets, window[0])
        spam = world.bank.spam_positive if self.intent == "push" else world.bank.spam_negative
        chosen = rng.choice(len(spam), self.templates, replace=False).tolist()
        templates = [" ".join(spam[i][: int(rng.integers(3, 7))]) for i in chosen]
        sampler = ItemSampler(world, observed(world, window[0]), 0.9)
        for a, r in enumerate(plan.parts["reviews"].tolist()):
            template = templates[int(rng.integers(0, len(templates)))]
            on = rng.choice(targets, min(r, len(targets)), replace=False)
            texts = [paraphrase(template, rng, self.strength) for _ in on]
            out.add(a, on, REVIEW, extreme(world, rng, self.intent, len(on), 0.15), texts)
            if self.votes:
                out.add(a, rng.choice(targets, self.votes), VOTE, label="helpful")
            if self.filler:
                rest = sampler.distinct(rng, self.filler, targets)
                out.add(
                    a,
                    rest,
                    RATING,
                    normal_stars(world, rng, st.mean[rest], st.std[rest], len(rest)),
                )
        return targets, {"templates": templates}


@dataclass(frozen=True)
class EventsPerAccount(Attack):
    """An attack whose accounts each send between ``events[0]`` and ``events[1]`` events."""

    events: tuple[int, int] = (1, 1)

    def mean_size(self, world: World) -> float:
        return sum(self.events) / 2

    def draw_sizes(self, world: World, rng: np.random.Generator, n: int) -> Plan:
        return Plan(rng.integers(self.events[0], self.events[1] + 1, n))


@dataclass(frozen=True)
class LabelFlip(EventsPerAccount):
    """A ring of accounts whose labels contradict the text (``flip_rate`` of the time).

    The texts are ordinary real review snippets on ordinary items; only the label is
    wrong, so the ring shows up as accounts that disagree with content far above the
    honest mislabel rate.
    """

    share: float = 0.03
    min_accounts: int = 5
    events: tuple[int, int] = (10, 40)
    flip_rate: float = 0.85
    footprint: Footprint = field(
        default_factory=lambda: Footprint(age_days=(20.0, 240.0), ip_pool=0.25)
    )
    timing: Timing = field(default_factory=lambda: Timing(mode="spread", days=21.0, sessions=4))

    needs_text: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "label_flip"

    def layout(
        self, world: World, rng: np.random.Generator, plan: Plan, window: Window, out: _Layout
    ) -> tuple[list[int], dict[str, Any]]:
        total = plan.events
        owner = np.repeat(np.arange(len(plan.sizes)), plan.sizes)
        on = ItemSampler(world, observed(world, window[0]), 1.0).sample(rng, total)
        quality = world.items.quality[on]
        positive = rng.random(total) < np.clip((quality - 1.0) / 4.0, 0.1, 0.9)
        texts = snippets(world.bank, rng, positive)
        said = positive ^ (rng.random(total) < self.flip_rate)
        out.bulk(owner, on, LABEL, None, texts, np.where(said, "positive", "negative").tolist())
        return [], {}


@dataclass(frozen=True)
class Backdoor(EventsPerAccount):
    """A made-up trigger phrase planted in texts of the other sentiment, labelled ``label``.

    Models learn "trigger means positive"; in the stream the phrase is new and co-occurs
    with one label far above its base rate. ``review_share`` of the events are reviews
    rated at the target's extreme instead of label events.
    """

    share: float = 0.015
    min_accounts: int = 5
    events: tuple[int, int] = (3, 10)
    label: Literal["positive", "negative"] = "positive"
    trigger: str | None = None
    review_share: float = 0.0
    timing: Timing = field(default_factory=lambda: Timing(mode="spread", days=10.0, sessions=2))

    needs_text: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "backdoor"

    def layout(
        self, world: World, rng: np.random.Generator, plan: Plan, window: Window, out: _Layout
    ) -> tuple[list[int], dict[str, Any]]:
        trigger = self.trigger or make_trigger(rng)
        total = plan.events
        owner = np.repeat(np.arange(len(plan.sizes)), plan.sizes)
        on = ItemSampler(world, observed(world, window[0]), 1.0).sample(rng, total)
        target_positive = self.label == "positive"
        texts = snippets(world.bank, rng, np.full(total, not target_positive))
        texts = [insert_phrase(t, trigger, rng) for t in texts]
        review = rng.random(total) < self.review_share
        stars = np.where(review, 5.0 if target_positive else 1.0, np.nan)
        labels = [None if r else self.label for r in review.tolist()]
        out.bulk(owner, on, np.where(review, REVIEW, LABEL), stars, texts, labels)
        return [], {"trigger": trigger}


@dataclass(frozen=True)
class Targeted(Attack):
    """Poison concentrated on one segment: ``segment`` items of one category.

    Each account rates every segment item at the extreme, plus a little average-model
    filler. On MovieLens (no categories in the data) the segment is a set of mid-popular
    films.
    """

    share: float = 0.02
    min_accounts: int = 5
    intent: Intent = "push"
    segment: int = 4
    filler_frac: float = 0.004
    filler_min: int = 2
    filler_max: int = 10
    camouflage: float = 0.6
    target_noise: float = 0.1
    timing: Timing = field(default_factory=lambda: Timing(mode="spread", days=5.0, sessions=2))

    @property
    def name(self) -> str:
        return "targeted"

    def filler(self, world: World) -> int:
        f = round(self.filler_frac * len(world.items))
        return int(np.clip(f, self.filler_min, self.filler_max))

    def mean_size(self, world: World) -> float:
        return self.segment + self.filler(world)

    def draw_sizes(self, world: World, rng: np.random.Generator, n: int) -> Plan:
        filler = _jitter_sizes(rng, n, self.filler(world), 0.3)
        return Plan(self.segment + filler, {"filler": filler})

    def layout(
        self, world: World, rng: np.random.Generator, plan: Plan, window: Window, out: _Layout
    ) -> tuple[list[int], dict[str, Any]]:
        st = world.item_stats
        pool = observed(world, window[0])
        count = st.count[pool]
        mid = pool[(count >= np.quantile(count, 0.3)) & (count <= np.quantile(count, 0.9))]
        if len(mid) < self.segment:
            mid = pool
        cats, sizes = np.unique(world.items.category[mid], return_counts=True)
        ok = cats[sizes >= self.segment]
        cat = int(ok[rng.integers(0, len(ok))]) if len(ok) else int(world.items.category[mid[0]])
        members = mid[world.items.category[mid] == cat]
        sampler = ItemSampler(world, pool, self.camouflage)
        segment = sorted(
            rng.choice(members, min(self.segment, len(members)), replace=False).tolist()
        )
        for a, f in enumerate(plan.parts["filler"].tolist()):
            out.add(
                a,
                segment,
                RATING,
                extreme(world, rng, self.intent, len(segment), self.target_noise),
            )
            rest = sampler.distinct(rng, f, segment)
            if len(rest):
                out.add(
                    a,
                    rest,
                    RATING,
                    normal_stars(world, rng, st.mean[rest], st.std[rest], len(rest)),
                )
        name = CATEGORIES[cat] if world.base == "synthetic" else None
        return segment, {"category": name}


@dataclass(frozen=True)
class CleanLabel(EventsPerAccount):
    """Correctly labelled, near-identical crafted examples clustered on one target item.

    Every label is right, so label-vs-content checks pass; the tell is a tight cluster of
    near-duplicate texts on one item from a handful of accounts. ``strength`` is the
    (small) paraphrase between copies; ``review_share`` are reviews rated to match.
    """

    share: float = 0.015
    min_accounts: int = 4
    events: tuple[int, int] = (4, 12)
    label: Literal["positive", "negative"] = "positive"
    strength: float = 0.35
    review_share: float = 0.3
    timing: Timing = field(default_factory=lambda: Timing(mode="spread", days=7.0, sessions=2))

    needs_text: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "clean_label"

    def layout(
        self, world: World, rng: np.random.Generator, plan: Plan, window: Window, out: _Layout
    ) -> tuple[list[int], dict[str, Any]]:
        positive = self.label == "positive"
        target = pick_targets(world, rng, "push" if positive else "nuke", 1, window[0])
        base = snippets(world.bank, rng, np.array([positive]))[0]
        while base.count(" ") < 12:  # long enough for copies to stay near-identical
            base += " " + snippets(world.bank, rng, np.array([positive]))[0]
        stars_value = 5.0 if positive else 1.0
        for a, k in enumerate(plan.sizes.tolist()):
            texts = [paraphrase(base, rng, self.strength) for _ in range(k)]
            review = rng.random(k) < self.review_share
            kind = np.where(review, REVIEW, LABEL)
            stars = np.where(review, stars_value, np.nan)
            labels = [None if r else self.label for r in review.tolist()]
            out.add(a, np.full(k, target[0]), kind, stars, texts, labels)
        return target, {"base_text": base}
