"""Label flips: accounts whose labels keep contradicting what their texts say.

What it looks for. A label-flipping ring gives ordinary texts the wrong label (a
negative review snippet marked "positive"), or a rating that contradicts the review's
words. One contradiction means little (honest users mislabel a few percent of texts, and
any text model errs), but an account whose confidently judged texts are contradicted
again and again is flipping on purpose.

How. :class:`TextModel` is an online softmax regression over hashed word and word-pair
presence, one per label group (``label`` events, ``vote`` events, reviews by rating side;
see :class:`~streamguard.text.LabelSpace`), trained with AdaGrad once per tick on kept
events only, so flipped labels that are caught never teach it. River's linear models
would do the same one event at a time at a few tens of microseconds per event, which the
10,000 reviews/s budget cannot pay; this one is vectorised over the tick.

A labelled text is *judged* when its group's model is warm; it *contradicts* when the
model gives its label less than ``1 - confidence``. Each account keeps a CUSUM-style
sequential test on its judged texts: a contradiction adds ``log(p1/p0)``, an agreement
adds ``log((1-p1)/(1-p0))`` (floored at ``floor`` so a long honest past cannot hide a
later switch), where ``p0`` is the benign contradiction rate (learned online from kept
events, bounded below by ``min_p0``) and ``p1 = flip_rate``. When it passes
``threshold`` nats with at least ``min_flips`` contradictions, the account is flagged:
its later label, vote and review events are quarantined for ``member_days`` (its
ratings are not evidence of flipping and pass), and the pipeline revokes its releases
since its first judged text. A *ring* is the accounts flagged while sharing an IP address or
a device; an account that shares one with a flagged account needs only
``ring_threshold`` nats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from streamguard.detectors.base import Batch, Flag, Scores
from streamguard.features import LRUTable
from streamguard.text import (
    DEFAULT_MAX_CHARS,
    U64,
    LabelSpace,
    doc_features,
    tokenize_batch,
)

DAY = 86400.0


class TextModel:
    """Online softmax regression on hashed gram presence, one model per label group.

    Features are the distinct words and word pairs of a text (hashes from
    :func:`streamguard.text.doc_features`), each of value ``1/sqrt(n_grams)`` so long and
    short texts are judged on one scale. ``2**bits`` weight rows per group, at most
    ``max_classes`` columns (the group's first classes); AdaGrad steps of ``lr``.

    >>> import numpy as np
    >>> model = TextModel(bits=10)
    >>> feats = np.array([1, 2, 3, 4], dtype=np.uint64) << np.uint64(54)
    >>> doc = np.array([0, 0, 1, 1])
    >>> for _ in range(20):
    ...     model.learn("label", [7, 8], feats, doc, np.array([7, 8]))
    >>> p = model.proba("label", [7, 8], feats, doc, 2)
    >>> [round(float(x), 2) for x in p[:, 0]]
    [0.98, 0.02]
    """

    def __init__(
        self,
        bits: int = 18,
        lr: float = 0.5,
        max_classes: int = 4,
        balanced: bool = True,
        step: int = 128,
    ) -> None:
        if not 8 <= bits <= 24:
            raise ValueError(f"bits must be in 8..24, got {bits}")
        if lr <= 0 or max_classes < 2 or step < 1:
            raise ValueError("need lr > 0, max_classes >= 2 and step >= 1")
        self.bits = bits
        self.lr = lr
        self.max_classes = max_classes
        self.balanced = balanced
        self.step = step
        self._counts: dict[str, np.ndarray] = {}
        self._n: dict[str, np.ndarray] = {}  # texts learned per weight row
        self._w: dict[str, np.ndarray] = {}
        self._g: dict[str, np.ndarray] = {}
        self._b: dict[str, np.ndarray] = {}
        self._gb: dict[str, np.ndarray] = {}
        self.seen: dict[str, int] = {}

    def _rows(self, feats: np.ndarray) -> np.ndarray:
        return (feats >> U64(64 - self.bits)).astype(np.int64)

    def familiar(self, group: str, feats: np.ndarray, min_seen: int) -> np.ndarray:
        """Which grams the group's model learned from at least ``min_seen`` texts."""
        n = self._n.get(group)
        if n is None:
            return np.zeros(len(feats), dtype=bool)
        return n[self._rows(feats)] >= min_seen

    def logits(
        self,
        group: str,
        members: Sequence[int],
        feats: np.ndarray,
        doc: np.ndarray,
        m: int,
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """(m, k) logits over the group's first k classes; grams with ``mask`` false ignored.

        ``doc`` (sorted) maps each gram to its text 0..m-1.
        """
        k = min(len(members), self.max_classes)
        out = np.zeros((m, k))
        w = self._w.get(group)
        if w is None or k == 0:
            return out
        counts = np.bincount(doc, minlength=m)
        scale = 1.0 / np.sqrt(np.maximum(counts, 1))
        use = np.ones(len(feats), dtype=bool) if mask is None else mask
        rows = self._rows(feats[use])
        contrib = np.take(w, rows, axis=0)[:, :k] * scale[doc[use], None]
        for c in range(k):
            out[:, c] = np.bincount(doc[use], weights=contrib[:, c], minlength=m)
        return out + self._b[group][:k]

    def proba(
        self,
        group: str,
        members: Sequence[int],
        feats: np.ndarray,
        doc: np.ndarray,
        m: int,
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        z = self.logits(group, members, feats, doc, m, mask)
        if z.shape[1] == 0:
            return z
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def learn(
        self,
        group: str,
        members: Sequence[int],
        feats: np.ndarray,
        doc: np.ndarray,
        cls: np.ndarray,
        proba: np.ndarray | None = None,
    ) -> None:
        """AdaGrad steps on the texts ``0..len(cls)-1`` (classes ``cls``), ``step`` at a time.

        Small steps keep learning close to one text at a time whatever the tick size: one
        AdaGrad step over a whole big tick would move every weight by about ``lr`` and leave
        a young model overconfident. ``proba``: the model's probabilities for these texts
        if already computed with the current weights, to save the first pass. Texts whose
        class is not among the group's first ``max_classes`` are skipped.
        """
        m = len(cls)
        if m <= self.step:
            self._step(group, members, feats, doc, cls, proba)
            return
        bounds = np.searchsorted(doc, np.arange(0, m + self.step, self.step))
        for n, start in enumerate(range(0, m, self.step)):
            lo, hi = bounds[n], bounds[n + 1]
            part = cls[start : start + self.step]
            p = proba[start : start + self.step] if proba is not None and n == 0 else None
            self._step(group, members, feats[lo:hi], doc[lo:hi] - start, part, p)

    def _step(
        self,
        group: str,
        members: Sequence[int],
        feats: np.ndarray,
        doc: np.ndarray,
        cls: np.ndarray,
        proba: np.ndarray | None,
    ) -> None:
        k = min(len(members), self.max_classes)
        col = {c: i for i, c in enumerate(members[:k])}
        target = np.fromiter((col.get(int(c), -1) for c in cls), np.int64, len(cls))
        if k < 2 or not (target >= 0).any():
            return
        if group not in self._w:
            size = 1 << self.bits
            cols = self.max_classes
            self._w[group] = np.zeros((size, cols), dtype=np.float32)
            self._g[group] = np.full((size, cols), 1e-2, dtype=np.float32)
            self._b[group] = np.zeros(cols)
            self._gb[group] = np.full(cols, 1e-2)
            self._n[group] = np.zeros(size, dtype=np.int32)
        m = len(cls)
        p = self.proba(group, members, feats, doc, m) if proba is None else proba
        grad = p[:, :k].copy()
        ok = target >= 0
        grad[np.flatnonzero(ok), target[ok]] -= 1.0
        grad[~ok] = 0.0
        if self.balanced:
            # Weight each class by the inverse of its share so far: the model judges
            # content, not how common a label is (a rare class must still be recognised).
            counts = self._counts.setdefault(group, np.zeros(self.max_classes))
            counts[:k] += np.bincount(target[ok], minlength=k)
            share = counts[:k] / counts[:k].sum()
            weight = np.where(ok, 1.0 / (k * np.maximum(share[np.maximum(target, 0)], 0.02)), 0.0)
            grad *= weight[:, None]
        counts = np.bincount(doc, minlength=m)
        scale = 1.0 / np.sqrt(np.maximum(counts, 1))
        rows = self._rows(feats)
        np.add.at(
            self._n[group], rows, np.ones(len(rows), dtype=np.int32)
        )  # not a scalar: 25x faster
        # AdaGrad per occurrence (a row repeated within a tick takes one step per text):
        # flat indices over the first k columns avoid a sort for summing duplicates.
        cols = self.max_classes
        flat = (rows[:, None] * cols + np.arange(k)).ravel()
        g = (grad[doc] * scale[doc, None]).astype(np.float32).ravel()
        w, acc = self._w[group].reshape(-1), self._g[group].reshape(-1)
        np.add.at(acc, flat, g * g)
        np.add.at(w, flat, -self.lr * g / np.sqrt(np.take(acc, flat)))
        gb = grad.sum(axis=0)
        self._gb[group][:k] += gb**2
        self._b[group][:k] -= self.lr * gb / np.sqrt(self._gb[group][:k])
        self.seen[group] = self.seen.get(group, 0) + int(ok.sum())


class LabelFlipSettings(BaseModel):
    """Settings of :class:`LabelFlipDetector` (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
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
    # Rating sides that count as positive / negative sentiment; None: the top and bottom
    # quarters of the pipeline's rating scale (4 and 2 on 1..5).
    positive_rating: float | None = None
    negative_rating: float | None = None
    aliases: dict[str, str] | None = None
    max_chars: int = Field(DEFAULT_MAX_CHARS, ge=16)


class _Account:
    """An account's sequential test on its judged labels."""

    __slots__ = ("llr", "judged", "contra", "first_ts", "last_ts", "ip", "device", "ring", "until")

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
    proba: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    next_id: int = 0


class LabelFlipDetector:
    """Decisive detector for accounts and rings whose labels contradict their texts.

    Parameters are those of :class:`LabelFlipSettings`.

    >>> LabelFlipDetector(bits=10).name
    'label_flip'
    """

    name = "label_flip"

    def __init__(
        self,
        bits: int = 18,
        lr: float = 0.5,
        warmup: int = 300,
        confidence: float = 0.8,
        flip_rate: float = 0.5,
        min_p0: float = 0.02,
        max_p0: float = 0.15,
        threshold: float = 5.0,
        ring_threshold: float = 3.0,
        floor: float = -6.9,
        hysteresis: float = 2.0,
        min_flips: int = 3,
        member_days: float = 30.0,
        ttl_days: float = 30.0,
        max_accounts: int = 500_000,
        max_shared: int = 100_000,
        positive_rating: float = 4.0,
        negative_rating: float = 2.0,
        aliases: dict[str, str] | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        if not 0.5 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
        if not 0.0 < min_p0 <= max_p0 < flip_rate < 1.0:
            raise ValueError("need 0 < min_p0 <= max_p0 < flip_rate < 1")
        if threshold <= 0 or ring_threshold <= 0 or floor > 0 or min_flips < 1:
            raise ValueError("need threshold, ring_threshold > 0, floor <= 0, min_flips >= 1")
        if warmup < 0 or member_days < 0 or ttl_days <= 0:
            raise ValueError("need warmup >= 0, member_days >= 0, ttl_days > 0")
        if max_accounts < 1 or max_shared < 1 or max_chars < 16:
            raise ValueError("need max_accounts, max_shared >= 1 and max_chars >= 16")
        self.bits = bits
        self.lr = lr
        self.warmup = warmup
        self.confidence = confidence
        self.flip_rate = flip_rate
        self.min_p0 = min_p0
        self.max_p0 = max_p0
        self.threshold = threshold
        self.ring_threshold = ring_threshold
        self.floor = floor
        self.hysteresis = hysteresis
        self.min_flips = min_flips
        self.member_days = member_days
        self.ttl_days = ttl_days
        self.max_accounts = max_accounts
        self.max_shared = max_shared
        self.positive_rating = positive_rating
        self.negative_rating = negative_rating
        self.aliases = aliases
        self.max_chars = max_chars

        self._space = LabelSpace(32, positive_rating, negative_rating, aliases)
        self._model = TextModel(bits, lr)
        self._accounts: LRUTable[_Account] = LRUTable(max_accounts)
        self._shared: LRUTable[str] = LRUTable(max_shared)
        self._rings: dict[str, _Ring] = {}
        self._judged = 0.0  # decayed counts of kept judged texts, and of their contradictions
        self._contra = 0.0
        self._next_id = 1
        self._watermark = -math.inf
        self._version = 0
        self._pending: _Tick | None = None

    @classmethod
    def from_settings(
        cls, settings: LabelFlipSettings, rating_low: float = 1.0, rating_high: float = 5.0
    ) -> LabelFlipDetector:
        """The detector the settings describe, on the pipeline's rating scale."""
        knobs = settings.model_dump(exclude={"enabled"})
        span = rating_high - rating_low
        if knobs["positive_rating"] is None:
            knobs["positive_rating"] = rating_low + 0.75 * span
        if knobs["negative_rating"] is None:
            knobs["negative_rating"] = rating_low + 0.25 * span
        return cls(**knobs)

    # ------------------------------------------------------------------ protocol

    def score_batch(self, batch: Batch) -> Scores:
        tick = self._run(batch)
        self._pending = tick
        return tick.scores

    def learn_batch(self, batch: Batch, keep: np.ndarray) -> None:
        tick = self._pending
        if tick is None or tick.batch is not batch or tick.version != self._version:
            tick = self._run(batch)
        self._pending = None
        self._commit(tick, np.asarray(keep, dtype=bool))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pending"] = None
        return state

    @property
    def p0(self) -> float:
        """The benign contradiction rate the test assumes."""
        rate = self._contra / self._judged if self._judged > 0 else self.min_p0
        return min(max(rate, self.min_p0), self.max_p0)

    def rings(self) -> list[tuple[str, list[str]]]:
        """Rings found: id and member accounts."""
        return [(r.id, sorted(r.members)) for r in self._rings.values()]

    # ------------------------------------------------------------------ the tick

    def _run(self, batch: Batch) -> _Tick:
        n = len(batch)
        scores = Scores(np.zeros(n), [None] * n, [None] * n)
        tb = tokenize_batch(batch, self.max_chars)
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
            if self._model.seen.get(group, 0) < self.warmup or len(members) < 2:
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
            tick.contra[docs[ok]] = p_label < 1.0 - self.confidence

    def _replay(self, tick: _Tick) -> None:
        """Event by event: update the accounts' tests, flag, quarantine flagged accounts.

        A flagged account's later labels (not its ratings) are quarantined while its test
        stays within ``hysteresis`` nats of the threshold: a ring keeps flipping and stays
        out, an honest account flagged by bad luck is let back in after a few agreements.
        """
        events = tick.batch.events
        text_at = {int(r): j for j, r in enumerate(tick.rows.tolist())}
        up = math.log(self.flip_rate / self.p0)
        down = math.log((1.0 - self.flip_rate) / (1.0 - self.p0))
        keep_out = self.threshold - self.hysteresis
        flagged_at: dict[str, int] = {}
        for i, event in enumerate(events):
            j = text_at.get(i)
            if j is not None and tick.judged[j]:
                acc = self._touch(tick, event.account_id, event.ts)
                acc.last_ts = max(acc.last_ts, event.ts)
                acc.ip = event.ip or acc.ip
                acc.device = event.device_id or acc.device
                acc.judged += 1
                if tick.contra[j]:
                    acc.contra += 1
                acc.llr = max(acc.llr + (up if tick.contra[j] else down), self.floor)
                if acc.ring is None:
                    ring = self._decide(tick, acc)
                    if ring is not None:
                        self._flag(tick, i, event.account_id, acc, ring)
                        flagged_at[event.account_id] = i
                        continue
                    if tick.contra[j]:
                        rank = 0.45 * min(1.0, max(acc.llr, 0.0) / self.threshold)
                        tick.scores.scores[i] = max(tick.scores.scores[i], rank)
            view = self._view(tick, event.account_id)
            if (
                event.kind != "rating"  # a flagged account's labels, not its ratings
                and view is not None
                and view.ring is not None
                and view.until >= event.ts
                and view.llr >= keep_out
            ):
                self._mark(tick, i, view, 0.9)
        for i, event in enumerate(events):  # events of this tick before the finding
            at = flagged_at.get(event.account_id)
            if at is not None and i < at and event.kind != "rating" and tick.scores.scores[i] < 0.5:
                acc = tick.accounts[event.account_id]
                if event.ts >= acc.first_ts:
                    self._mark(tick, i, acc, 0.9)

    def _decide(self, tick: _Tick, acc: _Account) -> str | None:
        """The ring this account is flagged into (a new id if alone), or None."""
        if acc.contra < self.min_flips and acc.llr < self.threshold:
            return None
        near = self._near_ring(tick, acc)
        if acc.llr >= self.threshold and acc.contra >= self.min_flips:
            return near or f"flip-{tick.next_id}"
        if near is not None and acc.llr >= self.ring_threshold and acc.contra >= 2:
            return near
        return None

    def _near_ring(self, tick: _Tick, acc: _Account) -> str | None:
        for key in (
            f"ip:{acc.ip}" if acc.ip else None,
            f"dev:{acc.device}" if acc.device else None,
        ):
            if key is None:
                continue
            ring = tick.shared.get(key) or self._shared._data.get(key)
            if ring is not None:
                return ring
        return None

    def _flag(self, tick: _Tick, i: int, account: str, acc: _Account, ring_id: str) -> None:
        ts = tick.batch.events[i].ts
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
        acc.until = ts + self.member_days * DAY
        for key in (
            f"ip:{acc.ip}" if acc.ip else None,
            f"dev:{acc.device}" if acc.device else None,
        ):
            if key is not None:
                tick.shared[key] = ring_id
        self._mark(tick, i, acc, 1.0)
        detail = tick.scores.details[i] or ""
        tick.scores.flagged_accounts.append(Flag(account, ring_id, detail, 1.0, acc.first_ts))

    def _mark(self, tick: _Tick, i: int, acc: _Account, score: float) -> None:
        ring = tick.rings.get(acc.ring or "") or self._rings.get(acc.ring or "")
        size = len(ring.members) if ring is not None else 1
        who = f"ring {acc.ring} ({size} accounts)" if size > 1 else f"case {acc.ring}"
        tick.scores.scores[i] = max(tick.scores.scores[i], score)
        tick.scores.details[i] = (
            f"account labels against the content: {acc.contra} of its {acc.judged} judged "
            f"labels contradict what the text says (honest rate ~{self.p0:.0%}); {who}"
        )
        assert tick.scores.campaign_ids is not None
        tick.scores.campaign_ids[i] = acc.ring

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
        horizon = self._watermark - self.ttl_days * DAY
        self._accounts.expire(lambda a: a.last_ts < horizon and a.until < self._watermark)
        for ring_id in [r.id for r in self._rings.values() if r.last_ts < horizon]:
            del self._rings[ring_id]
