"""The one place that wires settings into a working pipeline."""

from __future__ import annotations

from streamguard.config import Settings
from streamguard.detectors.anomaly import HalfSpaceAnomalyDetector
from streamguard.detectors.base import Detector
from streamguard.detectors.campaign import CampaignDetector
from streamguard.detectors.drift import DriftDetector
from streamguard.detectors.duplicates import NearDuplicateDetector
from streamguard.detectors.label_flip import LabelFlipDetector
from streamguard.detectors.offload import DetectorProcess
from streamguard.detectors.slow_push import SlowPushDetector
from streamguard.detectors.triggers import TriggerDetector
from streamguard.events import RatingScale
from streamguard.features import FeatureConfig, FeatureState
from streamguard.gc_tuning import tune_collector
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
    drift = settings.detectors.drift
    if drift.enabled:  # decisive: see streamguard/detectors/drift.py
        scale = settings.pipeline.rating_low, settings.pipeline.rating_high
        knobs = drift.model_dump(exclude={"enabled"})
        detectors.append(DriftDetector(**knobs, rating_low=scale[0], rating_high=scale[1]))
        decisive.append(DriftDetector.name)
    low, high = settings.pipeline.rating_low, settings.pipeline.rating_high
    content = settings.detectors  # text and label attacks, all decisive
    text_detectors: list[Detector] = []
    if content.near_duplicate.enabled:
        text_detectors.append(NearDuplicateDetector.from_settings(content.near_duplicate))
    if content.trigger.enabled:
        text_detectors.append(TriggerDetector.from_settings(content.trigger, low, high))
    if content.label_flip.enabled:
        text_detectors.append(LabelFlipDetector.from_settings(content.label_flip, low, high))
    detectors.extend(text_detectors)
    decisive.extend(d.name for d in text_detectors)
    slow_push = settings.detectors.slow_push
    if slow_push.enabled:  # decisive, see detectors/slow_push.py; before the
        # campaign detector: the pipeline revokes from the first flag of an account, and this
        # one reaches back to the member's first event
        knobs = slow_push.model_dump(exclude={"enabled"})
        detectors.append(SlowPushDetector(**knobs, rating_low=low, rating_high=high))
        decisive.append(SlowPushDetector.name)
    campaign = settings.detectors.campaign
    if campaign.enabled:  # decisive: lockstep groups, see streamguard/detectors/campaign.py
        knobs = campaign.model_dump(exclude={"enabled"})
        detectors.append(CampaignDetector(**knobs, rating_low=low, rating_high=high))
        decisive.append(CampaignDetector.name)
    return _offload(detectors, settings), calibrated, decisive


def _offload(detectors: list[Detector], settings: Settings) -> list[Detector]:
    """The detectors, those named in ``pipeline.second_process_detectors`` in a second
    process of their own (streamguard/detectors/offload.py), in the same places."""
    names = set(settings.pipeline.second_process_detectors)
    moved = [d for d in detectors if d.name in names]
    if not moved:
        return detectors
    proxies = iter(DetectorProcess(moved, settings.pipeline.gc_gen0_threshold).proxies())
    return [next(proxies) if d.name in names else d for d in detectors]


def build_pipeline(settings: Settings) -> Pipeline:
    """The pipeline the settings describe; also sets this process's garbage collector for it."""
    p = settings.pipeline
    tune_collector(p.gc_gen0_threshold)
    detectors, calibrated, decisive = build_detectors(settings)
    policy = Policy(
        calibrated,
        decisive,
        PolicyConfig(
            settings.policy.target_quarantine_rate,
            settings.policy.calibrated_share,
            settings.policy.warmup,
            settings.policy.calibration_window,
        ),
    )
    features = FeatureState(
        FeatureConfig(
            p.rating_low, p.rating_high, p.max_accounts, p.max_items, p.state_ttl_days * DAY
        )
    )
    releases = ReleaseLog(
        p.max_accounts,
        p.revocable_releases_per_account,
        p.revocation_window_days * DAY,
        p.revocation_min_accounts,
    )
    scale = RatingScale(p.rating_low, p.rating_high)
    return Pipeline(detectors, policy, features, scale, releases, p.micro_batch)
