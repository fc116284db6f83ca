import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def kafka_broker() -> str:
    """The real broker, started (idempotently) by deploy/local-kafka.sh; never skipped."""
    from kafka_support import BOOTSTRAP, broker

    started = broker("start")
    if started.returncode != 0:
        pytest.fail(f"the Kafka broker did not come up:\n{started.stdout}\n{started.stderr}")
    return BOOTSTRAP


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server from Debian's package; never skipped."""
    from pg_support import postgres_server as serve

    yield from serve()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """Every store test runs on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'q.db'}"
    from pg_support import fresh_database

    return fresh_database(request.getfixturevalue("postgres_server"))
