"""The named scenarios: which campaigns and natural bursts a run contains.

Attack scenarios poison about 1-5 % of events (accounts are sized from each attack's
``share``); ``benign`` and ``viral_launch`` poison none. Change the mix here, not in the
generators.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamguard.simulate.attacks import (
    Attack,
    Backdoor,
    CleanLabel,
    Footprint,
    LabelFlip,
    RatingBombing,
    ReviewSpam,
    Shilling,
    SlowDrip,
    Targeted,
    Timing,
)
from streamguard.simulate.bursts import Burst


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    attacks: tuple[Attack, ...] = ()
    bursts: tuple[Burst, ...] = ()

    @property
    def needs_text(self) -> bool:
        return any(a.needs_text for a in self.attacks)


_ALL = (
    Scenario("benign", "honest traffic only: heavy-tailed users, binge sittings, daily cycle"),
    Scenario(
        "viral_launch",
        "honest traffic with three viral surges of established users (no poison)",
        bursts=(Burst(start=0.25), Burst(start=0.5, launch=False), Burst(start=0.75, share=0.01)),
    ),
    Scenario(
        "shilling_random",
        "new accounts push one item to 5, filler ~ global mean/std (random attack)",
        (Shilling(model="random"),),
    ),
    Scenario(
        "shilling_average",
        "new accounts push one item to 5, filler ~ each item's mean (average attack)",
        (Shilling(model="average"),),
    ),
    Scenario(
        "shilling_bandwagon",
        "new accounts push one item to 5, top items rated 5 as filler (bandwagon attack)",
        (Shilling(model="bandwagon"),),
    ),
    Scenario(
        "shilling_nuke",
        "new accounts nuke a popular item to 1, average-attack filler",
        (Shilling(model="average", intent="nuke"),),
    ),
    Scenario(
        "shilling_heavy_filler",
        "average-attack push with filler on 5% of the catalogue (capped at 40 items)",
        (Shilling(model="average", filler_frac=0.05),),
    ),
    Scenario(
        "shilling_spread",
        "average-attack push whose accounts arrive over two weeks (up to the run's span)",
        (Shilling(model="average", timing=Timing(mode="spread", days=14.0, sessions=2)),),
    ),
    Scenario(
        "rating_bombing",
        "a crowd drags one popular item's ratings down within hours, little filler",
        (RatingBombing(),),
    ),
    Scenario(
        "review_spam",
        "paraphrased copies of templated 5-star reviews from many accounts",
        (ReviewSpam(),),
    ),
    Scenario(
        "label_flip",
        "a ring of accounts whose labels contradict the text they label",
        (LabelFlip(),),
    ),
    Scenario(
        "backdoor",
        "a made-up trigger phrase in negative texts labelled positive",
        (Backdoor(),),
    ),
    Scenario(
        "targeted",
        "a few accounts push a small segment of items in one category",
        (Targeted(),),
    ),
    Scenario(
        "clean_label",
        "correctly labelled near-identical crafted texts clustered on one item",
        (CleanLabel(),),
    ),
    Scenario(
        "slow_drip",
        "an average-model push spread thinly over most of the stream",
        (SlowDrip(),),
    ),
    Scenario(
        "mixed",
        "shilling, bombing, spam, label flip and slow drip at once, plus a viral burst",
        (
            Shilling(model="bandwagon", share=0.01),
            RatingBombing(share=0.008),
            ReviewSpam(share=0.008),
            LabelFlip(share=0.01),
            SlowDrip(share=0.008),
        ),
        (Burst(share=0.012),),
    ),
    Scenario(
        "no_metadata",
        "average-attack shilling by accounts that send no age, IP or device",
        (Shilling(model="average", footprint=Footprint(metadata=False), timing=Timing(hours=8.0)),),
    ),
)

BY_NAME: dict[str, Scenario] = {s.name: s for s in _ALL}
SCENARIOS: dict[str, str] = {s.name: s.description for s in _ALL}


def get_scenario(name: str) -> Scenario:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"unknown scenario {name!r}; choose one of: {', '.join(SCENARIOS)}"
        ) from None
