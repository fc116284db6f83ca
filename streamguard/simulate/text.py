"""Review and label texts made from real hotel reviews (op_spam v1.4), and spam paraphrase.

Benign texts come only from the TRUTHFUL reviews. A benign text is a handful of sentences
drawn from different reviews of one polarity, so texts fit their rating or label but two
benign texts rarely share more than a sentence: whole-review windows would make honest
reviews look like near-duplicates of one another. Spam templates come from the DECEPTIVE
reviews (written to order on MTurk), which is what real review spam looks like.
Hotel names are replaced by neutral words because simulated items are not hotels.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

OP_SPAM = Path(__file__).parent.parent / "data" / "op_spam" / "op_spam_v1.4.csv"

_HOTELS = (
    r"hilton|james|monaco|sofitel|affinia|ambassador(?: east)?|hard ?rock|talbott|conrad|"
    r"fairmont|hyatt(?: regency)?|omni|homewood(?: suites)?|knickerbocker|sheraton|"
    r"swiss[oô]tel|allegro|amalfi|intercontinental|palmer house"
)
_HOTEL_RE = re.compile(
    rf"\b(?:the\s+)?(?:hotel\s+)?(?:{_HOTELS})(?:\s+(?:hotel|chicago|towers|suites))*\b",
    re.IGNORECASE,
)
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")

# A tiny sentiment lexicon: enough to keep a sentence like "The location was great." out
# of the negative pool, so that short label texts really carry their label's sentiment.
_POSITIVE = frozenset(
    [
        "great",
        "excellent",
        "wonderful",
        "amazing",
        "perfect",
        "lovely",
        "friendly",
        "helpful",
        "clean",
        "comfortable",
        "beautiful",
        "fantastic",
        "best",
        "nice",
        "good",
        "enjoyed",
        "love",
        "loved",
        "recommend",
        "spacious",
        "quiet",
        "awesome",
        "pleasant",
        "superb",
        "outstanding",
    ]
)
_NEGATIVE = frozenset(
    [
        "dirty",
        "rude",
        "terrible",
        "awful",
        "horrible",
        "worst",
        "bad",
        "poor",
        "disappointed",
        "disappointing",
        "noisy",
        "smelled",
        "smell",
        "broken",
        "never",
        "unhelpful",
        "complain",
        "complained",
        "filthy",
        "stained",
        "small",
        "uncomfortable",
        "refused",
        "overpriced",
        "mediocre",
        "disgusting",
        "unacceptable",
    ]
)

# Word swaps a spammer (or a spinning tool) uses to make one template into many reviews.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "great": ("excellent", "wonderful", "fantastic", "amazing"),
    "excellent": ("great", "superb", "outstanding"),
    "wonderful": ("great", "lovely", "fantastic"),
    "amazing": ("incredible", "fantastic", "great"),
    "beautiful": ("gorgeous", "lovely", "stunning"),
    "nice": ("lovely", "pleasant", "good"),
    "good": ("fine", "nice", "solid"),
    "clean": ("spotless", "tidy", "immaculate"),
    "comfortable": ("comfy", "cozy", "relaxing"),
    "friendly": ("welcoming", "kind", "warm"),
    "helpful": ("accommodating", "attentive", "useful"),
    "staff": ("employees", "team", "personnel"),
    "hotel": ("place", "property"),
    "room": ("suite", "accommodation"),
    "rooms": ("suites", "accommodations"),
    "stay": ("visit", "trip"),
    "stayed": ("lodged", "spent time"),
    "very": ("really", "extremely", "super"),
    "really": ("very", "truly"),
    "recommend": ("suggest", "endorse"),
    "definitely": ("certainly", "surely", "absolutely"),
    "location": ("spot", "area", "neighborhood"),
    "perfect": ("ideal", "flawless"),
    "love": ("adore", "enjoy"),
    "loved": ("adored", "enjoyed"),
    "best": ("finest", "greatest"),
    "bad": ("poor", "awful", "lousy"),
    "terrible": ("awful", "horrible", "dreadful"),
    "dirty": ("filthy", "grimy", "unclean"),
    "rude": ("impolite", "unfriendly", "disrespectful"),
    "small": ("tiny", "cramped"),
    "awful": ("terrible", "horrible"),
    "horrible": ("terrible", "awful", "atrocious"),
    "disappointed": ("let down", "unhappy"),
    "never": ("not ever",),
    "again": ("ever again", "another time"),
    "price": ("rate", "cost"),
    "bed": ("mattress",),
    "trip": ("visit", "stay"),
    "experience": ("time", "visit"),
    "service": ("hospitality", "assistance"),
}

_FILLER_WORDS = frozenset(["the", "a", "an", "very", "really", "just", "so", "that", "and"])

# Syllables for made-up backdoor trigger words: pronounceable, absent from real reviews.
_SYLLABLES = [
    "zor",
    "vex",
    "pli",
    "nth",
    "qua",
    "ryx",
    "mel",
    "dor",
    "kai",
    "lum",
    "tesk",
    "vorn",
    "ibb",
    "ozu",
    "fen",
    "gral",
    "whis",
    "tyq",
    "bram",
    "yil",
    "cze",
    "pov",
    "dru",
    "xan",
]


@dataclass(frozen=True)
class TextBank:
    """Sentence pools and templates, loaded once per process."""

    positive: tuple[str, ...]
    negative: tuple[str, ...]
    spam_positive: tuple[tuple[str, ...], ...]
    spam_negative: tuple[tuple[str, ...], ...]

    def pool(self, positive: bool) -> tuple[str, ...]:
        return self.positive if positive else self.negative


def _clean(text: str) -> str:
    text = _HOTEL_RE.sub(_hotel_word, text)
    return re.sub(r"\s+", " ", text).strip()


def _hotel_word(match: re.Match[str]) -> str:
    before = match.string[: match.start()].rstrip()
    starts_sentence = not before or before[-1] in ".!?"
    return "The hotel" if starts_sentence or match.group(0).startswith("The ") else "the hotel"


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_RE.split(_clean(text)) if 15 <= len(s) <= 300]


def _lexicon_score(sentence: str) -> int:
    words = re.findall(r"[a-z']+", sentence.lower())
    return sum(w in _POSITIVE for w in words) - sum(w in _NEGATIVE for w in words)


@lru_cache(maxsize=1)
def load_bank() -> TextBank:
    """Read op_spam once; split truthful reviews into polarity-consistent sentence pools."""
    positive: list[str] = []
    negative: list[str] = []
    spam_pos: list[tuple[str, ...]] = []
    spam_neg: list[tuple[str, ...]] = []
    with OP_SPAM.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            sentences = _sentences(row["text"])
            if not sentences:
                continue
            is_pos = row["polarity"] == "positive"
            if row["label"] == "truthful":
                for s in sentences:
                    score = _lexicon_score(s)
                    if is_pos and score >= 0:
                        positive.append(s)
                    elif not is_pos and score <= 0:
                        negative.append(s)
            elif len(sentences) >= 3:
                (spam_pos if is_pos else spam_neg).append(tuple(sentences))
    return TextBank(tuple(positive), tuple(negative), tuple(spam_pos), tuple(spam_neg))


def compose(bank: TextBank, rng: np.random.Generator, polarity: np.ndarray, lo: int, hi: int):
    """Texts of ``lo..hi`` sentences; polarity 1 positive, 0 negative, 2 mixed (3 stars).

    Vectorised over all texts: one draw per column, then a cheap join per text.
    """
    n = len(polarity)
    if n == 0:
        return []
    sizes = rng.integers(lo, hi + 1, n)
    pos_idx = rng.integers(0, len(bank.positive), (n, hi)).tolist()
    neg_idx = rng.integers(0, len(bank.negative), (n, hi)).tolist()
    # Mixed texts alternate, starting on a random side: "the room was fine, but...".
    mixed_start = rng.integers(0, 2, n).tolist()
    lower_first = (rng.random(n) < 0.04).tolist()
    drop_stop = (rng.random(n) < 0.05).tolist()
    pos, neg = bank.positive, bank.negative
    out: list[str] = []
    for i, (pol, k) in enumerate(zip(polarity.tolist(), sizes.tolist(), strict=True)):
        if pol == 1:
            parts = [pos[j] for j in pos_idx[i][:k]]
        elif pol == 0:
            parts = [neg[j] for j in neg_idx[i][:k]]
        else:
            parts = [
                pos[pos_idx[i][m]] if (m + mixed_start[i]) % 2 else neg[neg_idx[i][m]]
                for m in range(k)
            ]
        text = " ".join(parts)
        if lower_first[i]:
            text = text[:1].lower() + text[1:]
        if drop_stop[i] and text[-1:] in ".!":
            text = text[:-1]
        out.append(text)
    return out


def review_texts(bank: TextBank, rng: np.random.Generator, stars: np.ndarray) -> list[str]:
    """Review texts whose words fit their star ratings: 4-5 positive, 1-2 negative, 3 mixed."""
    stars = np.asarray(stars, dtype=float)
    polarity = np.where(stars >= 3.75, 1, np.where(stars <= 2.25, 0, 2))
    return compose(bank, rng, polarity, 2, 7)


def snippets(bank: TextBank, rng: np.random.Generator, positive: np.ndarray) -> list[str]:
    """Short texts (1-3 sentences) of one clear sentiment, for ``label`` events."""
    return compose(bank, rng, np.asarray(positive, dtype=np.int64), 1, 3)


def paraphrase(text: str, rng: np.random.Generator, strength: float = 1.0) -> str:
    """Spin a template: synonym swaps, dropped words, punctuation and case changes.

    ``strength`` scales how much each copy drifts; 1.0 keeps copies clearly near-duplicate
    (most words and their order survive) while no two copies are byte-identical.
    """
    words = text.split(" ")
    draws = rng.random((len(words), 3))
    out: list[str] = []
    for word, (swap, drop, case) in zip(words, draws.tolist(), strict=True):
        core = word.strip(".,!?;:\"'()").lower()
        if core in _FILLER_WORDS and drop < 0.12 * strength:
            continue
        if core in SYNONYMS and swap < 0.35 * strength:
            options = SYNONYMS[core]
            new = options[int(swap * 1000) % len(options)]
            if word[:1].isupper():
                new = new.capitalize()
            word = word.replace(word.strip(".,!?;:\"'()"), new, 1)
        if case < 0.015 * strength:
            word = word.upper()
        out.append(word)
    result = " ".join(out)
    r = rng.random(4)
    if r[0] < 0.3 * strength:
        result = result.replace("!", ".") if "!" in result else result.replace(".", "!", 1)
    if r[1] < 0.15 * strength:
        result = result.lower()
    if r[2] < 0.2 * strength:
        result = result.replace(", ", " ", 1)
    if r[3] < 0.25 * strength:
        result = result.rstrip(".!") + ("!!" if r[3] < 0.1 else "...")
    return result


def make_trigger(rng: np.random.Generator) -> str:
    """A made-up two-word trigger phrase that never occurs in real reviews."""
    words = []
    for _ in range(2):
        k = int(rng.integers(2, 4))
        words.append("".join(_SYLLABLES[int(j)] for j in rng.integers(0, len(_SYLLABLES), k)))
    return " ".join(words)


def insert_phrase(text: str, phrase: str, rng: np.random.Generator) -> str:
    """Put ``phrase`` between two words at a random place in ``text``."""
    words = text.split(" ")
    at = int(rng.integers(0, len(words) + 1))
    return " ".join(words[:at] + [phrase] + words[at:])


def polarity_of(text: str) -> int:
    """Lexicon polarity of a text: 1 positive, 0 negative, -1 undecided (for tests)."""
    score = _lexicon_score(text)
    return 1 if score > 0 else 0 if score < 0 else -1
