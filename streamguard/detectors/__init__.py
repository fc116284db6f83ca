"""Detector families; each module holds one, all follow :mod:`streamguard.detectors.base`."""

from streamguard.detectors.base import Batch, Detector, Flag, Scores

__all__ = ["Batch", "Detector", "Flag", "Scores"]
