"""The syntax of a benchmark task list (`llmkit benchmark --tasks`, a recipe's `evaluation.benchmarks`), checked
without torch or lm-eval: an lm-eval task or group name (`hellaswag`, `mmlu`), optionally with its n-shot
(`arc_challenge:25`); a local lm-eval task file (`data/mmlu-dev/mmlu_dev.yaml`, the harness's own YAML format); or
the preset `open-llm-leaderboard`. Whether the harness knows a name is `llmkit.benchmark.tasks.resolve`'s to say.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmkit.errors import LlmkitError

# The Hugging Face Open LLM Leaderboard (v1): the four tasks and the n-shot it scored every model with.
PRESETS: dict[str, tuple[tuple[str, int], ...]] = {
    "open-llm-leaderboard": (("arc_challenge", 25), ("hellaswag", 10), ("mmlu", 5), ("truthfulqa_mc2", 0)),
}
TASK_FILES = (".yaml", ".yml")
SHIPPED_TASK = "data/mmlu-dev/mmlu_dev.yaml"  # an offline task to point users at (run from the repository root)


@dataclass(frozen=True)
class Benchmark:
    """One task to run: an lm-eval task or group name, or a local task file; its n-shot (None: the task's own)."""

    name: str
    num_fewshot: int | None = None

    @property
    def is_file(self) -> bool:
        return self.name.endswith(TASK_FILES)

    def __str__(self) -> str:
        return self.name if self.num_fewshot is None else f"{self.name}:{self.num_fewshot}"


def _split(item: str) -> tuple[str, int | None] | str:
    """'name:5' → ('name', 5); 'name' → ('name', None); a malformed n-shot → the problem."""
    name, sep, shots = item.rpartition(":")
    if not sep or not shots.strip().lstrip("-").isdigit():
        return item.strip(), None
    n = int(shots)
    if n < 0:
        return f"'{item}' asks for {n} few-shot examples; use 0 or more"
    return name.strip(), n


def parse(items: Sequence[str], num_fewshot: int | None = None, key: str = "--tasks") -> list[Benchmark]:
    """Tasks from the command line or a recipe: comma-separated or repeated, each `NAME[:N]`, `FILE.yaml[:N]` or a
    preset. `num_fewshot` applies to the tasks that do not give their own. Raises LlmkitError (one sentence)."""
    found = problems(items, key)
    if found:
        raise LlmkitError(found[0])
    out = []
    for item in (part for entry in items for part in entry.split(",") if part.strip()):
        if item.strip() in PRESETS:
            out += [Benchmark(name, n) for name, n in PRESETS[item.strip()]]
            continue
        name, n = _split(item)  # type: ignore[misc]  # problems() refused the malformed ones
        out.append(Benchmark(name, n if n is not None else num_fewshot))
    return out


def problems(items: Sequence[str], key: str = "evaluation.benchmarks") -> list[str]:
    """What is wrong with a task list without asking the harness: an empty name, a malformed n-shot, a missing task
    file, a task listed twice."""
    parts = [part.strip() for entry in items for part in entry.split(",")]
    if not parts or not all(parts):
        return [f"{key}: an empty task name; list lm-eval task names, task files (.yaml) or a preset"]
    seen: set[str] = set()
    for item in parts:
        entries = list(PRESETS[item]) if item in PRESETS else [_split(item)]
        for entry in entries:
            if isinstance(entry, str):
                return [f"{key}: {entry}"]
            name = entry[0]
            if name in seen:
                return [f"{key}: '{name}' is listed twice; give each task once, with one n-shot"]
            seen.add(name)
            if name.endswith(TASK_FILES) and not Path(name).expanduser().is_file():
                return [f"{key}: the task file '{name}' does not exist (relative paths start at {Path.cwd()})"]
    return []
