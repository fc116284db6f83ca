"""The online text model the content detectors share: what a text's words say its label is.

An online softmax regression over hashed word and word-pair presence, one per label group
(see :class:`~streamguard.text.LabelSpace`), trained with AdaGrad once per tick on kept
events only. River's linear models would do the same one event at a time at a few tens of
microseconds per event, which the 10,000 reviews/s budget cannot pay; this one is
vectorised over the tick.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamguard.text import U64


class TextModel:
    """Online softmax regression on hashed gram presence, one model per label group.

    Features are the distinct words and word pairs of a text (hashes from
    :func:`streamguard.text.doc_features`), each of value ``1/sqrt(n_grams)`` so long and
    short texts are judged on one scale. ``2**bits`` weight rows per group, at most
    ``max_classes`` columns (the group's first classes); AdaGrad steps of ``lr``.

    ``rehearse``: while a group has learned fewer texts than this, every step is followed
    by one over as many texts drawn again from those it learned before. One pass over a
    few hundred short texts leaves a young model far from what they can teach it, and the
    detectors judge with the young model; rehearsal makes it warm sooner. The texts are
    kept only until then, so memory stays bounded by ``rehearse`` texts per group.

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
        rehearse: int = 0,
    ) -> None:
        if not 8 <= bits <= 24:
            raise ValueError(f"bits must be in 8..24, got {bits}")
        if lr <= 0 or max_classes < 2 or step < 1 or rehearse < 0:
            raise ValueError("need lr > 0, max_classes >= 2, step >= 1 and rehearse >= 0")
        self.bits = bits
        self.lr = lr
        self.max_classes = max_classes
        self.balanced = balanced
        self.step = step
        self.rehearse = rehearse
        self._memory: dict[str, list[tuple[np.ndarray, int]]] = {}  # group -> (grams, class)
        self._counts: dict[str, np.ndarray] = {}
        self._n: dict[str, np.ndarray] = {}  # texts learned per weight row
        self._w: dict[str, np.ndarray] = {}
        self._g: dict[str, np.ndarray] = {}
        self._b: dict[str, np.ndarray] = {}
        self._gb: dict[str, np.ndarray] = {}
        self.seen: dict[str, int] = {}

    def __setstate__(self, state: dict[str, object]) -> None:
        """Checkpoints from before rehearsal load as models that do not rehearse."""
        self.rehearse = 0
        self._memory = {}
        self.__dict__.update(state)

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
        w = self._w.get(group)
        if w is None or k == 0:
            return np.zeros((m, k))
        return _sum_by(doc, self._contributions(w, feats, doc, m, k, mask), m) + self._b[group][:k]

    def _contributions(
        self,
        w: np.ndarray,
        feats: np.ndarray,
        doc: np.ndarray,
        m: int,
        k: int,
        mask: np.ndarray | None,
    ) -> np.ndarray:
        """Each gram's term in its text's logits (weights over the root of the text's gram
        count); 0 where ``mask`` is false, which leaves every text's sum as it would be
        without that gram."""
        scale = 1.0 / np.sqrt(np.maximum(np.bincount(doc, minlength=m), 1))
        contrib = np.take(w, self._rows(feats), axis=0)[:, :k] * scale[doc, None]
        if mask is not None:
            contrib[~mask] = 0.0
        return contrib

    def proba_without(
        self,
        group: str,
        members: Sequence[int],
        feats: np.ndarray,
        doc: np.ndarray,
        m: int,
        mask: np.ndarray | None = None,
        together: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities of each text, and of its text without each gram's set.

        Returns ``(m, k)`` and ``(len(feats), k)``: the second says what a text reads as
        once a gram is taken out, with the grams that share its ``together`` id (default:
        the gram alone; ids must not span texts). A phrase must not vouch for its own
        label, nor one of its words for another. Grams with ``mask`` false count nowhere.
        """
        k = min(len(members), self.max_classes)
        w = self._w.get(group)
        if w is None or k == 0:
            z = np.zeros((m, k))
            return _softmax(z), _softmax(z[doc])
        # One pass over the weights serves both: the texts' logits and each gram's share.
        contrib = self._contributions(w, feats, doc, m, k, mask)
        z = _sum_by(doc, contrib, m) + self._b[group][:k]
        ids = np.arange(len(feats)) if together is None else together
        n_ids = int(ids.max()) + 1 if len(ids) else 0
        without = z[doc] - _sum_by(ids, contrib, n_ids)[ids]
        return _softmax(z), _softmax(without)

    def proba(
        self,
        group: str,
        members: Sequence[int],
        feats: np.ndarray,
        doc: np.ndarray,
        m: int,
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        return _softmax(self.logits(group, members, feats, doc, m, mask))

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
        young = self.seen.get(group, 0) < self.rehearse
        self._steps(group, members, feats, doc, cls, proba, fresh=True)
        if young:
            self._rehearse(group, members, feats, doc, cls)

    def _steps(
        self,
        group: str,
        members: Sequence[int],
        feats: np.ndarray,
        doc: np.ndarray,
        cls: np.ndarray,
        proba: np.ndarray | None,
        fresh: bool,
    ) -> None:
        m = len(cls)
        bounds = np.searchsorted(doc, np.arange(0, m + self.step, self.step))
        for n, start in enumerate(range(0, m, self.step)):
            lo, hi = bounds[n], bounds[n + 1]
            part = cls[start : start + self.step]
            p = proba[start : start + self.step] if proba is not None and n == 0 else None
            self._step(group, members, feats[lo:hi], doc[lo:hi] - start, part, p, fresh)

    def _rehearse(
        self,
        group: str,
        members: Sequence[int],
        feats: np.ndarray,
        doc: np.ndarray,
        cls: np.ndarray,
    ) -> None:
        """Learn again as many texts as were just learned, drawn from the earlier ones."""
        memory = self._memory.setdefault(group, [])
        if memory:
            rng = np.random.default_rng(len(memory))  # reproducible: same state, same draw
            picked = np.sort(rng.choice(len(memory), min(len(memory), len(cls)), replace=False))
            grams = [memory[i][0] for i in picked.tolist()]
            again = np.repeat(np.arange(len(grams)), [len(g) for g in grams])
            labels = np.array([memory[i][1] for i in picked.tolist()], dtype=np.int64)
            self._steps(group, members, np.concatenate(grams), again, labels, None, fresh=False)
        if self.seen.get(group, 0) >= self.rehearse:
            del self._memory[group]  # warm: the texts are no longer needed
            return
        bounds = np.searchsorted(doc, np.arange(len(cls) + 1))
        memory.extend(
            (feats[bounds[j] : bounds[j + 1]].copy(), int(c)) for j, c in enumerate(cls.tolist())
        )

    def _step(
        self,
        group: str,
        members: Sequence[int],
        feats: np.ndarray,
        doc: np.ndarray,
        cls: np.ndarray,
        proba: np.ndarray | None,
        fresh: bool,
    ) -> None:
        """One AdaGrad step; ``fresh`` false for rehearsed texts, which count nowhere."""
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
            if fresh:
                counts[:k] += np.bincount(target[ok], minlength=k)
            share = counts[:k] / counts[:k].sum()
            weight = np.where(ok, 1.0 / (k * np.maximum(share[np.maximum(target, 0)], 0.02)), 0.0)
            grad *= weight[:, None]
        counts = np.bincount(doc, minlength=m)
        scale = 1.0 / np.sqrt(np.maximum(counts, 1))
        rows = self._rows(feats)
        if fresh:  # not a scalar: 25x faster
            np.add.at(self._n[group], rows, np.ones(len(rows), dtype=np.int32))
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
        if fresh:
            self.seen[group] = self.seen.get(group, 0) + int(ok.sum())


def _sum_by(keys: np.ndarray, contrib: np.ndarray, size: int) -> np.ndarray:
    """(size, k): the rows of ``contrib`` summed per key. ``np.bincount`` adds in input
    order, as ``np.add.at`` would, and several times faster."""
    out = np.empty((size, contrib.shape[1]))
    for c in range(contrib.shape[1]):
        out[:, c] = np.bincount(keys, weights=contrib[:, c], minlength=size)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    if z.shape[1] == 0:
        return z
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
