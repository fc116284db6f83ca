"""StreamGuard: a streaming data-poisoning monitor for retraining pipelines.

It reads feedback events, scores each with online detectors, releases clean events to the
topic retraining reads and holds suspicious ones in quarantine, with reasons.
"""

__version__ = "0.1.0"
