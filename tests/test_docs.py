"""Docs that are generated from the code must match it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_doc_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_config_doc.py"), "--check"]
    )
    assert result.returncode == 0, "run: python scripts/gen_config_doc.py"
