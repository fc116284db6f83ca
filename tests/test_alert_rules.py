"""The alert rules: promtool checks and unit tests, Grafana's copy, runbooks in the docs.

promtool comes with Debian's ``prometheus`` package; without it these tests fail (never
skip) and say how to install it.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "grafana/rules/streamguard.rules.yml"
RULE_TESTS = ROOT / "grafana/rules/streamguard.rules.test.yml"
OPERATIONS = ROOT / "docs/OPERATIONS.md"
REQUIRED = {
    "StreamGuardQuarantineRateSpike",
    "StreamGuardNewCampaign",
    "StreamGuardDriftAlarm",
    "StreamGuardDLQSpike",
    "StreamGuardConsumerLagGrowing",
    "StreamGuardNoEvents",
    "StreamGuardDown",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: apt-get install -y prometheus")
    return path


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sg_grafana_build", ROOT / "grafana/build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=RULES.parent)


def test_promtool_check_rules_passes() -> None:
    result = run(promtool(), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run(promtool(), "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_fail_when_a_rule_is_broken(tmp_path: Path) -> None:
    """The unit tests have teeth: a rule that never fires makes them fail."""
    broken = RULES.read_text().replace(
        "sum by (job) (increase(streamguard_campaigns_detected_total[10m])) > 0",
        "sum by (job) (increase(streamguard_campaigns_detected_total[10m])) > 1e9",
    )
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "StreamGuardNewCampaign" in result.stdout + result.stderr


def test_every_alert_fires_on_a_synthetic_series_and_stays_quiet_on_a_healthy_one() -> None:
    names = {a["alert"] for a in alerts()}
    assert names >= REQUIRED
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == names, names - fires
    assert quiet == names, names - quiet


def test_every_alert_has_a_summary_severity_and_runbook_section() -> None:
    docs = OPERATIONS.read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", docs, flags=re.M)
    }
    for alert in alerts():
        name = alert["alert"]
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        anchor = annotations["runbook_url"].split("#", 1)[1]
        assert annotations["runbook_url"] == f"docs/OPERATIONS.md#{anchor}", name
        assert anchor == name.lower() and anchor in headings, f"no runbook section for {name}"
        section = docs.split(f"### {name}", 1)[1].split("\n### ", 1)[0]
        for part in ("**Summary**", "**What to check**", "**What to do**"):
            assert part in section, f"{name}: runbook lacks {part}"


def test_generated_files_are_up_to_date() -> None:
    build = load_build()
    stale = [
        str(path.relative_to(ROOT))
        for path, text in build.outputs().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"run python grafana/build.py to regenerate: {stale}"


def test_grafana_alerts_mirror_the_prometheus_rules() -> None:
    provisioned = yaml.safe_load(
        (ROOT / "grafana/provisioning/alerting/streamguard-alerts.yaml").read_text()
    )
    (group,) = provisioned["groups"]
    rules = {r["title"]: r for r in group["rules"]}
    assert set(rules) == {a["alert"] for a in alerts()}
    uids = [r["uid"] for r in group["rules"]]
    assert len(set(uids)) == len(uids) and all(len(u) <= 40 for u in uids)
    for alert in alerts():
        rule = rules[alert["alert"]]
        assert rule["for"] == alert.get("for", "0s")
        assert rule["labels"] == alert["labels"]
        assert rule["condition"] == "C" and rule["noDataState"] == "OK"
        queries = {d["refId"]: d for d in rule["data"]}
        assert queries["A"]["datasourceUid"] == "prometheus"
        assert "streamguard:" not in queries["B"]["model"]["expr"]  # recordings inlined
        assert "$value " not in " ".join(rule["annotations"].values())


def test_inlined_grafana_expressions_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every Grafana query by checking it as a rule file of its own."""
    provisioned = yaml.safe_load(
        (ROOT / "grafana/provisioning/alerting/streamguard-alerts.yaml").read_text()
    )
    rules = [
        {"record": f"check:{d['refId'].lower()}{i}", "expr": d["model"]["expr"]}
        for i, rule in enumerate(provisioned["groups"][0]["rules"])
        for d in rule["data"]
        if d["datasourceUid"] == "prometheus"
    ]
    path = tmp_path / "grafana-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    result = run(promtool(), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_prometheus_rule_resource_carries_the_same_groups() -> None:
    resource = yaml.safe_load((ROOT / "deploy/k8s/prometheusrule.yaml").read_text())
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
