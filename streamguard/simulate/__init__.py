"""Attack simulator: benign feedback traffic with injected poisoning campaigns and truth.

``simulate(scenario, events, seed, base)`` returns a :class:`Simulation` (contract events
sorted by time, one truth row per event, the campaigns it injected); ``write_simulation``
writes ``events.jsonl`` and ``truth.csv`` as DESIGN.md section 4 fixes them.
"""

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
from streamguard.simulate.bursts import Burst, BurstInfo
from streamguard.simulate.scenarios import SCENARIOS, Scenario, get_scenario
from streamguard.simulate.simulation import (
    BASES,
    CampaignInfo,
    Simulation,
    TruthRow,
    simulate,
    write_simulation,
)

__all__ = [
    "BASES",
    "SCENARIOS",
    "Attack",
    "Backdoor",
    "Burst",
    "BurstInfo",
    "CampaignInfo",
    "CleanLabel",
    "Footprint",
    "LabelFlip",
    "RatingBombing",
    "ReviewSpam",
    "Scenario",
    "Shilling",
    "Simulation",
    "SlowDrip",
    "Targeted",
    "Timing",
    "TruthRow",
    "get_scenario",
    "simulate",
    "write_simulation",
]
