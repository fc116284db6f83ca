"""What each campaign wanted: the items whose rank it moves, the trigger it plants.

The simulator knows (``campaigns.json``: targets, and the backdoor's trigger in its
params); without that file the goals are read off the truth, as an analyst would: a
rating campaign's target is the item it rated most that is mostly its own (bandwagon
filler rates popular items as often, but those items are not mostly fake), and a
backdoor's trigger is the word pair most over-represented in its texts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from streamguard.impact.labels import tokens
from streamguard.impact.stream import Stream

MIN_TRIGGER_SHARE = 0.5  # a trigger is in at least half of the campaign's texts


@dataclass(frozen=True)
class Trigger:
    phrase: str
    label: str  # the label the trigger is meant to produce


@dataclass(frozen=True)
class Goals:
    targets: dict[str, list[str]] = field(default_factory=dict)  # campaign -> items
    triggers: dict[str, Trigger] = field(default_factory=dict)  # campaign -> trigger


def _goal_label(stream: Stream, campaign: str) -> str | None:
    labels = Counter(
        e["label"]
        for e, c in zip(stream.events, stream.campaign, strict=True)
        if c == campaign and e.get("label") and e.get("text")
    )
    return labels.most_common(1)[0][0] if labels else None


def goals_from_campaigns(path: Path, stream: Stream) -> Goals:
    """Targets and triggers as the simulator recorded them."""
    info = orjson.loads(path.read_bytes())
    targets: dict[str, list[str]] = {}
    triggers: dict[str, Trigger] = {}
    for c in info["campaigns"]:
        if c.get("targets"):
            targets[c["id"]] = [str(t) for t in c["targets"]]
        phrase = (c.get("params") or {}).get("trigger")
        label = _goal_label(stream, c["id"])
        if phrase and label:
            triggers[c["id"]] = Trigger(str(phrase), label)
    return Goals(targets, triggers)


def derive_goals(stream: Stream) -> Goals:
    """Targets and triggers read off the truth alone (see the module docstring)."""
    campaigns = sorted({c for c in stream.campaign if c})
    targets: dict[str, list[str]] = {}
    triggers: dict[str, Trigger] = {}
    per_item = Counter(e["item_id"] for e in stream.events)
    benign_texts = [
        e["text"]
        for e, p in zip(stream.events, stream.poisoned, strict=True)
        if not p and e.get("text")
    ]
    for campaign in campaigns:
        mine = [e for e, c in zip(stream.events, stream.campaign, strict=True) if c == campaign]
        rated = Counter(e["item_id"] for e in mine if e.get("rating") is not None)
        if rated:
            top = max(rated.values())
            candidates = [i for i, n in rated.items() if n >= top / 2]
            best = max(candidates, key=lambda i: (rated[i] / per_item[i], rated[i], i))
            targets[campaign] = [best]
        texts = [e["text"] for e in mine if e.get("text") and e.get("label")]
        phrase = _over_represented_pair(texts, benign_texts)
        label = _goal_label(stream, campaign)
        if phrase and label:
            triggers[campaign] = Trigger(phrase, label)
    return Goals(targets, triggers)


def _pairs(text: str) -> set[str]:
    words = tokens(text)
    return {f"{a} {b}" for a, b in zip(words, words[1:], strict=False)}


def _over_represented_pair(texts: list[str], benign: list[str]) -> str | None:
    if not texts:
        return None
    mine = Counter(p for t in texts for p in _pairs(t))
    wanted = {p for p, n in mine.items() if n >= MIN_TRIGGER_SHARE * len(texts)}
    if not wanted:
        return None
    seen = Counter(p for t in benign for p in _pairs(t) & wanted)
    n_benign = max(len(benign), 1)
    return max(wanted, key=lambda p: (mine[p] / len(texts) - seen[p] / n_benign, p))
