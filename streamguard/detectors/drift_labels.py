"""What a label means to the label-mix drift signals: a polarity, 1 or 0.

Labels are free strings (positive/negative, helpful/unhelpful, spam/ham, ...). The drift
signals watch one number per item and kind, the share of "positive" labels, so each label
is mapped to 1 when it is in the configured positive set and to 0 otherwise. A shift in
that share in either direction is what a vote brigade or a labelling campaign causes; the
label-flip detector, not this one, judges whether a single label fits its text.

>>> polarity("Helpful", DEFAULT_POSITIVE_LABELS), polarity("spam", DEFAULT_POSITIVE_LABELS)
(1, 0)
>>> label_key("vote", "p123")
'vote:p123'
"""

from __future__ import annotations

from collections.abc import Iterable

# Spellings of the favourable class across common label vocabularies. "ham" is the
# favourable side of spam/ham; "1"/"true"/"yes" cover numeric and boolean encodings.
DEFAULT_POSITIVE_LABELS: tuple[str, ...] = (
    "positive", "pos", "helpful", "useful", "ham", "like", "liked", "up", "upvote",
    "yes", "true", "1", "good", "relevant", "agree", "approve", "approved", "recommended",
)  # fmt: skip


def positive_set(labels: Iterable[str]) -> frozenset[str]:
    """The configured positive labels, normalised the way events are compared."""
    out = frozenset(label.strip().lower() for label in labels)
    if not out or "" in out:
        raise ValueError("positive_labels must be non-empty strings")
    return out


def polarity(label: str, positive: Iterable[str]) -> int:
    """1 when ``label`` is one of the positive labels (case and spaces ignored), else 0."""
    return 1 if label.strip().lower() in positive else 0


def label_key(kind: str, item_id: str) -> str:
    """The key of one item's label mix for one kind: labels and votes are watched apart."""
    return f"{kind}:{item_id}"


def split_key(key: str) -> tuple[str, str]:
    kind, _, item = key.partition(":")
    return kind, item
