"""`llmkit eval`: a trained model's task metrics on one split of a recipe's data, written to JSON.

The run is a finished run directory, or one of its trainer checkpoints (`<run>/checkpoints/checkpoint-N`); its own
recipe.yaml says which data and which metrics (relative paths read from where it was trained), overrides or another
recipe point it at other data. Splits are read exactly as training read them (same seeded carve-out).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit import outputs
from llmkit import samples as generated
from llmkit.console import say, set_verbosity
from llmkit.data.load import load_split
from llmkit.errors import LlmkitError, RecipeError
from llmkit.methods import RUN_META, read_run
from llmkit.metrics import ExtraMetrics
from llmkit.models import ResolvedModel, Trained, load_trained
from llmkit.outputs import RunDir, write_json
from llmkit.recipe import DataSection, DataSource, Recipe
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


def find_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Locate a run (or one of its checkpoints); loads nothing heavy."""
    path = Path(path)
    if not path.is_dir():
        raise LlmkitError(f"run '{path}' does not exist; give the output_dir of a finished llmkit train.")
    run_dir, weights = path, None
    if not (path / RUN_META).is_file():
        if path.parent.name == "checkpoints" and (path.parent.parent / RUN_META).is_file():
            run_dir, weights = path.parent.parent, path
        else:
            raise LlmkitError(
                f"'{path}' is neither a finished llmkit run (it has no {RUN_META}) nor one of its checkpoints "
                "(<run>/checkpoints/checkpoint-N)."
            )
    info, _method = read_run(run_dir)  # a damaged llmkit.json is one sentence here, before anything loads
    return Checkpoint(run_dir, weights, info)


def run_recipe(found: Checkpoint, overrides: Sequence[str] = (), recipe: str | None = None) -> Recipe:
    """What to evaluate or predict with: the run's own recipe.yaml (its relative data paths read from where it was
    trained) with `overrides`, or another recipe file for the same task (other data)."""
    if recipe is not None:
        other = Recipe.from_yaml(recipe, list(overrides))
        task = found.info["task"]
        if other.task != task:
            raise RecipeError(
                f"task: the recipe says '{other.task}' but '{found.run_dir}' was trained for task '{task}'; use a "
                f"{task} recipe (the run's own is {found.run_dir / 'recipe.yaml'})."
            )
        return other
    return Recipe.from_run(found.run_dir, list(overrides), trained_in=outputs.trained_in(found.run_dir))


def split_sources(data: DataSection, split: str) -> list[DataSource]:
    """The data sources a split is read from: the test file, or the training file a validation split is carved from."""
    if split == "test":
        return [data.test] if data.test is not None else []
    if split == "validation" and data.validation is not None:
        return [data.validation]
    return data.required_train()


def evaluate_run(
    run: str | os.PathLike[str],
    split: str | None = None,
    output: str | None = None,
    overrides: Sequence[str] = (),
    recipe: str | None = None,
    samples: int | None = None,
) -> tuple[dict[str, Any], Path]:
    """Metrics of `run` (a finished run, or one of its checkpoints) on `split` (default: test if the recipe has one,
    else validation), written to `output` (default: eval-<split>.json in `run`). Returns the metrics and where
    they went. Only the run is needed, and the files of the split it reads. `samples`: also generate for the
    split's first N prompts, next to the reference (samples-<split>.jsonl)."""
    found = find_checkpoint(run)
    chosen = run_recipe(found, overrides, recipe)
    task = evaluator(chosen.task)
    if samples:
        generated.check(chosen)
    set_verbosity()
    distributed_state(chosen)  # the task's Trainer reuses the process state (use_configured_state), as in training
    split = split or ("test" if chosen.data.test is not None else "validation")
    for source in split_sources(chosen.data, split):
        if source.path is not None and not Path(source.path).expanduser().is_file():
            raise LlmkitError(
                f"data.{split}: file '{source.path}' does not exist; evaluate on another file with "
                f"data.{split}=FILE (or --recipe R.yaml)."
            )
    rows = load_split(chosen.data, split)  # bad data and unloadable metrics fail here, before the model loads
    if chosen.evaluation is not None:
        ExtraMetrics(chosen.evaluation.extra_metrics)
    target = Path(output) if output else Path(run) / f"eval-{split}.json"
    if not target.parent.is_dir():
        raise LlmkitError(f"--output: the directory '{target.parent}' does not exist.")
    trained = found.load()
    with tempfile.TemporaryDirectory() as scratch:
        metrics = task.evaluate(found.env(chosen, scratch), trained, rows, PREFIX[split])
    report = {"checkpoint": str(run), "split": split, "data": rows.name, "rows": len(rows), **metrics}
    if samples:
        path = target.with_name(f"samples-{split}.jsonl")
        report["samples"] = str(generated.write(chosen, trained, rows.rows[:samples], rows.where[:samples], path))
    write_json(target, report)
    say(f"wrote {target}")
    return report, target
