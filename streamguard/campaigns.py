"""The campaign: a group finding that reviewers, metrics and revocation all talk about.

A campaign is opened by a group detector when many accounts act in lockstep on a target,
and it *grows*: later accounts that join the same push (or nuke) become members, new
targets can be added, and its window stretches while it stays active. Every quarantine
that a campaign causes carries its ``id``, so a reviewer can open the campaign and judge
the whole group at once instead of one event at a time.

The object is plain data (picklable, cheap to copy) with a few read-only helpers; the
detector that owns it decides when it grows and when it closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Campaign:
    """A coordinated group: who (members), on what (targets), when (window), and why.

    ``members`` maps each account to the event time it joined; ``targets`` maps each
    target item to the event time it became one. ``evidence`` holds the numbers behind
    the finding (surprise in nats per question, group size, expected count), refreshed
    as the campaign grows; ``score`` is the decision score its events carry (>= 0.5).
    """

    id: str
    detector: str
    side: str  # "push" or "nuke" (or the shared value for other lockstep kinds)
    targets: dict[str, float]
    members: dict[str, float]
    start_ts: float
    last_ts: float
    opened_ts: float
    score: float
    evidence: dict[str, float] = field(default_factory=dict)
    events: int = 0  # events quarantined with this campaign's id (first verdicts)
    revoked_accounts: int = 0  # members whose earlier releases were revoked
    established: int = 0  # extreme ratings of established accounts quarantined, not members
    closed: bool = False
    start_clock: int = 0  # stream clock (rated events seen) of the window start
    last_clock: int = 0  # stream clock of the last activity (for the hold)
    # Each target's natural rate of the campaign's extreme (per rated event) when it became
    # a target, from all accounts and from established accounts only: growth goes through
    # quiet targets, not through popular camouflage.
    target_rates: dict[str, float] = field(default_factory=dict)
    target_established_rates: dict[str, float] = field(default_factory=dict)
    target_all_rates: dict[str, float] = field(default_factory=dict)  # ratings of any value
    target_established_all_rates: dict[str, float] = field(default_factory=dict)
    # Each target's stream clock and established raters' count at its extreme when it
    # became one, to notice an item that has since grown popular.
    target_baselines: dict[str, tuple[int, float]] = field(default_factory=dict)

    @property
    def window(self) -> tuple[float, float]:
        return self.start_ts, self.last_ts

    def copy(self) -> Campaign:
        return Campaign(
            self.id,
            self.detector,
            self.side,
            dict(self.targets),
            dict(self.members),
            self.start_ts,
            self.last_ts,
            self.opened_ts,
            self.score,
            dict(self.evidence),
            self.events,
            self.revoked_accounts,
            self.established,
            self.closed,
            self.start_clock,
            self.last_clock,
            dict(self.target_rates),
            dict(self.target_established_rates),
            dict(self.target_all_rates),
            dict(self.target_established_all_rates),
            dict(self.target_baselines),
        )

    def summary(self) -> str:
        """One line a reviewer can act on."""
        hours = max(self.last_ts - self.start_ts, 0.0) / 3600.0
        targets = ", ".join(list(self.targets)[:3]) + ("..." if len(self.targets) > 3 else "")
        fresh = self.evidence.get("fresh_members")
        new = f", {int(fresh)} of them new" if fresh is not None else ""
        return (
            f"campaign {self.id}: {len(self.members)} accounts {self.side} {targets} "
            f"over {hours:.1f} h{new}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view for the review service and reports."""
        return {
            "id": self.id,
            "detector": self.detector,
            "side": self.side,
            "targets": sorted(self.targets),
            "members": sorted(self.members),
            "n_members": len(self.members),
            "start_ts": self.start_ts,
            "last_ts": self.last_ts,
            "opened_ts": self.opened_ts,
            "score": self.score,
            "evidence": dict(self.evidence),
            "events": self.events,
            "revoked_accounts": self.revoked_accounts,
            "established_events": self.established,
            "closed": self.closed,
            "summary": self.summary(),
        }
