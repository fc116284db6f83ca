"""The impact over scenarios, bases and seeds: one line per attack goal, seeds averaged.

Only the attacker's goal metrics are tabulated (the target items' rank, the backdoor's
success rate): targeted poison barely moves global RMSE or accuracy, so their recovery
ratios divide noise by noise. Every run's ``impact.json`` keeps all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from streamguard.config import Settings
from streamguard.impact import impact_file
from streamguard.impact.stream import SETS

GOALS = {
    "target_rank": ("ratings", "target rank"),
    "target_in_top": ("ratings", "target in top 1%"),
    "backdoor_success": ("labels", "backdoor success"),
}
BAR = 0.9
HEADER = (
    "| scenario | base | goal metric | seeds | detection recall | everything | guarded | clean "
    f"| damage recovered mean (min) | seeds >= {BAR:.0%} |"
)
RULE = "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"


def run_impact_matrix(
    settings: Settings,
    scenarios: Sequence[str],
    seeds: Sequence[int],
    bases: Sequence[str],
    events: int,
    out: Path,
) -> str:
    """Simulate and measure every (scenario, base, seed); returns the markdown table."""
    from streamguard.simulate import simulate, write_simulation

    results = []
    for base in bases:
        for name in scenarios:
            for seed in seeds:
                run_dir = out / f"{base}-{name}-{seed}"
                write_simulation(simulate(name, events, seed, base=base), run_dir, campaigns=True)
                impact = impact_file(
                    run_dir / "events.jsonl",
                    run_dir / "truth.csv",
                    run_dir,
                    settings,
                    run_dir / "campaigns.json",
                    progress=False,
                )
                results.append({"scenario": name, "base": base, "seed": seed, "impact": impact})
    table = format_impact_matrix(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "impact.md").write_text(table + "\n", encoding="utf-8")
    (out / "impact.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return table


def format_impact_matrix(results: Sequence[Mapping[str, Any]]) -> str:
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for r in results:
        for goal, (section, _) in GOALS.items():
            if ((r["impact"].get(section) or {}).get(goal)) is not None:
                groups.setdefault((r["scenario"], r["base"], goal), []).append(r["impact"])
    lines = [HEADER, RULE]
    for (scenario, base, goal), runs in groups.items():
        section, label = GOALS[goal]
        values = [run[section][goal] for run in runs]
        recovered = [run["damage_recovered"].get(goal) for run in runs]
        present = [v for v in recovered if v is not None]
        cells = [
            scenario,
            base,
            label,
            str(len(runs)),
            _num(_mean([run["detection"]["recall"] for run in runs]), 3),
            *(_num(_mean([v.get(s) for v in values]), 3) for s in SETS),
            f"{_num(_mean(present), 2)} ({_num(min(present) if present else None, 2)})",
            f"{sum(v >= BAR for v in present)}/{len(runs)}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
