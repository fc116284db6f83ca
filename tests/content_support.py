"""Real review text for the content-detector tests: op_spam v1.4 sentences by polarity.

Benign texts are built from TRUTHFUL reviews, templates from DECEPTIVE ones (as spam is).
A sentence goes to a polarity pool only when a tiny lexicon agrees with its review's
polarity, so short texts really read positive or negative.
"""

from __future__ import annotations

import csv
import re
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from streamguard.detectors.base import Batch
from streamguard.events import FeedbackEvent, event_from_dict

OP_SPAM = Path(__file__).parent.parent / "streamguard" / "data" / "op_spam" / "op_spam_v1.4.csv"
T0 = 1_700_000_000.0
_SPLIT = re.compile(r"(?<=[.!?])\s+")
_POS = frozenset(
    re.findall(
        r"\w+",
        "great excellent wonderful amazing perfect lovely friendly helpful clean comfortable "
        "beautiful fantastic best nice enjoyed loved recommend spacious awesome",
    )
)
_NEG = frozenset(
    re.findall(
        r"\w+",
        "dirty rude terrible awful horrible worst bad poor disappointed noisy smelled broken "
        "filthy stained uncomfortable refused overpriced disgusting unacceptable",
    )
)


@cache
def pools() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(positive sentences, negative sentences, deceptive positive reviews)."""
    pos: list[str] = []
    neg: list[str] = []
    spam: list[str] = []
    with OP_SPAM.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            text = re.sub(r"\s+", " ", row["text"]).strip()
            if row["label"] == "deceptive":
                if row["polarity"] == "positive":
                    spam.append(text)
                continue
            for sentence in _SPLIT.split(text):
                words = set(re.findall(r"[a-z]+", sentence.lower()))
                score = len(words & _POS) - len(words & _NEG)
                if not 20 <= len(sentence) <= 250:
                    continue
                if row["polarity"] == "positive" and score > 0:
                    pos.append(sentence)
                elif row["polarity"] == "negative" and score < 0:
                    neg.append(sentence)
    return tuple(pos), tuple(neg), tuple(spam)


def snippet(rng: np.random.Generator, positive: bool, lo: int = 1, hi: int = 3) -> str:
    pos, neg, _ = pools()
    pool = pos if positive else neg
    k = int(rng.integers(lo, hi + 1))
    return " ".join(pool[int(i)] for i in rng.integers(0, len(pool), k))


def spin(text: str, rng: np.random.Generator) -> str:
    """A light paraphrase: drop a few words, change case and punctuation."""
    words = [w for w in text.split(" ") if rng.random() > 0.05]
    out = " ".join(w.upper() if rng.random() < 0.02 else w for w in words)
    return out.replace(".", "!", 1) if rng.random() < 0.5 else out.lower()


def event(i: int, **fields: Any) -> FeedbackEvent:
    base: dict[str, Any] = {
        "event_id": f"e{i}",
        "ts": T0 + 60.0 * i,
        "kind": "label",
        "account_id": f"a{i % 997}",
        "item_id": f"i{i % 113}",
    }
    base.update(fields)
    if base["kind"] in ("rating", "review") and "rating" not in base:
        base["rating"] = 4.0
    return event_from_dict(base)


def labelled_stream(n: int, seed: int, start: int = 0, accounts: int = 400) -> list[FeedbackEvent]:
    """Honest label events: snippets of one polarity, labelled by it (70 % positive)."""
    return _honest(n, seed, start, accounts, reviews=False)


def review_stream(n: int, seed: int, start: int = 0) -> list[FeedbackEvent]:
    """Honest reviews of 3-6 sentences of one polarity on 200 items, rated 5 or 1 by it."""
    return _honest(n, seed, start, 300, reviews=True)


def _honest(n: int, seed: int, start: int, accounts: int, reviews: bool) -> list[FeedbackEvent]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        positive = bool(rng.random() < 0.7)
        account = f"u{int(rng.integers(accounts))}"
        if reviews:
            item = f"i{int(rng.integers(200))}"
            text = snippet(rng, positive, 3, 6)
            fields = {"kind": "review", "item_id": item, "rating": 5.0 if positive else 1.0}
        else:
            text = snippet(rng, positive)
            fields = {"label": "positive" if positive else "negative"}
        out.append(event(i, account_id=account, text=text, **fields))
    return out


def ticks(events: list[FeedbackEvent], size: int) -> list[Batch]:
    return [Batch.of(events[s : s + size]) for s in range(0, len(events), size)]


def run(detector: Any, events: list[FeedbackEvent], size: int = 500) -> dict[str, Any]:
    """Feed ticks, learning from what was kept; collect scores, details, ids and flags."""
    scores: dict[str, float] = {}
    details: dict[str, str | None] = {}
    campaigns: dict[str, str | None] = {}
    flags = []
    seen = 0
    for batch in ticks(events, size):
        out = detector.score_batch(batch)
        detector.learn_batch(batch, out.scores < 0.5)
        ids = out.campaign_ids or [None] * len(batch)
        for e, s, d, c in zip(batch.events, out.scores, out.details, ids, strict=True):
            scores[e.event_id] = float(s)
            details[e.event_id] = d
            campaigns[e.event_id] = c
        flags.extend((flag, seen) for flag in out.flagged_accounts)
        seen += len(batch)
    return {"scores": scores, "details": details, "campaigns": campaigns, "flags": flags}


def removed(result: dict[str, Any], events: list[FeedbackEvent]) -> set[str]:
    """Events kept out of the clean set: quarantined at once, or revoked by a later flag
    (which reaches the account's events released in earlier ticks, from ``since_ts`` on)."""
    out = {eid for eid, s in result["scores"].items() if s >= 0.5}
    for flag, before in result["flags"]:
        out |= {
            e.event_id
            for e in events[:before]
            if e.account_id == flag.account_id and e.ts >= flag.since_ts
        }
    return out
