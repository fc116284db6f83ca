"""Deploy files: compose validates, Prometheus config checks, manifests hang together.

No container engine runs here, so nothing is started: ``docker compose config`` (or the
Debian ``docker-compose`` when the plugin is missing) validates the compose file,
``promtool check config`` the Prometheus config, and the settings the files pass to
StreamGuard are loaded by StreamGuard's own settings loader.
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

from streamguard.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
PROVISIONING = ROOT / "grafana/provisioning"


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sg_grafana_build", ROOT / "grafana/build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.fail(
        "neither `docker compose` nor `docker-compose` is installed: "
        "apt-get install -y docker-compose (scripts/test.sh does)"
    )


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*compose_command(), "-f", str(COMPOSE), "-p", "streamguard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=DEPLOY,
    )


def raw_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def dockerfile_env() -> dict[str, str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", text, flags=re.M):
        env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    with monkeypatch.context() as m:
        for key in [k for k in __import__("os").environ if k.startswith("STREAMGUARD_")]:
            m.delenv(key)
        for key, value in env.items():
            if key.startswith("STREAMGUARD_") and key != "STREAMGUARD_HEALTH_URL":
                m.setenv(key, str(value))
        return load_settings()


# -- compose ---------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", [[], ["--profile", "traffic"]], ids=["default", "traffic"])
def test_compose_config_validates(profile: list[str]) -> None:
    result = compose(*profile, "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    expected = {"kafka", "kafka-topics", "streamguard", "review", "prometheus", "grafana"}
    traffic = {"simulate", "traffic"}
    if profile:
        expected |= traffic
    # docker-compose v1 lists profiled services even when their profile is off.
    assert expected <= set(services) <= expected | traffic
    assert all(services[name]["profiles"] == ["traffic"] for name in traffic & set(services))


def test_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validator is real: an unknown depends_on condition is refused."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("service_healthy", "service_sleepy"))
    result = subprocess.run(
        [*compose_command(), "-f", str(broken), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0


def test_compose_mounts_exist_and_provision_grafana_and_prometheus() -> None:
    services = raw_compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
    prometheus = " ".join(services["prometheus"]["volumes"])
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml" in prometheus
    assert "../grafana/rules:/etc/prometheus/rules" in prometheus
    grafana = " ".join(services["grafana"]["volumes"])
    assert "../grafana/provisioning:/etc/grafana/provisioning" in grafana
    provider = yaml.safe_load((PROVISIONING / "dashboards/streamguard.yaml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert f"../grafana/dashboards:{dashboards_path}" in grafana
    assert "8080:8080" in services["review"]["ports"]


def test_compose_passes_valid_settings_to_streamguard(monkeypatch: pytest.MonkeyPatch) -> None:
    services = raw_compose()["services"]
    base = dockerfile_env()
    run = settings_from_env(base | services["streamguard"]["environment"], monkeypatch)
    assert run.kafka.bootstrap_servers == "kafka:9092"
    assert run.http.host == "0.0.0.0" and run.http.port == 9108
    review = settings_from_env(base | services["review"]["environment"], monkeypatch)
    assert review.review.kafka and review.review.port == 8080
    assert review.store.url == "sqlite:////data/quarantine.db"
    assert services["review"]["environment"]["STREAMGUARD_HEALTH_URL"].endswith(":8080/healthz")


def test_dockerfile_runs_streamguard_as_a_non_root_user() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.startswith("# syntax=docker/dockerfile:1\n")
    assert re.search(r"^USER 10001$", text, flags=re.M)
    assert 'ENTRYPOINT ["streamguard"]' in text and 'CMD ["run"]' in text
    assert re.search(r"^EXPOSE 9108 8080$", text, flags=re.M)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    assert "!streamguard/" in ignore and "!pyproject.toml" in ignore


# -- Prometheus -----------------------------------------------------------------------------


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: apt-get install -y prometheus")
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    # In the container the rules are mounted at /etc/prometheus/rules; point at the repo.
    assert config["rule_files"] == ["/etc/prometheus/rules/streamguard.rules.yml"]
    config["rule_files"] = [str(ROOT / "grafana/rules/streamguard.rules.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"streamguard", "streamguard-review"} <= jobs  # the jobs the alerts name


# -- Kubernetes -----------------------------------------------------------------------------


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_docs() if d["kind"] == kind]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_workloads_selectors_services_and_ports_match() -> None:
    workloads = by_kind("StatefulSet") + by_kind("Deployment")
    assert {w["metadata"]["name"] for w in workloads} == {"streamguard", "streamguard-review"}
    ports: dict[str, set[str]] = {}
    for w in workloads:
        template = w["spec"]["template"]
        selector = w["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template["metadata"]["labels"].items()
        (container,) = template["spec"]["containers"]
        names = {p["name"] for p in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in names
        assert container["args"][-2:] == ["--config", "/etc/streamguard/streamguard.yaml"]
        env = {e["name"]: e for e in container.get("env", [])}
        field = env["STREAMGUARD_KAFKA__INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert field == "metadata.name"
        ports[w["metadata"]["name"]] = names
    for service in by_kind("Service"):
        selector = service["spec"]["selector"]
        matches = [
            w
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports[matches[0]["metadata"]["name"]]
    consumers = by_kind("StatefulSet")[0]
    assert consumers["spec"]["serviceName"] == "streamguard"
    assert consumers["spec"]["podManagementPolicy"] == "Parallel"
    assert consumers["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_service_monitors_select_services_by_label_and_port() -> None:
    services = by_kind("Service")
    monitors = by_kind("ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"streamguard", "streamguard-review"}
    for monitor in monitors:
        selected = [
            s
            for s in services
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert [s["metadata"]["name"] for s in selected] == [monitor["metadata"]["name"]]
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        assert all(e["port"] in port_names for e in monitor["spec"]["endpoints"])
    headless = next(s for s in services if s["metadata"]["name"] == "streamguard")
    assert headless["spec"]["publishNotReadyAddresses"] is True


def test_configmap_is_a_valid_streamguard_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (configmap,) = by_kind("ConfigMap")
    path = tmp_path / "streamguard.yaml"
    path.write_text(configmap["data"]["streamguard.yaml"])
    for key in [k for k in __import__("os").environ if k.startswith("STREAMGUARD_")]:
        monkeypatch.delenv(key)
    settings = load_settings(path)
    consumer = by_kind("StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0]
    review = by_kind("Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert settings.http.port == consumer["ports"][0]["containerPort"]
    assert settings.review.port == review["ports"][0]["containerPort"]
    assert settings.http.host == settings.review.host == "0.0.0.0"
    annotations = by_kind("StatefulSet")[0]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.http.port)


# -- Grafana --------------------------------------------------------------------------------


def test_grafana_provisioning_and_dashboard_hang_together() -> None:
    build = load_build()
    datasource = yaml.safe_load((PROVISIONING / "datasources/prometheus.yaml").read_text())
    assert datasource["datasources"][0]["uid"] == build.DATASOURCE_UID
    notifications = yaml.safe_load((PROVISIONING / "alerting/notifications.yaml").read_text())
    receiver = notifications["policies"][0]["receiver"]
    assert receiver in {c["name"] for c in notifications["contactPoints"]}
    board = build.dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] in ("row", "alertlist"):
            continue
        assert panel["description"] and panel["fieldConfig"]["defaults"]["unit"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            rates = re.findall(r"\[([^\]]+)\]", target["expr"])
            assert all(r == "$__rate_interval" for r in rates), target["expr"]
    titles = {p["title"] for p in board["panels"]}
    for needed in (
        "Throughput by kind",
        "Quarantine rate by reason",
        "Campaigns",
        "Drift alarms",
        "Consumer lag by partition",
        "Tick processing latency",
        "Dead letters by error class",
        "Review queue depth",
    ):
        assert needed in titles
