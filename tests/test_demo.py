"""`streamguard demo`: the whole job on simulated traffic, no Kafka."""

import subprocess
import sys


def test_demo_runs_end_to_end_and_summarises(tmp_path):
    db = tmp_path / "demo.db"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamguard.cli",
            "demo",
            "--events",
            "4000",
            "--http-port",
            "0",
            "--review-port",
            "0",
            "--db",
            str(db),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "processed 4000 events" in out.stdout
    assert "/metrics" in out.stdout and "review    http://127.0.0.1:" in out.stdout
    assert "log in with the token" in out.stdout
    assert db.exists()


def test_bad_config_stops_start_up_naming_the_field(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[policy]\ntarget_quarantine_rate = 7\n")
    out = subprocess.run(
        [sys.executable, "-m", "streamguard.cli", "demo", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "policy.target_quarantine_rate" in out.stderr
