"""Label flips: accounts whose labels keep contradicting what their texts say.

What it looks for. A label-flipping ring gives ordinary texts the wrong label (a
negative review snippet marked "positive"), or a rating that contradicts the review's
words. One contradiction means little (honest users mislabel a few percent of texts, and
any text model errs), but an account whose confidently judged texts are contradicted
again and again is flipping on purpose.

How. A :class:`~streamguard.detectors.text_model.TextModel` (one per label group:
``label`` events, ``vote`` events, reviews by rating side; see
:class:`~streamguard.text.LabelSpace`) learns once per tick from kept events only, so
flipped labels that are caught never teach it.

The model rehearses its first ``REHEARSE_WARMUPS * warmup`` texts (see
:class:`~streamguard.detectors.text_model.TextModel`): a ring that starts with the stream
meets a model that is still learning, and every text judged by a weak model is evidence
lost. (Judging the texts of the cold period later does not work: by then the model has
learned them, flipped labels included, and they read as agreements.)

A labelled text is *judged* when its group's model is warm; it *contradicts* when the
model gives its label less than ``1 - confidence``. Each account keeps a CUSUM-style
sequential test on its judged texts: a contradiction adds ``log(p1/p0)``, an agreement
adds ``log((1-p1)/(1-p0))`` (floored at ``floor`` so a long honest past cannot hide a
later switch), where ``p0`` is the benign contradiction rate (learned online from kept
events, bounded below by ``min_p0``) and ``p1 = flip_rate``. When it passes
``threshold`` nats with at least ``min_flips`` contradictions, the account is flagged:
its later label, vote and review events are quarantined for ``member_days`` (its ratings
are not evidence of flipping and pass), and the pipeline revokes its released labels,
votes and reviews (not its ratings) from ``member_days`` before its first judged text
(what it sent before the model was warm enough to judge it), as far back as the
pipeline's revocation window reaches. A *ring* is the accounts flagged while sharing an
IP address or a device; an account that shares one with a flagged account needs only
``ring_threshold`` nats, and from the likelihood ratio of its whole record (its
contradiction rate against ``p0``) rather than from the sequential test: an account met
before the ring was found is looked at again when it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from streamguard.detectors.base import Batch, Flag, Scores
from streamguard.detectors.planned import PlannedDetector
from streamguard.detectors.text_model import TextModel
from streamguard.features import LRUTable
from streamguard.text import (
    LabelledTextSettings,
    LabelSpace,
    doc_features,
    tokenize_batch,
)

DAY = 86400.0
REHEARSE_WARMUPS = 10  # the model rehearses until it has learned this many warmups of texts

# What a flag holds and revokes: feedback with a label to flip. Ratings pass.
FLIPPABLE = frozenset({"label", "vote", "review"})


class LabelFlipSettings(LabelledTextSettings):
    """Settings of :class:`LabelFlipDetector` (see the module docstring)."""

    bits: int = Field(18, ge=8, le=24)
    lr: float = Field(0.5, gt=0)
    warmup: int = Field(300, ge=0)
    confidence: float = Field(0.8, gt=0.5, lt=1.0)
    flip_rate: float = Field(0.5, gt=0.0, lt=1.0)
    min_p0: float = Field(0.02, gt=0.0, lt=0.5)
    max_p0: float = Field(0.15, gt=0.0, lt=0.5)
    threshold: float = Field(5.0, gt=0)
    ring_threshold: float = Field(3.0, gt=0)
    floor: float = Field(-6.9, le=0)
    hysteresis: float = Field(2.0, ge=0)
    min_flips: int = Field(3, ge=1)
    member_days: float = Field(30.0, ge=0)
    ttl_days: float = Field(30.0, gt=0)
    max_accounts: int = Field(500_000, ge=1)
    max_shared: int = Field(100_000, ge=1)


class _Account:
    """An account's sequential test on its judged labels."""

    __slots__ = (
        "llr",
        "judged",
        "contra",
        "first_ts",
        "last_ts",
        "ip",
        "device",
        "ring",
        "until",
    )

    def __init__(self, ts: float) -> None:
        self.llr = 0.0
        self.judged = 0
        self.contra = 0
        self.first_ts = ts
        self.last_ts = ts
        self.ip: str | None = None
        self.device: str | None = None
        self.ring: str | None = None  # set once flagged
        self.until = -math.inf

    def copy(self) -> _Account:
        other = _Account(self.first_ts)
        for name in self.__slots__:
            setattr(other, name, getattr(self, name))
        return other


@dataclass
class _Ring:
    id: str
    first_ts: float
    last_ts: float
    members: dict[str, float] = field(default_factory=dict)  # account -> flagged at

    def copy(self) -> _Ring:
        return _Ring(self.id, self.first_ts, self.last_ts, dict(self.members))


@dataclass
class _Tick:
    batch: Batch
    version: int
    scores: Scores
    feats: np.ndarray
    doc: np.ndarray
    rows: np.ndarray
    keys: list[tuple[str, str] | None]
    judged: np.ndarray
    contra: np.ndarray
    p_label: np.ndarray
    accounts: dict[str, _Account] = field(default_factory=dict)
    rings: dict[str, _Ring] = field(default_factory=dict)
    shared: dict[str, str] = field(default_factory=dict)  # "ip:x"/"dev:y" -> ring id
    sharers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "ip:x" -> accounts
    proba: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    next_id: int = 0


class LabelFlipDetector(PlannedDetector["_Tick", LabelFlipSettings]):
    """Decisive detector for accounts and rings whose labels contradict their texts.

    Parameters are those of :class:`LabelFlipSettings`.

    >>> LabelFlipDetector(bits=10).name
    'label_flip'
    """

    name = "label_flip"
    # The event attributes it reads: all it is sent in a second process (offload.py).
    EVENT_FIELDS = ("account_id", "device_id", "ip", "kind", "label", "rating", "ts", "text")

    settings_type = LabelFlipSettings

    def _setup(self) -> None:
        """Cross-field checks (each field is checked by the settings) and initial state."""
        c = self.cfg
        if not c.min_p0 <= c.max_p0 < c.flip_rate:
            raise ValueError("need min_p0 <= max_p0 < flip_rate")

        self._space = LabelSpace(32, self.positive_rating, self.negative_rating, c.aliases)
        self._model = TextModel(c.bits, c.lr, rehearse=REHEARSE_WARMUPS * c.warmup)
        self._accounts: LRUTable[_Account] = LRUTable(c.max_accounts)
        self._shared: LRUTable[str] = LRUTable(c.max_shared)
        self._sharers: LRUTable[tuple[str, ...]] = LRUTable(c.max_shared)
        self._rings: dict[str, _Ring] = {}
        self._judged = 0.0  # decayed counts of kept judged texts, and of their contradictions
        self._contra = 0.0
        self._next_id = 1
        self._watermark = -math.inf

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Checkpoints from before ring links load with no account remembered per IP."""
        self._sharers = LRUTable(state["cfg"].max_shared)
        self.__dict__.update(state)

    @property
    def p0(self) -> float:
        """The benign contradiction rate the test assumes."""
        rate = self._contra / self._judged if self._judged > 0 else self.cfg.min_p0
        return min(max(rate, self.cfg.min_p0), self.cfg.max_p0)

    def rings(self) -> list[tuple[str, list[str]]]:
        """Rings found: id and member accounts."""
        return [(r.id, sorted(r.members)) for r in self._rings.values()]

    # ------------------------------------------------------------------ the tick

    def _run(self, batch: Batch) -> _Tick:
        n = len(batch)
        scores = Scores(np.zeros(n), [None] * n, [None] * n)
        tb = tokenize_batch(batch, self.cfg.max_chars)
        feats, doc, _ = doc_features(tb, 2)
        events = batch.events
        keys = [self._space.key(events[r].kind, events[r].label, events[r].rating) for r in tb.rows]
        m = len(tb.rows)
        tick = _Tick(batch, self._version, scores, feats, doc, tb.rows, keys,
                     np.zeros(m, dtype=bool), np.zeros(m, dtype=bool), np.ones(m))  # fmt: skip
        tick.next_id = self._next_id
        self._judge(tick)
        self._replay(tick)
        return tick

    def _group_docs(self, tick: _Tick, cls: np.ndarray) -> dict[str, np.ndarray]:
        groups: dict[str, list[int]] = {}
        for j, c in enumerate(cls.tolist()):
            if c >= 0:
                groups.setdefault(self._space.group_of(c), []).append(j)
        return {g: np.asarray(js, dtype=np.int64) for g, js in groups.items()}

    def _subset(self, tick: _Tick, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The grams of texts ``docs``, with the texts renumbered 0..len(docs)-1."""
        remap = np.full(len(tick.rows), -1, dtype=np.int64)
        remap[docs] = np.arange(len(docs))
        sel = remap[tick.doc] >= 0
        return tick.feats[sel], remap[tick.doc[sel]]

    def _judge(self, tick: _Tick) -> None:
        cls = self._space.classes(tick.keys)
        for group, docs in self._group_docs(tick, cls).items():
            members = self._space.members(group)
            if self._model.seen.get(group, 0) < self.cfg.warmup or len(members) < 2:
                continue
            feats, doc = self._subset(tick, docs)
            p = self._model.proba(group, members, feats, doc, len(docs))
            tick.proba[group] = (docs, p)
            col = {c: i for i, c in enumerate(members[: p.shape[1]])}
            known = np.fromiter((col.get(int(c), -1) for c in cls[docs]), np.int64, len(docs))
            ok = known >= 0
            p_label = p[np.flatnonzero(ok), known[ok]]
            tick.judged[docs[ok]] = True
            tick.p_label[docs[ok]] = p_label
            tick.contra[docs[ok]] = p_label < 1.0 - self.cfg.confidence

    def _replay(self, tick: _Tick) -> None:
        """Event by event: update the accounts' tests, flag, quarantine flagged accounts.

        A flagged account's later labels (not its ratings) are quarantined while its test
        stays within ``hysteresis`` nats of the threshold: a ring keeps flipping and stays
        out, an honest account flagged by bad luck is let back in after a few agreements.
        """
        events = tick.batch.events
        text_at = {int(r): j for j, r in enumerate(tick.rows.tolist())}
        keep_out = self.cfg.threshold - self.cfg.hysteresis
        steps = self._steps()
        flagged_at: dict[str, int] = {}
        for i, event in enumerate(events):
            j = text_at.get(i)
            if j is not None and tick.judged[j]:
                contradicts = bool(tick.contra[j])
                acc = self._observe(
                    tick, event.account_id, event.ts, event.ip, event.device_id, contradicts,
                    steps[contradicts],
                )  # fmt: skip
                if acc.ring is None:
                    ring = self._decide(tick, acc)
                    if ring is not None:
                        for account in self._flag(tick, i, event.account_id, acc, ring, event.ts):
                            flagged_at.setdefault(account, i)
                        continue
                    if contradicts:
                        rank = 0.45 * min(1.0, max(acc.llr, 0.0) / self.cfg.threshold)
                        tick.scores.scores[i] = max(tick.scores.scores[i], rank)
            if event.kind not in FLIPPABLE:  # a flagged account's labels, not its ratings
                continue
            view = self._view(tick, event.account_id)
            if (
                view is not None
                and view.ring is not None
                and view.until >= event.ts
                and view.llr >= keep_out
            ):
                self._mark(tick, i, view, 0.9)
        if not flagged_at:
            return
        for i, event in enumerate(events):  # events of this tick before the finding
            at = flagged_at.get(event.account_id)
            if (
                at is not None
                and i < at
                and event.kind in FLIPPABLE
                and tick.scores.scores[i] < 0.5
            ):
                acc = tick.accounts[event.account_id]
                if event.ts >= acc.first_ts:
                    self._mark(tick, i, acc, 0.9)

    def _observe(
        self,
        tick: _Tick,
        account: str,
        ts: float,
        ip: str | None,
        device: str | None,
        contradicts: bool,
        step: float,
    ) -> _Account:
        """One judged text of ``account`` into its sequential test (``step``: its
        :meth:`_steps` term)."""
        acc = self._touch(tick, account, ts)
        acc.last_ts = max(acc.last_ts, ts)
        acc.ip = ip or acc.ip
        acc.device = device or acc.device
        acc.judged += 1
        if contradicts:
            acc.contra += 1
        acc.llr = max(acc.llr + step, self.cfg.floor)
        for key in _shared_keys(acc):
            sharers = self._sharers_of(tick, key)
            if account not in sharers:
                tick.sharers[key] = (*sharers[1 - SHARERS :], account)
        return acc

    def _steps(self) -> tuple[float, float]:
        """The test's terms for an agreement and a contradiction, under the tick's ``p0``
        (learned at commit, so one pair serves the whole tick)."""
        p0, flip_rate = self.p0, self.cfg.flip_rate
        return math.log((1.0 - flip_rate) / (1.0 - p0)), math.log(flip_rate / p0)

    def _sharers_of(self, tick: _Tick, key: str) -> tuple[str, ...]:
        found = tick.sharers.get(key)
        return found if found is not None else self._sharers._data.get(key, ())

    def _decide(self, tick: _Tick, acc: _Account) -> str | None:
        """The ring this account is flagged into (a new id if alone), or None."""
        if acc.contra < self.cfg.min_flips and acc.llr < self.cfg.threshold:
            return None
        near = self._near_ring(tick, acc)
        if acc.llr >= self.cfg.threshold and acc.contra >= self.cfg.min_flips:
            return near or f"flip-{tick.next_id}"
        if near is not None and self._joins_ring(acc):
            return near
        return None

    def _joins_ring(self, acc: _Account) -> bool:
        """Enough evidence for an account linked to a ring (not enough on its own).

        The whole-history likelihood ratio of its contradiction rate against ``p0``, not
        the sequential test: a ring member met before its ring was found may have flipped
        too sparsely for the test, whose floor forgets, but its record still counts.
        """
        return (
            acc.contra >= 2 and rate_llr(acc.contra, acc.judged, self.p0) >= self.cfg.ring_threshold
        )

    def _near_ring(self, tick: _Tick, acc: _Account) -> str | None:
        for key in _shared_keys(acc):
            ring = tick.shared.get(key) or self._shared._data.get(key)
            if ring is not None:
                return ring
        return None

    def _flag(
        self, tick: _Tick, i: int | None, account: str, acc: _Account, ring_id: str, ts: float
    ) -> list[str]:
        """Flag ``account`` into the ring, then the accounts it shares an IP or device with
        that have enough evidence to join it (:meth:`_joins_ring`); returns all flagged.

        ``i``: the event that decided, quarantined with the finding (None: a linked account).
        """
        ring = tick.rings.get(ring_id)
        if ring is None:
            base = self._rings.get(ring_id)
            ring = base.copy() if base is not None else _Ring(ring_id, ts, ts)
            tick.rings[ring_id] = ring
            if base is None:
                tick.next_id += 1
        ring.members[account] = ts
        ring.last_ts = max(ring.last_ts, ts)
        acc.ring = ring_id
        acc.until = ts + self.cfg.member_days * DAY
        if i is not None:
            self._mark(tick, i, acc, 1.0)
        detail = (tick.scores.details[i] if i is not None else None) or self._detail(acc)
        since = acc.first_ts - self.cfg.member_days * DAY  # its texts before the model judged
        tick.scores.flagged_accounts.append(Flag(account, ring_id, detail, 1.0, since, FLIPPABLE))
        flagged = [account]
        for key in _shared_keys(acc):
            tick.shared[key] = ring_id
            for other in self._sharers_of(tick, key):
                view = self._view(tick, other)
                if view is not None and view.ring is None and self._joins_ring(view):
                    linked = self._touch(tick, other, ts)
                    flagged += self._flag(tick, None, other, linked, ring_id, ts)
        return flagged

    def _mark(self, tick: _Tick, i: int, acc: _Account, score: float) -> None:
        ring = tick.rings.get(acc.ring or "") or self._rings.get(acc.ring or "")
        size = len(ring.members) if ring is not None else 1
        who = f"ring {acc.ring} ({size} accounts)" if size > 1 else f"case {acc.ring}"
        tick.scores.scores[i] = max(tick.scores.scores[i], score)
        tick.scores.details[i] = f"{self._detail(acc)}; {who}"
        assert tick.scores.campaign_ids is not None
        tick.scores.campaign_ids[i] = acc.ring

    def _detail(self, acc: _Account) -> str:
        return (
            f"account labels against the content: {acc.contra} of its {acc.judged} judged "
            f"labels contradict what the text says (honest rate ~{self.p0:.0%})"
        )

    def _view(self, tick: _Tick, account: str) -> _Account | None:
        acc = tick.accounts.get(account)
        return acc if acc is not None else self._accounts._data.get(account)

    def _touch(self, tick: _Tick, account: str, ts: float) -> _Account:
        """The account for this tick: copied on first touch, never changed in place."""
        acc = tick.accounts.get(account)
        if acc is None:
            base = self._accounts._data.get(account)
            acc = base.copy() if base is not None else _Account(ts)
            tick.accounts[account] = acc
        return acc

    # ------------------------------------------------------------------ commit

    def _commit(self, tick: _Tick, keep: np.ndarray) -> None:
        for account, acc in tick.accounts.items():
            self._accounts.put(account, acc)
        for ring_id, ring in tick.rings.items():
            self._rings[ring_id] = ring
        for key, ring_id in tick.shared.items():
            self._shared.put(key, ring_id)
        for key, accounts in tick.sharers.items():
            self._sharers.put(key, accounts)
        self._next_id = tick.next_id
        self._space.register(tick.keys)
        cls = self._space.classes(tick.keys)
        kept = keep[tick.rows] if len(tick.rows) else np.zeros(0, dtype=bool)
        judged = tick.judged & kept
        self._judged = self._judged * 0.999 ** len(tick.rows) + float(judged.sum())
        self._contra = self._contra * 0.999 ** len(tick.rows) + float((judged & tick.contra).sum())
        for group, docs in self._group_docs(tick, np.where(kept, cls, -1)).items():
            feats, doc = self._subset(tick, docs)
            members = self._space.members(group)
            scored = tick.proba.get(group)
            p = None
            if scored is not None and scored[1].shape[1] == min(
                len(members), self._model.max_classes
            ):
                at = np.minimum(np.searchsorted(scored[0], docs), len(scored[0]) - 1)
                if np.array_equal(scored[0][at], docs):
                    p = scored[1][at]  # scored with the same weights: no second pass
            self._model.learn(group, members, feats, doc, cls[docs], p)
        if len(tick.batch):
            self._expire(float(tick.batch.ts.max()))
        self._version += 1

    def _expire(self, now: float) -> None:
        self._watermark = max(self._watermark, now)
        horizon = self._watermark - self.cfg.ttl_days * DAY
        self._accounts.expire(lambda a: a.last_ts < horizon and a.until < self._watermark)
        for ring_id in [r.id for r in self._rings.values() if r.last_ts < horizon]:
            del self._rings[ring_id]


SHARERS = 8  # accounts remembered per IP address or device, the latest


def _shared_keys(acc: _Account) -> list[str]:
    """The keys an account shares with others: its IP address and its device."""
    keys = [f"ip:{acc.ip}"] if acc.ip else []
    return keys + ([f"dev:{acc.device}"] if acc.device else [])


def rate_llr(k: int, n: int, p0: float) -> float:
    """Log-likelihood ratio of ``k`` contradictions in ``n`` texts at their own rate vs ``p0``.

    Zero unless the rate is above ``p0`` (one-sided: agreeing more than honest users do
    is no evidence of anything).

    >>> round(rate_llr(6, 24, 0.05), 2), rate_llr(1, 24, 0.05)
    (5.4, 0.0)
    """
    if n == 0 or k <= n * p0:
        return 0.0
    rate = k / n
    kept = (n - k) * math.log((1.0 - rate) / (1.0 - p0)) if k < n else 0.0
    return k * math.log(rate / p0) + kept
