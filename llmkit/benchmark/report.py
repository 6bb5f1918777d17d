"""The harness's results as rows a person reads: one per task and metric, with its stderr, n-shot and sample count,
the base model's figure and the delta when there is a baseline; the console table, the JSON file, and the run's
metrics.json and manifest.json.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from llmkit.outputs import write_json

SKIPPED = ("alias", "name", "sample_len", "sample_count", "samples")  # result entries that are not metrics


@dataclass(frozen=True)
class Row:
    task: str
    metric: str
    filter: str
    n_shot: int | None
    samples: int | None
    value: float
    stderr: float | None
    baseline: float | None = None
    baseline_stderr: float | None = None

    @property
    def key(self) -> str:
        """`task/metric` (and `,filter` when the metric has one), the name metrics.json records it under."""
        return f"{self.task}/{self.metric}" + ("" if self.filter == "none" else f",{self.filter}")

    @property
    def delta(self) -> float | None:
        return None if self.baseline is None else self.value - self.baseline


def rows(results: dict[str, Any], names: Sequence[str]) -> list[Row]:
    """One row per metric of each requested task or group, in the order asked."""
    out = []
    for name in names:
        entry = (results.get("groups") or {}).get(name) or results["results"].get(name, {})
        for metric_filter, value in sorted(entry.items()):
            metric, _, filt = metric_filter.partition(",")
            if metric in SKIPPED or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = entry.get(f"{metric}_stderr,{filt}")
            out.append(
                Row(
                    task=name,
                    metric=metric,
                    filter=filt or "none",
                    n_shot=_n_shot(results, name),
                    samples=_samples(results, name),
                    value=float(value),
                    stderr=float(stderr) if isinstance(stderr, (int, float)) else None,
                )
            )
    return out


def _leaves(results: dict[str, Any], name: str) -> list[str]:
    children = (results.get("group_subtasks") or {}).get(name)
    return [leaf for child in children for leaf in _leaves(results, child)] if children else [name]


def _n_shot(results: dict[str, Any], name: str) -> int | None:
    shots = {results.get("n-shot", {}).get(leaf) for leaf in _leaves(results, name)} - {None}
    return int(next(iter(shots))) if len(shots) == 1 else None


def _samples(results: dict[str, Any], name: str) -> int | None:
    counts = [results.get("n-samples", {}).get(leaf, {}).get("effective") for leaf in _leaves(results, name)]
    return sum(counts) if counts and None not in counts else None


def with_baseline(tuned: list[Row], base: list[Row]) -> list[Row]:
    by_key = {row.key: row for row in base}
    return [
        replace(row, baseline=by_key[row.key].value, baseline_stderr=by_key[row.key].stderr)
        if row.key in by_key
        else row
        for row in tuned
    ]


def _figure(value: float | None, stderr: float | None = None) -> str:
    """Four decimals, as lm_eval prints them; '± stderr' when there is one."""
    if value is None:
        return ""
    return f"{value:.4f}" + (f" ± {stderr:.4f}" if stderr is not None else "")


def table(found: list[Row]) -> str:
    """A plain-text table: task, n-shot, metric, samples, value ± stderr, and base and delta with a baseline."""
    baseline = any(row.baseline is not None for row in found)
    header = ["task", "n-shot", "metric", "samples", "value ± stderr"] + (
        ["base ± stderr", "delta"] if baseline else []
    )
    lines = [header]
    for row in found:
        metric = row.metric if row.filter == "none" else f"{row.metric} ({row.filter})"
        cells = [row.task, str(row.n_shot), metric, str(row.samples), _figure(row.value, row.stderr)]
        if baseline:
            delta = row.delta
            cells += [_figure(row.baseline, row.baseline_stderr), "" if delta is None else f"{delta:+.4f}"]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def record(found: list[Row], settings: dict[str, Any], models: dict[str, str]) -> dict[str, Any]:
    """The JSON written next to a run (or to --output): every row with what produced it."""
    return {"models": models, "settings": settings, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "results": [{**asdict(row), "delta": row.delta} for row in found]}  # fmt: skip


def merge_into(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """`new` over what `path` already holds, result by result (a task run again replaces its old rows)."""
    if not path.is_file():
        return new
    try:
        old = json.loads(path.read_text())
    except ValueError:
        return new
    keys = {(r["task"], r["metric"], r["filter"]) for r in new["results"]}
    kept = [r for r in old.get("results", []) if (r["task"], r["metric"], r["filter"]) not in keys]
    return {**new, "results": kept + new["results"]}


def in_metrics(found: list[Row]) -> dict[str, dict[str, Any]]:
    """metrics.json's `benchmarks`: `task/metric` → value, stderr, n-shot, samples, and base and delta."""
    out = {}
    for row in found:
        entry = {"value": row.value, "stderr": row.stderr, "n_shot": row.n_shot, "samples": row.samples}
        if row.baseline is not None:
            entry |= {"baseline": row.baseline, "baseline_stderr": row.baseline_stderr, "delta": row.delta}
        out[row.key] = entry
    return out


def record_in_run(run_dir: Path, found: list[Row], provenance: dict[str, Any]) -> None:
    """Add the rows to a finished run's metrics.json (`benchmarks`) and what produced them to its manifest.json
    (`benchmarks`, one entry per evaluation)."""
    metrics_path, manifest_path = run_dir / "metrics.json", run_dir / "manifest.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["benchmarks"] = {**metrics.get("benchmarks", {}), **in_metrics(found)}
    write_json(metrics_path, metrics)
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest["benchmarks"] = [*manifest.get("benchmarks", []), {**provenance, "command": sys.argv}]
    write_json(manifest_path, manifest)


def write_samples(directory: Path, samples: dict[str, list[dict[str, Any]]], suffix: str = "") -> list[Path]:
    """The harness's per-sample log, one JSONL per task (`<task><suffix>.jsonl`)."""
    from lm_eval.utils import handle_non_serializable

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for task, entries in samples.items():
        path = directory / f"{task}{suffix}.jsonl"
        lines = (json.dumps(e, default=handle_non_serializable, ensure_ascii=False) + "\n" for e in entries)
        path.write_text("".join(lines))
        written.append(path)
    return written
