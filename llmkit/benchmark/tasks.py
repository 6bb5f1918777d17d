"""The lm-evaluation-harness tasks to run, as the harness knows them, checked before any model loads: unknown names
(with the closest one), hub tasks while offline, broken task files and n-shots larger than a task's few-shot pool
are each one sentence. The task list's syntax (names, n-shots, files, the preset) is `llmkit.recipe.benchmarks`,
torch- and lm-eval-free, so `llmkit validate` checks it too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from llmkit.errors import LlmkitError, did_you_mean, first_line
from llmkit.extras import missing
from llmkit.recipe.benchmarks import SHIPPED_TASK, Benchmark, parse

__all__ = ["Benchmark", "Resolved", "parse", "require_harness", "resolve"]


@dataclass
class Resolved:
    """The tasks as the harness knows them: what to pass to it, the name it reports each under, where each comes
    from (for the manifest)."""

    manager: Any  # lm_eval.tasks.TaskManager
    items: list[tuple[Benchmark, str]]  # each task and the name its results are reported under
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def by_fewshot(self) -> dict[int | None, list[str]]:
        """What to pass to the harness, grouped by n-shot (one `simple_evaluate` call each)."""
        groups: dict[int | None, list[str]] = {}
        for benchmark, _ in self.items:
            groups.setdefault(benchmark.num_fewshot, []).append(harness_name(benchmark))
        return groups


def harness_name(benchmark: Benchmark) -> str:
    """What the harness is given: a task name as it is, a task file by its absolute path (as `lm_eval --tasks`)."""
    return str(Path(benchmark.name).expanduser().absolute()) if benchmark.is_file else benchmark.name


def require_harness() -> None:
    problem = missing("lm_eval")
    if problem:
        raise LlmkitError(f"{problem}.")


@cache
def task_manager(registry: bool) -> Any:
    """lm-eval's task index. Indexing every task it ships takes a while (seconds to tens of seconds), so only a task
    name asks for it, and once per process."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=registry)


def resolve(benchmarks: Sequence[Benchmark], key: str = "--tasks") -> Resolved:
    """Ask the harness for every task (loading its data, as the evaluation will): one sentence for the first that
    cannot run."""
    require_harness()
    manager = task_manager(any(not b.is_file for b in benchmarks))
    resolved = Resolved(manager, [])
    for benchmark in benchmarks:
        target = harness_name(benchmark)
        if not benchmark.is_file and benchmark.name not in manager.all_tasks:
            raise LlmkitError(
                f"{key}: '{benchmark.name}' is not an lm-eval task{did_you_mean(benchmark.name, manager.all_tasks)} "
                "(`lm-eval ls tasks` lists them; a local task file ends in .yaml)."
            )
        loaded = _load(manager, target, benchmark, key)
        shown = _reported_name(loaded, benchmark)
        for task in loaded["tasks"].values():
            problem = _fewshot_problem(task, benchmark, key)
            if problem:
                raise LlmkitError(problem)
        resolved.items.append((benchmark, shown))
        resolved.sources[shown] = _source(benchmark)
    return resolved


def _load(manager: Any, target: str, benchmark: Benchmark, key: str) -> dict[str, Any]:
    try:
        loaded = manager.load([target])
    except Exception as exc:  # the harness raises many types for a task it cannot build or whose data it cannot read
        if benchmark.is_file:
            raise LlmkitError(
                f"{key}: '{benchmark.name}' is not a valid lm-eval task file ({type(exc).__name__}: {first_line(exc)})."
            ) from None
        if _offline():
            raise LlmkitError(
                f"{key}: task '{benchmark.name}' reads its data from the Hugging Face hub, which is offline here "
                f"(HF_HUB_OFFLINE=1); pass a local lm-eval task file instead (e.g. {SHIPPED_TASK}), or unset "
                "HF_HUB_OFFLINE to download it."
            ) from None
        raise LlmkitError(f"{key}: cannot load task '{benchmark.name}': {first_line(exc)}.") from None
    if not loaded.get("tasks"):
        raise LlmkitError(f"{key}: '{benchmark.name}' names no task the harness can run.")
    return loaded


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _reported_name(loaded: dict[str, Any], benchmark: Benchmark) -> str:
    """The name the harness reports results under: a registered name as given; a file's task or group name."""
    if not benchmark.is_file:
        return benchmark.name
    groups = [name for name, children in loaded.get("group_map", {}).items() if children]
    return groups[0] if groups else next(iter(loaded["tasks"]))


def _fewshot_problem(task: Any, benchmark: Benchmark, key: str) -> str | None:
    """An explicit n-shot the harness would ignore (the task fixes 0) or could not fill from the task's pool."""
    n, name = benchmark.num_fewshot, task.config.task
    if not n:
        return None
    if task.get_config("num_fewshot") == 0:
        return f"{key}: {name} fixes its n-shot at 0 in its config, so the harness would ignore {n}; use 0."
    try:
        pool = len(task.fewshot_docs() or [])
    except Exception:  # a task without any split to draw examples from
        pool = 0
    eval_split = task.config.test_split if task.has_test_docs() else task.config.validation_split
    same = bool(task.config.fewshot_split) and task.config.fewshot_split == eval_split
    pool -= int(same and pool > 0)  # the question being asked is never its own example
    if n > pool:
        where = f"its '{task.config.fewshot_split}' split" if task.config.fewshot_split else "its examples"
        less = ", less the question asked" if same else ""
        return (
            f"{key}: {name} has {pool} few-shot examples ({where}{less}), fewer than the {n} asked; use at most {pool}."
        )
    return None


def _source(benchmark: Benchmark) -> dict[str, Any]:
    """Where a task comes from: lm-eval's own registry, or a file (with its sha256 and its local data files')."""
    if not benchmark.is_file:
        return {"source": "lm-eval registry"}
    path = Path(benchmark.name).expanduser()
    out: dict[str, Any] = {"source": str(path), "sha256": _sha256(path)}
    try:
        import yaml

        config = yaml.safe_load(path.read_text()) or {}
        files = (config.get("dataset_kwargs") or {}).get("data_files") or {}
        files = files.values() if isinstance(files, dict) else [files] if isinstance(files, str) else files
        out["data"] = {str(f): _sha256(Path(f)) for f in files if isinstance(f, str) and Path(f).is_file()}
    except Exception:  # `!function` tags and the like: the file's own hash still pins it
        pass
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
