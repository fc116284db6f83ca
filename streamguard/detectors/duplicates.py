"""Near-duplicate text campaigns: templated review spam and clean-label clusters.

What it looks for. A spammer writes one template and spins it (synonym swaps, dropped
words, punctuation and case) into many reviews posted from many accounts; a clean-label
attacker posts many correctly labelled, near-identical texts on one target item. Both
leave the same trace: a tight cluster of near-duplicate texts. Honest texts overlap too
(two reviews sharing a stock sentence), but pairwise and at random, not as one cluster
from many accounts.

How. Each text (normalised, truncated and tokenised by :mod:`streamguard.text`) becomes
a MinHash signature over its word shingles, computed for the whole tick at once with
*one-permutation hashing* (one hash per shingle, the minimum per bin, empty bins filled
by rotation), which costs about 1 us per text where datasketch's ``MinHash.bulk`` plus
``MinHashLSH`` cost about 100 us (measured on 350-character reviews). Banded LSH over
the signature finds earlier texts that likely share at least ``threshold`` of their
shingles; each candidate is verified on the full signature. A text joins the cluster of
its most similar earlier text (texts under ``min_tokens`` words never do: short stock
phrases collide by nature). A cluster becomes a campaign when it is *focused* (its
copies concentrate on few items: the top item has three or more, and there are at most
half as many items as copies) and comes from ``min_accounts`` accounts; or when it is
focused with ``min_item_copies`` copies on one item (the clean-label shape, even from
two accounts); or, unfocused, when ``spread_accounts`` accounts joined within
``spread_hours`` (one template spread over many items). Honest texts that share a stock
sentence form clusters too, but spread over items and time. From then on:

- every copy on a target item (or any copy, for the spread shape) is quarantined with the
  campaign id; its account becomes a member;
- every later event of a member account is quarantined for ``member_days``;
- members' earlier releases (from ``lookback_hours`` before their first copy) are
  revoked through ``Scores.flagged_accounts``.

Clean-label injection is handled here rather than in a detector of its own: its tell is
the same near-duplicate cluster (the labels are right, so label checks cannot see it),
and sharing the signatures and the index halves the cost.

Batch semantics. ``score_batch`` replays the tick text by text against the index as it
was at the tick's start plus the earlier texts of the same tick (each LSH band sees the
most recent earlier text in its bucket, exactly as the index would after inserting them
one by one), on copy-on-write views of the touched clusters; ``learn_batch`` commits that
plan. The index is *observed* state: every text is recorded, quarantined or not, because
a campaign must keep growing while its copies are being quarantined. So the flags and
the set of events kept out of the clean set do not depend on how ticks are cut (events
found before the campaign opened are revoked with ticks of 1, quarantined at once with
larger ticks).

Bounded state: a ring of ``max_entries`` signatures (``num_perm`` uint32 each) that also
expire after ``ttl_days`` of event time, a fixed-size LSH table per band (a newer text
overwrites its bucket), clusters in an LRU table of ``max_clusters`` that expire with
their last text, and members in an LRU table of ``max_members``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from pydantic import Field

from streamguard.campaigns import Campaign
from streamguard.detectors.base import Batch, Flag, Scores
from streamguard.detectors.planned import PlannedDetector
from streamguard.features import LRUTable
from streamguard.text import U64, TextSettings, mix64, tokenize_batch

DAY = 86400.0
HOUR = 3600.0
_EMPTY = np.uint32(0xFFFFFFFF)
_MAX_CLUSTER_ACCOUNTS = 5_000
_MAX_CLUSTER_ITEMS = 64
_CAMPAIGN_SCORE = 1.0
_MEMBER_SCORE = 0.9
_NEAR_SCORE = 0.45  # a match short of a campaign: ranks the event, never decides


class NearDuplicateSettings(TextSettings):
    """Settings of :class:`NearDuplicateDetector` (see its docstring)."""

    num_perm: int = Field(64, ge=16, le=256)
    bands: int = Field(21, ge=1)
    rows: int = Field(3, ge=1)
    shingle: int = Field(2, ge=1, le=5)
    threshold: float = Field(0.5, gt=0.0, le=1.0)
    min_tokens: int = Field(10, ge=1)
    min_accounts: int = Field(5, ge=2)
    min_item_copies: int = Field(8, ge=2)
    spread_accounts: int = Field(30, ge=2)
    spread_hours: float = Field(72.0, gt=0)
    ttl_days: float = Field(14.0, gt=0)
    member_days: float = Field(30.0, ge=0)
    lookback_hours: float = Field(24.0, ge=0)
    max_entries: int = Field(100_000, ge=16)
    max_clusters: int = Field(50_000, ge=1)
    max_members: int = Field(200_000, ge=1)


class _Cluster:
    """Near-duplicate texts that joined one another: who, on what, when."""

    __slots__ = ("id", "first_ts", "last_ts", "n", "accounts", "n_accounts", "items", "opened")

    def __init__(self, cid: str, ts: float) -> None:
        self.id = cid
        self.first_ts = ts
        self.last_ts = ts
        self.n = 0
        self.accounts: dict[str, tuple[float, str]] = {}  # account -> first copy (ts, item)
        self.n_accounts = 0
        self.items: dict[str, int] = {}  # item -> copies (capped)
        self.opened: tuple[float, str] | None = None  # (time, shape) once a campaign

    def add(self, account: str, item: str, ts: float) -> bool:
        """Count one more copy; True when it comes from an account new to the cluster."""
        self.n += 1
        self.first_ts = min(self.first_ts, ts)
        self.last_ts = max(self.last_ts, ts)
        if item in self.items:
            self.items[item] += 1
        elif len(self.items) < _MAX_CLUSTER_ITEMS:
            self.items[item] = 1
        if account in self.accounts:
            return False
        self.n_accounts += 1
        if len(self.accounts) < _MAX_CLUSTER_ACCOUNTS:
            self.accounts[account] = (ts, item)
        return True

    def on_target(self, item: str) -> bool:
        """Does a copy on ``item`` belong to the campaign's push (spread ones target all)?"""
        return self.opened is not None and (
            self.opened[1] == "spread-template" or self.items.get(item, 0) >= 2
        )

    def top_item(self) -> tuple[str, int]:
        if not self.items:
            return "", 0
        item = max(self.items, key=lambda k: (self.items[k], k))
        return item, self.items[item]

    def copy(self) -> _Cluster:
        other = _Cluster(self.id, self.first_ts)
        other.last_ts, other.n, other.n_accounts = self.last_ts, self.n, self.n_accounts
        other.accounts = dict(self.accounts)
        other.items = dict(self.items)
        other.opened = self.opened
        return other

    def describe(self) -> str:
        item, copies = self.top_item()
        since = datetime.fromtimestamp(self.first_ts, UTC).strftime("%Y-%m-%d %H:%M")
        shape = self.opened[1] if self.opened else "near-duplicate"
        return (
            f"{shape} campaign {self.id}: {self.n} near-identical texts from "
            f"{self.n_accounts} accounts since {since} UTC, {copies} of them on item {item}"
        )


@dataclass
class _Tick:
    """One tick's plan: scores, and the changes ``learn_batch`` commits."""

    batch: Batch
    version: int
    scores: Scores
    sig: np.ndarray  # (m, num_perm) uint32, the eligible texts in batch order
    buckets: np.ndarray  # (m, bands)
    rows: np.ndarray  # batch position of each eligible text
    assigned: list[str | None]
    slot_clusters: dict[int, str] = field(default_factory=dict)
    clusters: dict[str, _Cluster] = field(default_factory=dict)
    members: dict[str, tuple[str, float]] = field(default_factory=dict)
    next_id: int = 0


class NearDuplicateDetector(PlannedDetector["_Tick", NearDuplicateSettings]):
    """Decisive detector for campaigns of near-duplicate texts (templated spam, clean-label).

    Parameters are those of :class:`NearDuplicateSettings`: ``num_perm`` MinHash bins (a
    power of two), LSH ``bands`` x ``rows`` (at most ``num_perm``), word ``shingle`` size,
    the Jaccard ``threshold`` to join a cluster, ``min_tokens`` for a text to count,
    ``min_accounts`` / ``min_item_copies`` to open a campaign, and the bounds.

    >>> det = NearDuplicateDetector(min_accounts=3)
    >>> det.name
    'near_duplicate'
    """

    name = "near_duplicate"
    # The event attributes it reads: all it is sent in a second process (offload.py).
    EVENT_FIELDS = ("account_id", "item_id", "ts", "text")

    settings_type = NearDuplicateSettings

    def _setup(self) -> None:
        """Cross-field checks (each field is checked by the settings) and initial state."""
        c = self.cfg
        if c.num_perm & (c.num_perm - 1):
            raise ValueError(f"num_perm must be a power of two, got {c.num_perm}")
        if c.bands * c.rows > c.num_perm:
            raise ValueError(
                f"need bands * rows <= num_perm, got {c.bands} x {c.rows} > {c.num_perm}"
            )
        if c.shingle > c.min_tokens:
            raise ValueError("need shingle <= min_tokens")

        self._bits = int(c.num_perm).bit_length() - 1
        self._table_bits = max(10, int(2 * c.max_entries - 1).bit_length())
        self._table = np.full((c.bands, 1 << self._table_bits), -1, dtype=np.int32)
        self._sig = np.zeros((c.max_entries, c.num_perm), dtype=np.uint32)
        self._ts = np.full(c.max_entries, -np.inf)
        self._slot_cluster: list[str | None] = [None] * c.max_entries
        self._slot_account: list[str] = [""] * c.max_entries
        self._slot_item: list[str] = [""] * c.max_entries
        self._head = 0
        self._clusters: LRUTable[_Cluster] = LRUTable(c.max_clusters)
        self._members: LRUTable[tuple[str, float]] = LRUTable(c.max_members)
        self._closed: list[Campaign] = []
        self._next_id = 1
        self._watermark = -np.inf

    def campaigns(self) -> list[Campaign]:
        """Open campaigns (live clusters that became one) and recently closed ones."""
        live = [self._campaign(c) for _, c in self._clusters.items() if c.opened]
        return self._closed + live

    # ------------------------------------------------------------------ signatures

    def signatures(self, shingles: np.ndarray, doc: np.ndarray, m: int) -> np.ndarray:
        """One-permutation MinHash of each text's shingle set, densified by rotation."""
        p = self.cfg.num_perm
        bins = (shingles >> U64(64 - self._bits)).astype(np.int64)
        values = ((shingles << U64(self._bits)) >> U64(32)).astype(np.uint32)
        flat = np.full(m * p, _EMPTY, dtype=np.uint32)
        np.minimum.at(flat, doc * p + bins, values)
        sig = flat.reshape(m, p)
        empty = sig == _EMPTY
        rows = np.flatnonzero(empty.any(axis=1) & ~empty.all(axis=1))
        if not len(rows):
            return sig
        # Rotation densification: an empty bin takes the value of the next non-empty bin to
        # its right (cyclically), mixed with the distance, so equal sets stay equal.
        sub = sig[rows]
        full = ~empty[rows]
        cols = np.arange(2 * p)
        at = np.where(np.concatenate([full, full], axis=1), cols, 2 * p)
        nxt = np.minimum.accumulate(at[:, ::-1], axis=1)[:, ::-1][:, 1 : p + 1]
        dist = nxt - np.arange(p)  # 1..p-1 for empty bins
        src = np.take_along_axis(sub, nxt % p, axis=1).astype(U64)
        salt = dist.astype(U64) * U64(0x9E3779B97F4A7C15)
        filled = (mix64(src + salt) >> U64(32)).astype(np.uint32)
        sig = sig.copy()
        sig[rows] = np.where(full, sub, filled)
        return sig

    def band_buckets(self, sig: np.ndarray) -> np.ndarray:
        """The LSH bucket of each text in each band, (m, bands) int64."""
        m = len(sig)
        keys = np.empty((m, self.cfg.bands), dtype=U64)
        for b in range(self.cfg.bands):
            acc = np.full(m, mix64(np.array([b + 1], dtype=U64))[0], dtype=U64)
            for r in range(self.cfg.rows):
                acc = mix64(acc ^ sig[:, b * self.cfg.rows + r].astype(U64))
            keys[:, b] = acc
        return (keys >> U64(64 - self._table_bits)).astype(np.int64)

    # ------------------------------------------------------------------ the tick

    def _run(self, batch: Batch) -> _Tick:
        n = len(batch)
        scores = Scores(np.zeros(n), [None] * n, [None] * n)
        tb = tokenize_batch(batch, self.cfg.max_chars)
        ok = np.flatnonzero(tb.lengths >= self.cfg.min_tokens)
        m = len(ok)
        compact = np.full(len(tb.rows), -1, dtype=np.int64)
        compact[ok] = np.arange(m)
        if m:
            shingles, doc = tb.ngrams(self.cfg.shingle)
            keep = compact[doc] >= 0
            sig = self.signatures(shingles[keep], compact[doc[keep]], m)
            buckets = self.band_buckets(sig)
        else:  # a tick of ratings: nothing to hash, only known members to mark
            sig = np.empty((0, self.cfg.num_perm), dtype=np.uint32)
            buckets = np.empty((0, self.cfg.bands), dtype=np.int64)
        tick = _Tick(batch, self._version, scores, sig, buckets, tb.rows[ok], [None] * m)
        tick.next_id = self._next_id
        if m or len(self._members):
            match_j, match_slot = self._match(sig, buckets)
            self._replay(tick, match_j, match_slot)
        return tick

    def _match(self, sig: np.ndarray, buckets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each text, its best earlier match: a text of this tick (j) or an index slot.

        Per band, the candidate is the most recent earlier text of the tick in the same
        bucket if there is one, else what the index holds in that bucket.
        """
        m = len(sig)
        match_j = np.full(m, -1, dtype=np.int64)
        match_slot = np.full(m, -1, dtype=np.int64)
        if m == 0:
            return match_j, match_slot
        horizon = self._watermark - self.cfg.ttl_days * DAY
        prev = np.full((m, self.cfg.bands), -1, dtype=np.int64)
        order_idx = np.arange(m)
        for b in range(self.cfg.bands):
            col = buckets[:, b]
            order = np.lexsort((order_idx, col))
            same = col[order[1:]] == col[order[:-1]]
            prev[order[1:][same], b] = order[:-1][same]
        slots = self._table[np.arange(self.cfg.bands)[None, :], buckets].astype(np.int64)
        from_index = (prev < 0) & (slots >= 0)
        from_index[from_index] = self._ts[slots[from_index]] >= horizon
        sim = np.zeros((m, self.cfg.bands))
        ii, bb = np.nonzero(prev >= 0)
        if len(ii):
            sim[ii, bb] = (sig[prev[ii, bb]] == sig[ii]).mean(axis=1)
        ii, bb = np.nonzero(from_index)
        if len(ii):
            sim[ii, bb] = (self._sig[slots[ii, bb]] == sig[ii]).mean(axis=1)
        best = np.argmax(sim, axis=1)
        rows = np.arange(m)
        good = sim[rows, best] >= self.cfg.threshold
        in_tick = good & (prev[rows, best] >= 0)
        match_j[in_tick] = prev[rows, best][in_tick]
        at_index = good & ~in_tick
        match_slot[at_index] = slots[rows, best][at_index]
        return match_j, match_slot

    def _replay(self, tick: _Tick, match_j: np.ndarray, match_slot: np.ndarray) -> None:
        """Event by event: clusters grow, campaigns open, members' events are marked."""
        batch = tick.batch
        events = batch.events
        text_at = {int(r): j for j, r in enumerate(tick.rows.tolist())}
        matched_j, matched_slot = match_j.tolist(), match_slot.tolist()
        joined: dict[str, int] = {}  # account -> position it became a member in this tick
        for i, event in enumerate(events):
            j = text_at.get(i)
            if j is not None and (matched_j[j] >= 0 or matched_slot[j] >= 0):
                cluster = self._cluster_for(tick, j, matched_j[j], matched_slot[j])
                if cluster is not None:
                    self._grow(tick, i, cluster, joined)
            member = tick.members.get(event.account_id) or self._members._data.get(event.account_id)
            if member is not None and member[1] >= event.ts and tick.scores.scores[i] < 0.5:
                self._mark_member(tick, i, member[0])
        # Events earlier in this tick than the finding: quarantine them now (with ticks of
        # one they would have been released and then revoked by the flag).
        for i, event in enumerate(events):
            if tick.scores.scores[i] >= 0.5:
                continue
            j = text_at.get(i)
            cid = tick.assigned[j] if j is not None else None
            cluster = tick.clusters.get(cid) if cid else None
            if cluster is not None and cluster.on_target(event.item_id):
                self._mark_copy(tick, i, cluster)
                continue
            at = joined.get(event.account_id)
            if at is not None and at > i:
                cid_member = tick.members[event.account_id][0]
                home = self._cluster_view(tick, cid_member)
                first = home.accounts.get(event.account_id, (event.ts, ""))[0] if home else event.ts
                if event.ts >= first - self.cfg.lookback_hours * HOUR:
                    self._mark_member(tick, i, cid_member)

    def _cluster_for(self, tick: _Tick, j: int, mj: int, slot: int) -> _Cluster | None:
        """The cluster text j joins (creating one around its match if needed), or None."""
        if mj >= 0:
            cid = tick.assigned[mj]
            cluster = self._cluster_view(tick, cid) if cid else None
            if cluster is None:
                seed = tick.batch.events[int(tick.rows[mj])]
                cluster = self._new_cluster(tick, seed.account_id, seed.item_id, seed.ts)
                tick.assigned[mj] = cluster.id
        elif slot >= 0:
            cid = tick.slot_clusters.get(slot, self._slot_cluster[slot])
            cluster = self._cluster_view(tick, cid) if cid else None
            if cluster is None:
                cluster = self._new_cluster(
                    tick, self._slot_account[slot], self._slot_item[slot], float(self._ts[slot])
                )
                tick.slot_clusters[slot] = cluster.id
        else:
            return None
        tick.assigned[j] = cluster.id
        return cluster

    def _new_cluster(self, tick: _Tick, account: str, item: str, ts: float) -> _Cluster:
        cluster = _Cluster(f"dup-{tick.next_id}", ts)
        tick.next_id += 1
        cluster.add(account, item, ts)
        tick.clusters[cluster.id] = cluster
        return cluster

    def _cluster_view(self, tick: _Tick, cid: str) -> _Cluster | None:
        """The cluster as this tick sees it: copied on first touch, never changed in place."""
        cluster = tick.clusters.get(cid)
        if cluster is None:
            base = self._clusters._data.get(cid)
            if base is None:
                return None
            cluster = base.copy()
            tick.clusters[cid] = cluster
        return cluster

    def _grow(self, tick: _Tick, i: int, cluster: _Cluster, joined: dict[str, int]) -> None:
        event = tick.batch.events[i]
        cluster.add(event.account_id, event.item_id, event.ts)
        if cluster.opened is None:
            shape = self._shape(cluster)
            if shape is None:
                share = min(1.0, cluster.n_accounts / self.cfg.min_accounts)
                tick.scores.scores[i] = max(tick.scores.scores[i], _NEAR_SCORE * share)
                return
            cluster.opened = (event.ts, shape)
            for account, (first, item) in cluster.accounts.items():
                if cluster.on_target(item):
                    self._join(tick, i, cluster, account, first, joined)
        elif not cluster.on_target(event.item_id):
            tick.scores.scores[i] = max(tick.scores.scores[i], _NEAR_SCORE)
            return
        else:
            first = cluster.accounts.get(event.account_id, (event.ts, ""))[0]
            self._join(tick, i, cluster, event.account_id, first, joined)
        if cluster.on_target(event.item_id):
            self._mark_copy(tick, i, cluster)

    def _shape(self, cluster: _Cluster) -> str | None:
        """Is this cluster a campaign, and of which shape?"""
        top = cluster.top_item()[1]
        focused = top >= 3 and 2 * len(cluster.items) <= cluster.n
        if focused and cluster.n_accounts >= self.cfg.min_accounts:
            return "templated-text"
        if focused and cluster.n_accounts >= 2 and top >= self.cfg.min_item_copies:
            return "single-item"
        if cluster.n_accounts >= self.cfg.spread_accounts:
            recent = cluster.last_ts - self.cfg.spread_hours * HOUR
            if sum(t >= recent for t, _ in cluster.accounts.values()) >= self.cfg.spread_accounts:
                return "spread-template"
        return None

    def _join(
        self,
        tick: _Tick,
        i: int,
        cluster: _Cluster,
        account: str,
        first: float,
        joined: dict[str, int],
    ) -> None:
        """Make ``account`` a member (once) and flag its earlier releases for revocation."""
        current = tick.members.get(account) or self._members._data.get(account)
        until = tick.batch.events[i].ts + self.cfg.member_days * DAY
        if current is not None and current[0] == cluster.id and current[1] >= until:
            return
        if current is None or current[0] != cluster.id:
            since = first - self.cfg.lookback_hours * HOUR
            tick.scores.flagged_accounts.append(
                Flag(account, cluster.id, f"member of {cluster.describe()}", 1.0, since)
            )
            joined.setdefault(account, i)
        tick.members[account] = (cluster.id, until)

    def _mark_copy(self, tick: _Tick, i: int, cluster: _Cluster) -> None:
        tick.scores.scores[i] = _CAMPAIGN_SCORE
        tick.scores.details[i] = f"near-duplicate text; {cluster.describe()}"
        assert tick.scores.campaign_ids is not None
        tick.scores.campaign_ids[i] = cluster.id

    def _mark_member(self, tick: _Tick, i: int, cid: str) -> None:
        cluster = self._cluster_view(tick, cid)
        what = cluster.describe() if cluster else f"near-duplicate campaign {cid}"
        tick.scores.scores[i] = _MEMBER_SCORE
        tick.scores.details[i] = f"event of an account in {what}"
        assert tick.scores.campaign_ids is not None
        tick.scores.campaign_ids[i] = cid

    # ------------------------------------------------------------------ commit

    def _commit(self, tick: _Tick, keep: np.ndarray) -> None:
        """Observed state: every text is recorded, kept or not (see the module docstring)."""
        m = len(tick.sig)
        size = self.cfg.max_entries
        for slot, cid in tick.slot_clusters.items():
            if self._slot_cluster[slot] is None:
                self._slot_cluster[slot] = cid
        if m:
            take = np.arange(max(0, m - size), m)  # more texts than the ring: keep the last
            slots = (self._head + np.arange(len(take))) % size
            self._head = int((self._head + len(take)) % size)
            self._sig[slots] = tick.sig[take]
            rows = tick.rows[take]
            self._ts[slots] = tick.batch.ts[rows]
            events = tick.batch.events
            for slot, j, r in zip(slots.tolist(), take.tolist(), rows.tolist(), strict=True):
                self._slot_cluster[slot] = tick.assigned[j]
                self._slot_account[slot] = events[r].account_id
                self._slot_item[slot] = events[r].item_id
            for b in range(self.cfg.bands):
                keys = tick.buckets[take, b][::-1]
                uniq, last = np.unique(keys, return_index=True)
                self._table[b, uniq] = slots[::-1][last]
        for cid, cluster in tick.clusters.items():
            self._clusters.put(cid, cluster)
        for account, member in tick.members.items():
            self._members.put(account, member)
        self._next_id = tick.next_id
        if len(tick.batch):
            self._expire(float(tick.batch.ts.max()))
        self._version += 1

    def _expire(self, now: float) -> None:
        self._watermark = max(self._watermark, now)
        horizon = self._watermark - self.cfg.ttl_days * DAY

        def stale(cluster: _Cluster) -> bool:
            if cluster.last_ts >= horizon:
                return False
            if cluster.opened:  # keep the last closed campaigns for review
                self._closed.append(self._campaign(cluster, closed=True))
                del self._closed[:-100]
            return True

        self._clusters.expire(stale)
        self._members.expire(lambda member: member[1] < self._watermark)

    def _campaign(self, cluster: _Cluster, closed: bool = False) -> Campaign:
        opened_ts, shape = cluster.opened or (cluster.last_ts, "near-duplicate")
        return Campaign(
            id=cluster.id,
            detector=self.name,
            side=shape,
            targets=dict.fromkeys(cluster.items, cluster.first_ts),
            members={account: ts for account, (ts, _) in cluster.accounts.items()},
            start_ts=cluster.first_ts,
            last_ts=cluster.last_ts,
            opened_ts=opened_ts,
            score=_CAMPAIGN_SCORE,
            evidence={"texts": float(cluster.n), "accounts": float(cluster.n_accounts)},
            closed=closed,
        )
