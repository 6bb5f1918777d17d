"""`llmkit eval`: a trained model's task metrics on one split of a recipe's data, written to JSON.

The checkpoint is a finished run directory, or one of its trainer checkpoints (`<run>/checkpoints/checkpoint-N`);
the recipe says which data and which metrics. Splits are read exactly as training read them (same seeded carve-out).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit import samples as generated
from llmkit.console import say, set_verbosity
from llmkit.data.load import load_split
from llmkit.errors import LlmkitError, RecipeError
from llmkit.methods import RUN_META, read_run
from llmkit.metrics import ExtraMetrics
from llmkit.models import ResolvedModel, Trained, load_trained
from llmkit.outputs import RunDir, write_json
from llmkit.recipe import Recipe
from llmkit.run import RunEnv, distributed_state
from llmkit.tasks import evaluator

EVAL_ONLY = {"eval_strategy": "no", "save_strategy": "no", "load_best_model_at_end": False, "eval_steps": None}

# The metric prefix of each split: validation matches the `eval_*` names in a run's metrics.json.
PREFIX = {"train": "train", "validation": "eval", "test": "test"}


@dataclass(frozen=True)
class Checkpoint:
    run_dir: Path  # the finished run: llmkit.json, tokenizer, recipe.yaml
    weights: Path | None  # a trainer checkpoint inside it, or None for the final weights
    info: dict[str, Any]  # llmkit.json

    def load(self) -> Trained:
        trained = load_trained(self.run_dir, weights=self.weights)
        if _cuda() and trained.model.device.type == "cpu":
            trained.model.to("cuda")
        return trained

    def env(self, recipe: Recipe, scratch: str) -> RunEnv:
        """What the task's `evaluate` runs with: the recipe's training settings minus those of a training loop (an
        eval-only Trainer refuses eval_strategy without a training eval set), in a scratch run directory."""
        training = recipe.training.model_copy(update=EVAL_ONLY)
        base = ResolvedModel(str(self.run_dir), self.info["model_type"], self.info["family"], recipe.model)
        eval_recipe = recipe.model_copy(update={"training": training})
        return RunEnv(recipe=eval_recipe, run=RunDir.for_output(scratch), base=base)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def find_checkpoint(path: str | os.PathLike[str], task: str) -> Checkpoint:
    """Locate a run (or one of its checkpoints) and check it was trained for `task`; loads nothing heavy."""
    path = Path(path)
    if not path.is_dir():
        raise LlmkitError(f"--checkpoint '{path}' does not exist.")
    run_dir, weights = path, None
    if not (path / RUN_META).is_file():
        if path.parent.name == "checkpoints" and (path.parent.parent / RUN_META).is_file():
            run_dir, weights = path.parent.parent, path
        else:
            raise LlmkitError(
                f"--checkpoint '{path}' is neither a finished llmkit run (it has no {RUN_META}) nor one of its "
                "checkpoints (<run>/checkpoints/checkpoint-N)."
            )
    info, _method = read_run(run_dir)  # a damaged llmkit.json is one sentence here, before anything loads
    if info["task"] != task:
        raise RecipeError(
            f"task: the recipe says '{task}' but '{run_dir}' was trained for task '{info['task']}'; use a "
            f"{info['task']} recipe (the run's own is {run_dir / 'recipe.yaml'})."
        )
    return Checkpoint(run_dir, weights, info)


def evaluate_checkpoint(
    recipe: Recipe,
    checkpoint: str | os.PathLike[str],
    split: str | None = None,
    output: str | None = None,
    samples: int | None = None,
) -> tuple[dict[str, Any], Path]:
    """Metrics of `checkpoint` on `split` (default: test if the recipe has one, else validation), written to
    `output` (default: eval-<split>.json in the checkpoint directory). Returns the metrics and where they went.
    `samples`: also generate for the split's first N prompts, next to the reference (samples-<split>.jsonl)."""
    task = evaluator(recipe.task)
    if samples:
        generated.check(recipe)
    set_verbosity()
    distributed_state(recipe)  # the task's Trainer reuses the process state (use_configured_state), as in training
    found = find_checkpoint(checkpoint, recipe.task)
    split = split or ("test" if recipe.data.test is not None else "validation")
    rows = load_split(recipe.data, split)  # bad data and unloadable metrics fail here, before the model loads
    if recipe.evaluation is not None:
        ExtraMetrics(recipe.evaluation.extra_metrics)
    target = Path(output) if output else Path(checkpoint) / f"eval-{split}.json"
    if not target.parent.is_dir():
        raise LlmkitError(f"--output: the directory '{target.parent}' does not exist.")
    trained = found.load()
    with tempfile.TemporaryDirectory() as scratch:
        metrics = task.evaluate(found.env(recipe, scratch), trained, rows, PREFIX[split])
    report = {"checkpoint": str(checkpoint), "split": split, "data": rows.name, "rows": len(rows), **metrics}
    if samples:
        path = target.with_name(f"samples-{split}.jsonl")
        report["samples"] = str(generated.write(recipe, trained, rows.rows[:samples], rows.where[:samples], path))
    write_json(target, report)
    say(f"wrote {target}")
    return report, target
