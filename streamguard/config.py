"""Settings: one frozen tree, from a TOML/YAML file, ``STREAMGUARD_...`` variables and flags.

Precedence, lowest first: defaults, the config file, environment variables (nested with a
double underscore, e.g. ``STREAMGUARD_KAFKA__GROUP_ID``), command-line flags. A bad value
stops start-up with :class:`ConfigError`, whose message names the field and the problem.
"""

from __future__ import annotations

import socket
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from streamguard.detectors.campaign import CampaignSettings
from streamguard.detectors.drift import DriftSettings
from streamguard.detectors.duplicates import NearDuplicateSettings
from streamguard.detectors.label_flip import LabelFlipSettings
from streamguard.detectors.slow_push import SlowPushSettings
from streamguard.detectors.triggers import TriggerSettings
from streamguard.gc_tuning import GEN0_THRESHOLD
from streamguard.pipeline import RELEASES_PER_ACCOUNT

_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("streamguard_config_file", default=None)


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which field and why."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "localhost:9092"
    input_topic: str = Field("feedback.events", min_length=1)
    clean_topic: str = Field("feedback.clean", min_length=1)
    quarantine_topic: str = Field("feedback.quarantine", min_length=1)
    dlq_topic: str = Field("feedback.dlq", min_length=1)
    group_id: str = Field("streamguard", min_length=1)
    guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    transactional_id_prefix: str = "streamguard"
    # Names this member in the transactional id; set it per member when several share a host.
    instance_id: str = Field(default_factory=socket.gethostname, min_length=1)
    # At most this many records make a tick, committed in one transaction; detection
    # scores it in micro-batches of pipeline.micro_batch, so a poll may bring more than that
    # without changing a verdict, and a backlog is worked off in fewer transactions.
    max_poll_records: int = Field(1_000, ge=1, le=100_000)
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    session_timeout_ms: int = Field(10_000, ge=1_000)
    poll_timeout_ms: int = Field(200, ge=1)
    # 0: a tick is what one poll returns. >0: after a tick's first record, keep polling up
    # to this long to fill it (fixed-size ticks: replays score exactly like the first run).
    tick_linger_ms: int = Field(0, ge=0)
    # A tick's outputs are flushed when it commits, so lingering costs no latency: it lets
    # the producer send a tick in a few large batches instead of waking its I/O thread
    # for every few records.
    producer_linger_ms: int = Field(100, ge=0, le=60_000)
    producer_batch_bytes: int = Field(512 * 1024, ge=1_024, le=64 * 1024 * 1024)
    # How long the producer waits before a retry. It matters most between transactions:
    # the coordinator refuses the next one (CONCURRENT_TRANSACTIONS) until the last one's
    # markers are written, and kafka-python's sender then sleeps this long (its default is
    # 100 ms: a rare tick took 220 ms instead of 11); 20 ms is the Java client's wait for
    # exactly this case (KAFKA-5477).
    producer_retry_backoff_ms: int = Field(20, ge=1, le=10_000)
    # "process": a child process publishes tick N (and with exactly-once commits its
    # transaction) while this one scores tick N+1. "inline": publish in this process.
    publisher: Literal["process", "inline"] = "process"
    request_timeout_ms: int = Field(30_000, ge=1_000)
    retry_backoff_max_s: float = Field(30.0, gt=0)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    @model_validator(mode="after")
    def _budget(self) -> KafkaSettings:
        if self.session_timeout_ms >= self.max_poll_interval_ms:
            raise ValueError("session_timeout_ms must be below max_poll_interval_ms")
        if self.tick_linger_ms * 4 > self.max_poll_interval_ms:
            raise ValueError("tick_linger_ms must stay below a quarter of max_poll_interval_ms")
        return self


class PipelineSettings(_Section):
    rating_low: float = 1.0
    rating_high: float = 5.0
    max_accounts: int = Field(1_000_000, ge=1)
    max_items: int = Field(200_000, ge=1)
    state_ttl_days: float = Field(30.0, gt=0)
    # How far back a late finding can revoke releases. The log keeps every clean event of
    # the window (about 350 bytes each), so memory is traffic per day x this.
    revocation_window_days: float = Field(14.0, gt=0)
    # On a quiet stream, where the window holds fewer accounts than this, the log keeps
    # the releases of the most recently active this many accounts, however old: a drip of
    # a few fakes a week is found months in. At most this x the per-account cap below.
    revocation_min_accounts: int = Field(10_000, ge=0)
    # How many of an account's latest releases in that window a late finding can revoke:
    # enough for a fake's whole burst. The log never holds more than the window's traffic,
    # nor more than max_accounts x this releases.
    revocable_releases_per_account: int = Field(RELEASES_PER_ACCOUNT, ge=1)
    # Python's cyclic collector runs after this many new container objects (CPython's
    # default, 700, runs it several times a tick; see streamguard/gc_tuning.py). 0 leaves
    # the process's own setting.
    gc_gen0_threshold: int = Field(GEN0_THRESHOLD, ge=0)
    # The most records scored and learned together. A longer tick (kafka.max_poll_records
    # above this, a backlog, eval --batch-size) is scored in consecutive micro-batches of
    # this size and committed as one: detection does not change with how much a poll brings
    # (a detector sees a new pattern as new until the micro-batch it arrived in is learned).
    micro_batch: int = Field(500, ge=1, le=100_000)
    # Detectors that run in a second process, one for all of them, scoring while this
    # process scores the rest, so a service uses a second core (streamguard/detectors/
    # offload.py). The default splits the review path's work about evenly: the trigger
    # detector, its largest part, stays here. () keeps every detector in this process.
    second_process_detectors: tuple[
        Literal["campaign", "slow_push", "trigger", "near_duplicate", "label_flip"], ...
    ] = ("campaign", "slow_push", "near_duplicate", "label_flip")

    @model_validator(mode="after")
    def _scale(self) -> PipelineSettings:
        if self.rating_low >= self.rating_high:
            raise ValueError("rating_low must be below rating_high")
        return self


class AnomalySettings(_Section):
    enabled: bool = True
    engine: Literal["numpy", "river"] = "numpy"
    n_trees: int = Field(10, ge=1, le=200)
    height: int = Field(8, ge=1, le=20)
    window_size: int = Field(250, ge=1)
    seed: int = 42


class DetectorSettings(_Section):
    anomaly: AnomalySettings = AnomalySettings()
    drift: DriftSettings = DriftSettings()
    near_duplicate: NearDuplicateSettings = NearDuplicateSettings()
    trigger: TriggerSettings = TriggerSettings()
    label_flip: LabelFlipSettings = LabelFlipSettings()
    campaign: CampaignSettings = CampaignSettings()
    slow_push: SlowPushSettings = SlowPushSettings()


class PolicySettings(_Section):
    # The quarantine rate the policy is budgeted for on benign traffic, all detectors
    # together (the quarantine-rate alert fires at three times it).
    target_quarantine_rate: float = Field(0.01, gt=0, lt=0.5)
    # The part of that budget the calibrated detectors (half-space trees) may spend on
    # their own, split between them; the rest is headroom for the decisive detectors'
    # false positives (0.3-0.8% on the eval matrix). Low on purpose: the decisive
    # detectors catch the coordinated attacks, the anomaly score is the backstop for lone
    # outliers, and every 0.1% it spends is 0.1% benign FPR.
    calibrated_share: float = Field(0.2, gt=0, le=1)
    warmup: int = Field(1_000, ge=10)
    calibration_window: int = Field(50_000, ge=10)


class StateSettings(_Section):
    # Where detector state is checkpointed, one file per input partition (named by group
    # and partition); share it between the members so a partition that moves in a
    # rebalance takes its state along. None keeps state in memory only.
    dir: Path | None = None
    # Checkpoint a partition every this many of its ticks (and on revocation and shutdown).
    every_ticks: int = Field(100, ge=1)


class StoreSettings(_Section):
    # sqlite:///PATH (embedded) or postgresql://USER@HOST:PORT/DB (shared by review replicas)
    url: str = Field(
        "sqlite:///streamguard-quarantine.db", pattern=r"^(sqlite:///|postgres(ql)?://)"
    )


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)


class ReviewSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # Materialise the quarantine topic and release approvals through Kafka.
    kafka: bool = False


class Settings(BaseSettings):
    """Everything StreamGuard can be told; frozen once loaded."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMGUARD_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    kafka: KafkaSettings = KafkaSettings()
    pipeline: PipelineSettings = PipelineSettings()
    detectors: DetectorSettings = DetectorSettings()
    policy: PolicySettings = PolicySettings()
    store: StoreSettings = StoreSettings()
    state: StateSettings = StateSettings()
    http: HttpSettings = HttpSettings()
    review: ReviewSettings = ReviewSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        file_source = InitSettingsSource(settings_cls, init_kwargs=_FILE_DATA.get() or {})
        return (init_settings, env_settings, file_source)


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML (.toml) or YAML (.yaml/.yml) config file into a dict."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path}: use a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table/mapping at the top level")
    return data


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """File < environment < overrides (the command-line flags); errors name the field."""
    token = _FILE_DATA.set(read_config_file(path) if path else {})
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None
    finally:
        _FILE_DATA.reset(token)


def describe_errors(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {field}: {err['msg']}")
    return "\n".join(lines)
