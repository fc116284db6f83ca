"""Turn detector scores into verdicts.

Two kinds of detector feed the policy:

- *calibrated* detectors (anomaly scores, drift) give a raw score whose scale means
  nothing by itself. Their threshold is the online (1 - q) quantile of their recent
  scores, where q is this detector's part of the calibrated share of the target
  quarantine rate on benign traffic (default: a fifth of 1%, the rest being headroom for
  the decisive detectors' false positives), over a long window so that a burst cannot
  move it much.
  Nothing is hand-tuned per data set; until a detector has seen ``warmup`` events, and
  scored a tick for real (not still warming up itself, ``Scores.warming``), it cannot
  quarantine.
- *decisive* detectors (a campaign, a trigger phrase) report findings: a score of 0.5 or
  more is a decision, and the score passes through unchanged.

Every score is mapped to a common suspicion scale where 0.5 is "at the threshold", so the
event's overall score (the maximum) ranks events across detectors, and an event is
quarantined exactly when that score reaches 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple

import numpy as np

from streamguard.detectors.base import Scores
from streamguard.events import Action, Reason, Verdict

DECISION = 0.5


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    target_quarantine_rate: float = 0.01
    calibrated_share: float = 0.2
    warmup: int = 1_000
    calibration_window: int = 50_000
    min_threshold: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.target_quarantine_rate < 0.5:
            raise ValueError("target_quarantine_rate must be in (0, 0.5)")
        if not 0.0 < self.calibrated_share <= 1.0:
            raise ValueError("calibrated_share must be in (0, 1]")
        if self.warmup < 10 or self.calibration_window < self.warmup:
            raise ValueError("need 10 <= warmup <= calibration_window")


class OnlineQuantile:
    """The (1 - q) quantile of the last ``window`` values pushed, in a numpy ring buffer."""

    def __init__(self, q: float, window: int) -> None:
        self.q = q
        self.buffer = np.zeros(window)
        self.size = 0
        self.pos = 0

    def push(self, values: np.ndarray) -> None:
        values = values[-len(self.buffer) :]
        end = self.pos + len(values)
        if end <= len(self.buffer):
            self.buffer[self.pos : end] = values
        else:
            split = len(self.buffer) - self.pos
            self.buffer[self.pos :] = values[:split]
            self.buffer[: end - len(self.buffer)] = values[split:]
        self.pos = end % len(self.buffer)
        self.size = min(len(self.buffer), self.size + len(values))

    def value(self) -> float:
        """``np.quantile(window, 1 - q)`` (its default, linear method) to the last bit, from
        a partition at the lower of the two order statistics it interpolates (np.quantile
        partitions at four points: nine times the work on a window of 50,000 scores, once
        a tick). The window holds finite scores only."""
        window = self.buffer[: self.size]
        n = len(window)
        virtual = (n - 1) * (1.0 - self.q)
        below = math.floor(virtual)  # 0 <= virtual <= n - 1: q lies in [0, 1]
        ordered = np.partition(window, below)  # one pivot: two cost five times as much here
        low = float(ordered[below])
        high = float(ordered[below + 1 :].min()) if below + 1 < n else low
        gamma = virtual - below
        diff = high - low
        return high - diff * (1.0 - gamma) if gamma >= 0.5 else low + diff * gamma


class Decisions(NamedTuple):
    """A tick's verdicts, and the positions of those that quarantine (ascending): the
    pipeline and :meth:`Policy.learn` then touch only those in Python."""

    verdicts: list[Verdict]
    held: list[int]


class Policy:
    """Online-calibrated thresholds and the verdict for each event of a tick."""

    def __init__(
        self,
        calibrated: Sequence[str],
        decisive: Sequence[str],
        config: PolicyConfig = PolicyConfig(),
    ) -> None:
        self.config = config
        self.decisive = tuple(decisive)
        budget = config.target_quarantine_rate * config.calibrated_share
        share = budget / max(len(calibrated), 1)
        self.quantiles = {
            name: OnlineQuantile(share, config.calibration_window) for name in calibrated
        }
        self.thresholds: dict[str, float] = {name: np.inf for name in calibrated}

    def normalise(self, name: str, raw: np.ndarray) -> np.ndarray:
        """Raw detector scores on the common scale (0.5 = this detector's threshold)."""
        if name not in self.thresholds:
            return np.clip(raw, 0.0, 1.0)
        thr = self.thresholds[name]
        if not np.isfinite(thr):
            return np.clip(raw, 0.0, 1.0) * DECISION * 0.999  # warming up: rank, never decide
        thr = max(thr, self.config.min_threshold, 1e-9)
        below = DECISION * raw / thr
        above = DECISION + DECISION * (raw - thr) / max(1.0 - thr, 1e-9)
        return np.clip(np.where(raw < thr, below, above), 0.0, 1.0)

    def decide(self, outputs: Mapping[str, Scores], n: int) -> Decisions:
        normalised = {name: self.normalise(name, out.scores) for name, out in outputs.items()}
        overall = np.vstack(list(normalised.values())).max(axis=0) if normalised else np.zeros(n)
        verdicts = list(map(Verdict, repeat(Action.CLEAN, n), overall.tolist()))
        held = np.flatnonzero(overall >= DECISION).tolist()
        for i in held:
            reasons = tuple(
                self._reason(name, outputs[name], i, float(norm[i]))
                for name, norm in normalised.items()
                if norm[i] >= DECISION
            )
            verdicts[i] = Verdict(Action.QUARANTINE, verdicts[i].score, reasons)
        return Decisions(verdicts, held)

    def _reason(self, name: str, out: Scores, i: int, score: float) -> Reason:
        threshold = self.thresholds.get(name)
        detail = out.detail(i) or f"{name} score {out.scores[i]:.3f}"
        if threshold is not None:
            detail = f"{detail} (raw {out.scores[i]:.3f} >= threshold {threshold:.3f})"
        campaign = out.campaign_ids[i] if out.campaign_ids is not None else None
        return Reason(name, score, detail, threshold, campaign)

    def learn(self, outputs: Mapping[str, Scores], decisions: Decisions) -> None:
        """Feed this tick's raw scores to the calibrators and refresh the thresholds.

        Events a decisive detector quarantined (campaign members, trigger carriers) are left
        out: they are known poison, not the benign traffic the rate is meant for. Events a
        calibrated detector quarantined stay in: dropping them would truncate the tail the
        quantile is measured on, and the threshold would ratchet down tick after tick.
        """
        decisive, verdicts = self.decisive, decisions.verdicts
        sample = np.ones(len(verdicts), dtype=bool)
        for i in decisions.held:  # only a held event has reasons
            sample[i] = not any(r.detector in decisive for r in verdicts[i].reasons)
        for name, quantile in self.quantiles.items():
            out = outputs.get(name)
            if out is not None and sample.any():
                quantile.push(out.scores[sample])
            # A detector still warming up gives placeholder scores (zeros): with ticks as
            # long as ``warmup`` the window would hold nothing else, the threshold would be
            # 0 and the next tick all quarantined. They stay at the window's bottom, where
            # a high quantile does not read them once real scores are there.
            if quantile.size >= self.config.warmup and out is not None and not out.warming:
                self.thresholds[name] = quantile.value()
