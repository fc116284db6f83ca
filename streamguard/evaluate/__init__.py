"""``streamguard eval`` and the scenario x seed matrix: detection quality, measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from streamguard.assembly import build_pipeline
from streamguard.config import Settings
from streamguard.evaluate.matrix import format_matrix
from streamguard.evaluate.metrics import (
    TruthRow,
    VerdictRow,
    compute_metrics,
    read_truth_csv,
    write_verdicts_csv,
)
from streamguard.evaluate.report import write_report
from streamguard.evaluate.runner import read_lines, replay

__all__ = ["evaluate_file", "evaluate_lines", "run_matrix"]


def evaluate_lines(
    lines: list[bytes],
    truth: dict[str, TruthRow],
    out: Path,
    settings: Settings,
    bootstrap_servers: str | None = None,
    batch_size: int = 500,
    title: str = "StreamGuard evaluation",
    progress: bool = True,
) -> dict[str, Any]:
    """Replay, score against truth, write verdicts.csv, metrics.json and report.html."""
    rows: list[VerdictRow]
    if bootstrap_servers:
        from streamguard.evaluate.through_kafka import replay_through_kafka

        rows, elapsed = replay_through_kafka(lines, settings, bootstrap_servers, batch_size)
    else:
        rows, elapsed = replay(build_pipeline(settings), lines, batch_size, progress=progress)
    metrics = compute_metrics(rows, truth, elapsed)
    out.mkdir(parents=True, exist_ok=True)
    write_verdicts_csv(out / "verdicts.csv", rows)
    (out / "metrics.json").write_bytes(orjson.dumps(metrics, option=orjson.OPT_INDENT_2))
    write_report(out, rows, truth, metrics, title)
    return metrics


def evaluate_file(
    events: Path,
    truth: Path,
    out: Path,
    settings: Settings,
    bootstrap_servers: str | None = None,
    batch_size: int = 500,
) -> dict[str, Any]:
    return evaluate_lines(
        read_lines(events),
        read_truth_csv(truth),
        out,
        settings,
        bootstrap_servers,
        batch_size,
        title=f"StreamGuard evaluation: {events}",
    )


def run_matrix(
    settings: Settings,
    scenarios: list[str] | None,
    seeds: list[int],
    bases: list[str],
    events: int,
    out: Path,
) -> str:
    """Simulate and evaluate every (scenario, base, seed); returns the markdown table."""
    from streamguard.simulate import SCENARIOS, simulate, write_simulation

    names = scenarios or list(SCENARIOS)
    results = []
    for base in bases:
        for name in names:
            for seed in seeds:
                run_dir = out / f"{base}-{name}-{seed}"
                sim = simulate(name, events, seed, base=base)
                write_simulation(sim, run_dir)
                metrics = evaluate_file(
                    run_dir / "events.jsonl", run_dir / "truth.csv", run_dir, settings
                )
                results.append({"scenario": name, "base": base, "seed": seed, "metrics": metrics})
    table = format_matrix(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "matrix.md").write_text(table + "\n", encoding="utf-8")
    (out / "matrix.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return table
