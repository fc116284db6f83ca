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
