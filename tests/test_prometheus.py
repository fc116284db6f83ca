"""Against a real Prometheus: it scrapes a running demo and every dashboard query answers.

The fixture starts ``streamguard demo`` on simulated traffic (``--linger`` keeps /metrics up
after the stream ends) and Debian's ``prometheus`` on free loopback ports, with a temporary
config, temporary storage and the project's rule file (evaluated every second here). Never
skipped: without ``/usr/bin/prometheus`` the tests fail and say how to install it.
"""

from __future__ import annotations

import importlib.util
import json
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "grafana/rules/streamguard.rules.yml"
EVENTS = 30_000
SCRAPES_AFTER_END = 4
# Everything the test lasts fits in one window, so rates cover the whole run.
RATE_INTERVAL = "1m"
BOUNDED_LABELS = {
    "__name__", "job", "instance", "kind", "action", "detector", "error_class", "partition",
    "table", "outcome", "le", "version",
}  # fmt: skip


def load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sg_grafana_build", ROOT / "grafana/build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Stack:
    prometheus: str
    demo_url: str
    demo_log: Path

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.prometheus}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("query", query=promql)
        result: list[dict[str, Any]] = data["result"]
        return result


def _lines(stream: Any, out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line)


def _wait(condition: Any, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "prometheus is not installed: apt-get install -y prometheus "
            "(scripts/test.sh installs it when promtool is missing)"
        )
    tmp = tmp_path_factory.mktemp("prometheus")
    demo_log = tmp / "demo.stderr"
    prom_log = tmp / "prometheus.log"
    logs = [demo_log.open("w"), prom_log.open("w")]
    demo_port, prom_port = free_port(), free_port()
    procs: list[subprocess.Popen[Any]] = []
    demo: subprocess.Popen[str] | None = None
    try:
        # Prometheus first, so that it scrapes the demo while the stream flows.
        rules = yaml.safe_load(RULES.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"  # evaluate at once, not after up to 30 s
        (tmp / "rules.yml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp / "rules.yml")],
            "scrape_configs": [
                {
                    "job_name": "streamguard",
                    "static_configs": [{"targets": [f"127.0.0.1:{demo_port}"]}],
                }
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--log.level=warn",
                ],
                cwd=tmp,
                stdout=logs[1],
                stderr=subprocess.STDOUT,
            )
        )
        stack = Stack(f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{demo_port}", demo_log)

        def ready() -> bool:
            if procs[0].poll() is not None:
                pytest.fail(f"prometheus exited:\n{prom_log.read_text()}")
            try:
                with urllib.request.urlopen(f"{stack.prometheus}/-/ready", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        _wait(ready, 30, "prometheus to be ready", prom_log)
        # Target discovery reaches the scrape loop a few seconds after start: wait for the
        # first (failed) scrape of the demo's port before starting the demo.
        _wait(lambda: stack.query('up{job="streamguard"}'), 30, "the first scrape", prom_log)

        demo = subprocess.Popen(
            [
                sys.executable, "-m", "streamguard.cli", "demo", "--events", str(EVENTS),
                "--http-port", str(demo_port), "--db", str(tmp / "demo.db"), "--linger", "90",
            ],
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=logs[0],
            text=True,
        )  # fmt: skip
        procs.append(demo)
        lines: queue.Queue[str] = queue.Queue()
        assert demo.stdout is not None
        threading.Thread(target=_lines, args=(demo.stdout, lines), daemon=True).start()
        seen: list[str] = []

        def demo_printed(pattern: str) -> bool:
            while not lines.empty():
                seen.append(lines.get())
            if demo.poll() is not None and lines.empty():
                pytest.fail(f"the demo exited early:\n{''.join(seen)}\n{demo_log.read_text()}")
            return any(re.search(pattern, line) for line in seen)

        _wait(lambda: demo_printed(r"stream done"), 120, "the demo's stream", demo_log)
        done = time.time()

        def scraped_after_end() -> bool:
            result = stack.query('timestamp(up{job="streamguard"} == 1)')
            return bool(result) and float(result[0]["value"][1]) > done + SCRAPES_AFTER_END

        _wait(scraped_after_end, 30, "scrapes after the stream ended", prom_log)
        yield stack
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if demo is not None and demo.stdout is not None:
            demo.stdout.close()
        for log in logs:
            log.close()


def panel_queries() -> list[tuple[str, str]]:
    build = load_build()
    queries: list[tuple[str, str]] = build.panel_queries(build.dashboard())
    return [(title, expr.replace("$__rate_interval", RATE_INTERVAL)) for title, expr in queries]


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    queries = panel_queries()
    assert len(queries) >= 25
    empty = [f"{title}: {expr}" for title, expr in queries if not stack.query(expr)]
    assert not empty, (
        "dashboard queries with no data from a running StreamGuard "
        "(a detector-reported metric needs a detector whose stats() reports it, see "
        "streamguard/metrics.py):\n  " + "\n  ".join(empty)
    )


def test_the_numbers_are_the_demo_s(stack: Stack) -> None:
    total = stack.query('sum(streamguard_events_total{job="streamguard"})')
    assert float(total[0]["value"][1]) == EVENTS
    verdicts = {
        r["metric"]["action"]: float(r["value"][1])
        for r in stack.query("sum by (action) (streamguard_verdicts_total)")
    }
    assert sum(verdicts.values()) == EVENTS
    assert verdicts["clean"] > 0.5 * EVENTS
    assert verdicts["quarantine"] > 0
    rate = stack.query(f"sum(rate(streamguard_events_total[{RATE_INTERVAL}]))")
    assert float(rate[0]["value"][1]) > 0
    latency = stack.query(
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(streamguard_processing_latency_seconds_bucket[{RATE_INTERVAL}])))"
    )
    assert 0 < float(latency[0]["value"][1]) < 5


def test_rules_load_and_evaluate_without_errors(stack: Stack) -> None:
    groups = stack.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken
    assert stack.query("streamguard:events:rate5m")
    assert stack.query("streamguard:quarantine_ratio:rate5m")


def test_exposed_names_and_labels_follow_the_conventions(stack: Stack) -> None:
    metadata = stack.api("targets/metadata", match_target='{job="streamguard"}')
    types = {m["metric"]: m["type"] for m in metadata if m["metric"].startswith("streamguard")}
    assert types
    for name, kind in types.items():
        if kind == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
    for name in ("streamguard_processing_latency_seconds", "streamguard_batch_size_events"):
        assert types[name] == "histogram"
    series = stack.api("series", **{"match[]": '{__name__=~"streamguard_.+"}'})
    labels = {key for s in series for key in s}
    assert labels <= BOUNDED_LABELS, labels - BOUNDED_LABELS
    assert len(series) < 400  # a few hundred series, whatever the traffic
