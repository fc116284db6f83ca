"""Write docs/CONFIGURATION.md from the settings models, so the doc cannot drift.

python scripts/gen_config_doc.py          # rewrite the doc
python scripts/gen_config_doc.py --check  # exit 1 if the doc is stale (a test runs this)
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel

from streamguard.config import Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "CONFIGURATION.md"
HEADER = """# Configuration

Generated from `streamguard/config.py` by `python scripts/gen_config_doc.py`; do not edit.

Settings come from an optional TOML or YAML file (`--config FILE`), then environment
variables, then the command-line flags `--bootstrap-servers`, `--input-topic` and
`--group-id`, which win. A bad value stops start-up with a message naming the field.

Each setting below is written as its path in the file; its environment variable is
`STREAMGUARD_` followed by the path in capitals with `__` between levels, e.g.
`kafka.group_id` is `STREAMGUARD_KAFKA__GROUP_ID`.

```toml
[kafka]
bootstrap_servers = "broker1:9092,broker2:9092"
group_id = "streamguard"

[policy]
target_quarantine_rate = 0.01
```

| setting | type | default |
| --- | --- | --- |
"""


def rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += rows(annotation, f"{path}.")
            continue
        if field.default_factory is not None:
            default = f"computed: `{getattr(field.default_factory, '__name__', 'factory')}()`"
        else:
            default = f"`{field.get_default(call_default_factory=False)!r}`"
        if isinstance(annotation, type):
            kind = annotation.__name__
        else:
            kind = str(annotation).replace("typing.", "").replace("pathlib.", "")
        kind = kind.replace("|", "\\|")  # a pipe would end the table cell
        out.append(f"| `{path}` | `{kind}` | {default} |")
    return out


def render() -> str:
    return HEADER + "\n".join(rows(Settings)) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if DOC.exists() and DOC.read_text() == text else 1)
    DOC.write_text(text)
    print(f"wrote {DOC}")
