#!/usr/bin/env bash
# The one test command (README "Run the tests"; .ci/run calls exactly this).
# Installs everything the tests use on a fresh Debian machine, starts the real services
# (Kafka via deploy/local-kafka.sh), then runs lint, type checks and the full test suite.
# Under CI=true a service that does not come up fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

export STREAMGUARD_TEST_KAFKA_PORT="${STREAMGUARD_TEST_KAFKA_PORT:-39092}"
export KAFKA_PORT="$STREAMGUARD_TEST_KAFKA_PORT"

step() { printf '\n==> %s\n' "$*"; }

step "system packages (Debian)"
need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
command -v chromium >/dev/null || need_apt+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# Prometheus and promtool for tests/test_prometheus.py and the alert-rule unit tests; a
# compose validator for tests/test_deploy.py (no engine needed for `config`).
command -v promtool >/dev/null || need_apt+=(prometheus)
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null ||
  need_apt+=(docker-compose)
if ((${#need_apt[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

step "Python packages"
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

step "Kafka broker (deploy/local-kafka.sh start, port $KAFKA_PORT)"
bash deploy/local-kafka.sh start
trap 'bash deploy/local-kafka.sh stop >/dev/null 2>&1 || true' EXIT

step "ruff"
python3 -m ruff check streamguard tests benchmarks
step "mypy"
python3 -m mypy streamguard

step "pytest"
python3 -m pytest -p no:cacheprovider "$@"
