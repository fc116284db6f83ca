"""Settings precedence (file < env < flags) and errors that name the field."""

import pytest

from streamguard.config import ConfigError, load_settings


def test_defaults_follow_the_design_topics():
    s = load_settings()
    assert (
        s.kafka.input_topic,
        s.kafka.clean_topic,
        s.kafka.quarantine_topic,
        s.kafka.dlq_topic,
    ) == ("feedback.events", "feedback.clean", "feedback.quarantine", "feedback.dlq")
    assert s.kafka.guarantee == "exactly_once"


def test_toml_then_env_then_flags(tmp_path, monkeypatch):
    cfg = tmp_path / "sg.toml"
    cfg.write_text(
        '[kafka]\ngroup_id = "from-file"\ninput_topic = "file.topic"\n'
        'bootstrap_servers = "file:9092"\n[policy]\ntarget_quarantine_rate = 0.02\n'
    )
    monkeypatch.setenv("STREAMGUARD_KAFKA__INPUT_TOPIC", "env.topic")
    monkeypatch.setenv("STREAMGUARD_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    s = load_settings(cfg, {"kafka": {"bootstrap_servers": "flag:9092"}})
    assert s.kafka.group_id == "from-file"
    assert s.kafka.input_topic == "env.topic"
    assert s.kafka.bootstrap_servers == "flag:9092"
    assert s.policy.target_quarantine_rate == 0.02


def test_yaml_file(tmp_path):
    cfg = tmp_path / "sg.yaml"
    cfg.write_text("kafka:\n  group_id: yaml-group\nhttp:\n  port: 0\n")
    s = load_settings(cfg)
    assert s.kafka.group_id == "yaml-group" and s.http.port == 0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[kafka]\nmax_poll_records = 0\n", "kafka.max_poll_records"),
        ("[kafka]\nguarantee = 'sometimes'\n", "kafka.guarantee"),
        ("[policy]\ntarget_quarantine_rate = 2\n", "policy.target_quarantine_rate"),
        ("[kafka]\nnot_a_setting = 1\n", "kafka.not_a_setting"),
        ("[pipeline]\nrating_low = 5\nrating_high = 1\n", "rating_low must be below rating_high"),
        ("[kafka]\nsession_timeout_ms = 400000\n", "session_timeout_ms must be below"),
        ("[detectors.anomaly]\nengine = 'gpu'\n", "detectors.anomaly.engine"),
    ],
)
def test_bad_values_name_the_field(tmp_path, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert needle in str(err.value)


def test_bad_env_value_names_the_field(monkeypatch):
    monkeypatch.setenv("STREAMGUARD_HTTP__PORT", "eighty")
    with pytest.raises(ConfigError, match="http.port"):
        load_settings()


def test_missing_and_unparseable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid"):
        load_settings(broken)
    other = tmp_path / "conf.ini"
    other.write_text("x=1")
    with pytest.raises(ConfigError, match=".toml, .yaml"):
        load_settings(other)


def test_secrets_are_not_printed():
    s = load_settings(overrides={"kafka": {"sasl_password": "hunter2"}})
    assert "hunter2" not in repr(s)
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "hunter2"
