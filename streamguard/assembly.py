"""The one place that wires settings into a working pipeline."""

from __future__ import annotations

from streamguard.config import Settings
from streamguard.detectors.anomaly import HalfSpaceAnomalyDetector
from streamguard.detectors.base import Detector
from streamguard.events import RatingScale
from streamguard.features import FeatureConfig, FeatureState
from streamguard.pipeline import Pipeline, ReleaseLog
from streamguard.policy import Policy, PolicyConfig

DAY = 86400.0


def build_detectors(settings: Settings) -> tuple[list[Detector], list[str], list[str]]:
    """The enabled detectors, and which of them are calibrated or decisive."""
    detectors: list[Detector] = []
    calibrated: list[str] = []
    decisive: list[str] = []
    anomaly = settings.detectors.anomaly
    if anomaly.enabled:
        detectors.append(
            HalfSpaceAnomalyDetector(
                anomaly.n_trees, anomaly.height, anomaly.window_size, anomaly.seed, anomaly.engine
            )
        )
        calibrated.append(HalfSpaceAnomalyDetector.name)
    return detectors, calibrated, decisive


def build_pipeline(settings: Settings) -> Pipeline:
    p = settings.pipeline
    detectors, calibrated, decisive = build_detectors(settings)
    policy = Policy(
        calibrated,
        decisive,
        PolicyConfig(
            settings.policy.target_quarantine_rate,
            settings.policy.warmup,
            settings.policy.calibration_window,
        ),
    )
    features = FeatureState(
        FeatureConfig(
            p.rating_low, p.rating_high, p.max_accounts, p.max_items, p.state_ttl_days * DAY
        )
    )
    releases = ReleaseLog(p.max_accounts, 64, p.revocation_window_days * DAY)
    return Pipeline(detectors, policy, features, RatingScale(p.rating_low, p.rating_high), releases)
