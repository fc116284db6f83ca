"""Bounded, vectorised text handling shared by the content detectors.

Every text detector needs the same first steps, so they live here and run once per tick:

1. *normalise*: Unicode NFKC (full-width letters, ligatures and look-alike digits fold to
   their plain forms) and case folding, so "GREAT", "Ｇｒｅａｔ" and "great" are one word;
2. *truncate*: only the first ``max_chars`` characters count for features, so a
   20,000-character text costs no more than a short one (the event itself passes through
   unchanged; only what the detectors look at is bounded);
3. *tokenise*: runs of letters and digits; punctuation, underscores and whitespace split;
4. *hash*: every token becomes a stable 64-bit hash, computed for the whole tick at once
   in numpy (a polynomial hash over the tick's bytes via prefix sums, then a SplitMix64
   finaliser). Python's own ``hash`` is salted per process, which would break
   checkpoints, so it is not used.

:func:`tokenize_batch` is memoised on the identity of the tick's event list: the pipeline
hands the same :class:`~streamguard.detectors.base.Batch` to every detector's
``score_batch`` and then ``learn_batch``, so three text detectors tokenise a tick once.

>>> tb = tokenize_texts(["Great hotel!!", None, "ＧＲＥＡＴ   hotel."])
>>> tb.rows.tolist(), tb.offsets.tolist()
([0, 2], [0, 2, 4])
>>> bool(tb.hashes[0] == tb.hashes[2]) and bool(tb.hashes[1] == tb.hashes[3])
True
>>> tokens("Ｆｉｖｅ STARS, fast_delivery")
['five', 'stars', 'fast', 'delivery']
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from streamguard.detectors.base import Batch

DEFAULT_MAX_CHARS = 4_000
U64 = np.uint64
_MASK = (1 << 64) - 1
_NON_WORD = re.compile(r"[\W_]+")
_BASE = 0x100000001B3  # the FNV prime: odd, so invertible modulo 2**64
_BASE_INV = pow(_BASE, -1, 1 << 64)
_LENGTH_SALT = 0x9E3779B97F4A7C15


def normalise(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """NFKC-normalised, case-folded, at most ``max_chars`` characters long.

    Truncating before NFKC bounds its cost; truncating again after bounds its output
    (a few characters such as ligatures expand).
    """
    return unicodedata.normalize("NFKC", text[:max_chars]).casefold()[:max_chars]


def clean(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The normalised text as its tokens separated by single spaces."""
    return _NON_WORD.sub(" ", normalise(text, max_chars)).strip()


def tokens(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """The tokens of one text (what the hashes of :func:`tokenize_texts` stand for)."""
    cleaned = clean(text, max_chars)
    return cleaned.split(" ") if cleaned else []


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: spreads every input bit over all output bits (uint64)."""
    z = np.asarray(x, dtype=U64)
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


class _Powers:
    """BASE**j and BASE**-j modulo 2**64 for j < n, grown by doubling and then reused."""

    def __init__(self) -> None:
        self.up = np.ones(1, dtype=U64)
        self.down = np.ones(1, dtype=U64)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n > len(self.up):
            size = max(n, 2 * len(self.up))
            self.up = np.concatenate([[U64(1)], np.cumprod(np.full(size - 1, _BASE, U64))])
            self.down = np.concatenate([[U64(1)], np.cumprod(np.full(size - 1, _BASE_INV, U64))])
        return self.up[:n], self.down[:n]


_POWERS = _Powers()


@dataclass(frozen=True, slots=True)
class TokenBatch:
    """The tokens of the texts of one tick, as flat arrays.

    ``rows[j]`` is the batch position of the j-th text; its token hashes are
    ``hashes[offsets[j]:offsets[j + 1]]`` (uint64), in text order.
    """

    rows: np.ndarray
    offsets: np.ndarray
    hashes: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def doc(self) -> np.ndarray:
        """For every token, the index j of its text."""
        return np.repeat(np.arange(len(self.rows)), self.lengths)

    def ngrams(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of the word n-grams inside each text, and the text index j of each.

        ``n == 1`` gives the tokens themselves. An n-gram never spans two texts.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        doc = self.doc
        if n == 1:
            return self.hashes, doc
        m = len(self.hashes) - n + 1
        if m <= 0:
            return np.zeros(0, dtype=U64), np.zeros(0, dtype=np.int64)
        acc = self.hashes[:m].copy()
        for k in range(1, n):
            acc = acc * U64(_BASE) + self.hashes[k : k + m]
        inside = doc[:m] == doc[n - 1 : n - 1 + m]
        return mix64(acc[inside] ^ U64(n)), doc[:m][inside]


def _feature_text(text: str, max_chars: int) -> str:
    """What the hash sees: ASCII texts only need lower-casing (NFKC leaves ASCII alone and
    the byte classifier splits on punctuation); other texts take the full Unicode path."""
    text = text[:max_chars]
    return text.lower() if text.isascii() else clean(text, max_chars)


# Bytes that belong to a token: ASCII letters and digits, and every byte of a non-ASCII
# UTF-8 sequence (non-ASCII punctuation was already replaced by spaces in ``clean``).
_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[[ord(c) for c in "0123456789abcdefghijklmnopqrstuvwxyz"]] = True
_WORD_BYTE[0x80:] = True


def hash_texts(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token hashes of feature texts (see :func:`_feature_text`) and each text's offsets.

    The tick's texts are joined with spaces into one byte buffer; a token is a run of
    word bytes; its hash is ``sum(byte[j] * BASE**(j - start))`` modulo 2**64, read off a
    prefix sum, salted with its length and finalised by :func:`mix64`.
    """
    encoded = " ".join(texts).encode("utf-8")
    buf = np.frombuffer(encoded, dtype=np.uint8)
    n_texts = len(texts)
    if len(buf) == 0:
        return np.zeros(0, dtype=U64), np.zeros(n_texts + 1, dtype=np.int64)
    word = np.take(_WORD_BYTE, buf).view(np.int8)
    edges = np.diff(word, prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    up, down = _POWERS.get(len(buf))
    prefix = np.empty(len(buf) + 1, dtype=U64)
    prefix[0] = 0
    np.cumsum(np.multiply(buf, up, dtype=U64), out=prefix[1:])
    raw = (prefix[ends] - prefix[starts]) * down[starts]
    hashes = mix64(raw + (ends - starts).astype(U64) * U64(_LENGTH_SALT))
    sizes = np.fromiter(
        (len(t) if t.isascii() else len(t.encode("utf-8")) for t in texts), np.int64, n_texts
    )
    text_starts = np.concatenate([[0], np.cumsum(sizes + 1)])  # +1: the joining space
    offsets = np.searchsorted(starts, text_starts[: n_texts + 1])
    return hashes, offsets.astype(np.int64)


def tokenize_texts(texts: Sequence[str | None], max_chars: int = DEFAULT_MAX_CHARS) -> TokenBatch:
    """Tokenise and hash a sequence of texts; ``None`` or empty texts are skipped."""
    rows = [i for i, t in enumerate(texts) if t]
    feature_texts = [_feature_text(texts[i], max_chars) for i in rows]  # type: ignore[arg-type]
    hashes, offsets = hash_texts(feature_texts)
    return TokenBatch(np.asarray(rows, dtype=np.int64), offsets, hashes)


_memo: tuple[object, int, TokenBatch] | None = None


def tokenize_batch(batch: Batch, max_chars: int = DEFAULT_MAX_CHARS) -> TokenBatch:
    """:func:`tokenize_texts` over the batch's event texts, once per tick and limit."""
    global _memo
    memo = _memo
    if memo is not None and memo[0] is batch.events and memo[1] == max_chars:
        return memo[2]
    result = tokenize_texts([e.text for e in batch.events], max_chars)
    _memo = (batch.events, max_chars, result)
    return result


def bucket(hashes: np.ndarray, bits: int) -> np.ndarray:
    """Map uint64 hashes onto ``2**bits`` buckets (their top bits), as int64 indices."""
    return (hashes >> U64(64 - bits)).astype(np.int64)


def doc_features(tb: TokenBatch, ngram: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct word 1..``ngram``-grams of each text: (hashes, text index j, n of the gram).

    Sorted by text; each (text, gram) pair appears once, so a word repeated ten times
    counts like once (bag-of-words presence, what phrase statistics want). Memoised on
    the :class:`TokenBatch`, which detectors share within a tick.
    """
    global _features_memo
    memo = _features_memo
    if memo is not None and memo[0] is tb and memo[1] == ngram:
        return memo[2]
    parts = [tb.ngrams(k) for k in range(1, ngram + 1)]
    hashes = np.concatenate([h for h, _ in parts])
    doc = np.concatenate([d for _, d in parts])
    size = np.concatenate([np.full(len(h), k, dtype=np.int8) for k, (h, _) in enumerate(parts, 1)])
    # One sort on (text, top 44 bits of the hash): texts stay in order, duplicates meet.
    key = (doc.astype(U64) << U64(44)) | (hashes >> U64(20))
    order = np.argsort(key)
    key = key[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    keep = order[first]
    result = (hashes[keep], doc[keep], size[keep])
    _features_memo = (tb, ngram, result)
    return result


_features_memo: tuple[TokenBatch, int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None


class TextSettings(BaseModel):
    """What every content detector's settings share: whether it runs, how much it reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    max_chars: int = Field(DEFAULT_MAX_CHARS, ge=16)


class LabelledTextSettings(TextSettings):
    """Settings of detectors that read labels: how events map to classes (:class:`LabelSpace`)."""

    # Rating sides that count as positive / negative sentiment; None: the top and bottom
    # quarters of the pipeline's rating scale (4 and 2 on 1..5).
    positive_rating: float | None = None
    negative_rating: float | None = None
    aliases: dict[str, str] | None = None


GROUPS = ("sentiment", "label", "vote")
DEFAULT_ALIASES = {"label:positive": "sentiment:positive", "label:negative": "sentiment:negative"}


class LabelSpace:
    """The classes texts are labelled with, per group of events, numbered as they appear.

    A review's class is its rating side in the ``sentiment`` group: ``positive`` at or
    above ``positive_rating``, ``negative`` at or below ``negative_rating`` (ratings in
    between say nothing about the text's polarity). A ``label`` or ``vote`` event's class
    is its ``label`` within its kind's group, unless ``aliases`` maps ``"kind:label"`` to
    ``"group:class"``: by default the labels ``positive``/``negative`` are sentiment
    labels, the same classes as the rating sides, so one text model learns from both.
    At most ``max_classes`` classes are numbered; further labels are ignored. Numbering
    only happens in :meth:`register` (a detector's learn step), so scoring never changes it.

    >>> space = LabelSpace()
    >>> space.register([("label", "spam"), ("sentiment", "positive"), ("label", "ham")])
    >>> space.key("label", "positive", None), space.key("review", None, 2.0)
    (('sentiment', 'positive'), ('sentiment', 'negative'))
    >>> space.lookup("label", "ham"), space.members("label"), space.name(1)
    (2, [0, 2], "'positive' (sentiment)")
    """

    def __init__(
        self,
        max_classes: int = 32,
        positive_rating: float = 4.0,
        negative_rating: float = 2.0,
        aliases: dict[str, str] | None = None,
    ) -> None:
        if max_classes < 2:
            raise ValueError(f"max_classes must be >= 2, got {max_classes}")
        if negative_rating >= positive_rating:
            raise ValueError("negative_rating must be below positive_rating")
        self.max_classes = max_classes
        self.positive_rating = positive_rating
        self.negative_rating = negative_rating
        self.aliases = dict(DEFAULT_ALIASES if aliases is None else aliases)
        self._alias: dict[tuple[str, str], tuple[str, str]] = {}
        for source, target in self.aliases.items():
            a, sep, b = source.partition(":")
            c, sep2, d = target.partition(":")
            if not (sep and sep2 and a and b and c and d):
                raise ValueError(f"aliases must map 'kind:label' to 'group:class', got {source!r}")
            self._alias[(a, b)] = (c, d)
        self._ids: dict[tuple[str, str], int] = {}
        self._names: list[tuple[str, str]] = []
        self._groups: dict[str, list[int]] = {}

    def key(self, kind: str, label: str | None, rating: float | None) -> tuple[str, str] | None:
        """The (group, class) of an event, or None when it carries no class."""
        if kind == "review":
            if rating is None:
                return None
            if rating >= self.positive_rating:
                return ("sentiment", "positive")
            if rating <= self.negative_rating:
                return ("sentiment", "negative")
            return None
        if label is None or kind == "rating":
            return None
        return self._alias.get((kind, label), (kind, label))

    def keys(self, batch: Batch) -> list[tuple[str, str] | None]:
        return [self.key(e.kind, e.label, e.rating) for e in batch.events]

    def lookup(self, group: str, name: str) -> int:
        return self._ids.get((group, name), -1)

    def classes(self, keys: Sequence[tuple[str, str] | None]) -> np.ndarray:
        """Class id per key (-1: none or not numbered yet)."""
        ids = self._ids
        return np.fromiter(
            (ids.get(k, -1) if k is not None else -1 for k in keys), np.int64, len(keys)
        )

    def register(self, keys: Sequence[tuple[str, str] | None]) -> None:
        for k in keys:
            if k is not None and k not in self._ids and len(self._names) < self.max_classes:
                if k[0] not in GROUPS:
                    continue
                self._ids[k] = len(self._names)
                self._names.append(k)
                self._groups.setdefault(k[0], []).append(self._ids[k])

    def members(self, group: str) -> list[int]:
        return self._groups.get(group, [])

    def group_of(self, cls: int) -> str:
        return self._names[cls][0]

    def name(self, cls: int) -> str:
        """How a reviewer reads the class: the label and its group."""
        group, label = self._names[cls]
        return f"'{label}' ({group})"

    def __len__(self) -> int:
        return len(self._names)
