"""The one code path every run takes: `llmkit train`, `make finetune-lora` and `llmkit.Trainer(recipe).train()`.

recipe → run directory → base model (resolved, family checked) → task runner (data → method → trainer) → outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from llmkit import kernels, models, outputs, tasks
from llmkit.console import say, set_verbosity
from llmkit.data.memory import attach
from llmkit.errors import LlmkitError, RecipeError, first_line
from llmkit.outputs import RunDir
from llmkit.recipe import Recipe
from llmkit.recipe.tasks import METRIC_TASKS
from llmkit.result import RunResult
from llmkit.run import RunEnv, distributed_state, method_context, resource_metrics, save_run

__all__ = ["RunResult", "Trainer", "train"]


class Trainer:
    """Train one recipe. `Trainer(Recipe.from_yaml("r.yaml")).train()` is exactly what `llmkit train r.yaml` does.

    From a notebook: `train` / `validation` / `test` take rows you hold (a datasets.Dataset or DatasetDict, a pandas
    DataFrame, a list of dicts) in place of the recipe's files; `callbacks` are transformers TrainerCallbacks, put on
    the task's trainer whatever the task; `compute_metrics(predictions, references) -> {name: number}` adds your
    metrics to a classifier's (label ids) or a seq2seq model's (generated and reference texts). docs/python-api.md.
    """

    def __init__(
        self,
        recipe: Recipe,
        source: str | None = None,
        *,
        train: Any = None,
        validation: Any = None,
        test: Any = None,
        callbacks: Sequence[Any] = (),
        compute_metrics: Callable[[Any, Any], dict[str, Any]] | None = None,
    ):
        if not isinstance(recipe, Recipe):
            raise RecipeError(
                f"llmkit.Trainer takes a Recipe (Recipe.from_yaml(path), Recipe(...)), not a {type(recipe).__name__}"
            )
        if compute_metrics is not None and recipe.task not in METRIC_TASKS:
            raise RecipeError(
                f"compute_metrics: task {recipe.task} reports a held-out loss only, which metrics on predictions "
                f"cannot add to; remove compute_metrics (tasks {', '.join(METRIC_TASKS)} take it)"
            )
        self.recipe = recipe
        self.source = source
        self.data = {"train": train, "validation": validation, "test": test}
        self.callbacks = tuple(callbacks)
        self.compute_metrics = compute_metrics

    def train(self) -> RunResult:
        recipe = attach(self.recipe, **self.data)  # rows become sources here, checked before anything loads
        return train(recipe, self.source, callbacks=self.callbacks, compute_metrics=self.compute_metrics)


def train(
    recipe: Recipe,
    source: str | None = None,
    *,
    callbacks: Sequence[Any] = (),
    compute_metrics: Callable[[Any, Any], dict[str, Any]] | None = None,
) -> RunResult:
    """Run one recipe. Under `torchrun` / `accelerate launch` every process runs this; only the main one writes the
    run directory, and the others wait for it at each step that changes it."""
    started = time.time()
    recipe.data.required_train()  # a recipe for Python (no data.train) says so before anything loads
    set_verbosity()
    state = distributed_state(recipe)
    kernels.check(recipe, source)  # before any weights load
    run = RunDir.for_output(recipe.output_dir)
    resume = run.check(recipe.training.resume_from_checkpoint)
    state.wait_for_everyone()  # every process has checked before any writes

    ref = recipe.model_ref()
    with state.main_process_first():  # a GGUF is dequantised once, then the cache serves the others
        base = models.resolve_base(recipe.model, ref)
    problems = recipe.compatibility_problems(ref=replace(ref, model_type=base.model_type))
    lengths = {"data.max_length": recipe.data.max_length, "data.max_target_length": recipe.data.max_target_length}
    problems += models.length_problems(base, lengths)
    if problems:
        raise RecipeError(problems, source)
    env = RunEnv(
        recipe=recipe,
        run=run,
        base=base,
        resume_from=resume,
        callbacks=tuple(callbacks),
        compute_metrics=compute_metrics,
    )
    try:  # peft / bitsandbytes configs check themselves here, before any weights load
        recipe.method.upstream_config(method_context(env))
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"method: {first_line(exc)}", source) from None
    task = tasks.get(recipe.task)
    benchmarks = _benchmarks(recipe, source)  # every task checked before training, so a bad one costs nothing

    fresh = resume is None
    if fresh and run.work.is_dir() and any(run.work.iterdir()) and state.is_main_process:
        say(f"no complete checkpoint in {run.checkpoints}: starting over (training.resume_from_checkpoint: auto)")
    if state.is_main_process:
        run.start(recipe.to_yaml(), resume)
    state.wait_for_everyone()
    say(f"task {recipe.task} · {base.family} ({base.model_type}) · method {recipe.method.name} · {run.work}")
    try:
        result = task.run(env)
        save_run(env, result)
    except BaseException:
        if state.is_main_process and fresh and run.last_checkpoint() is None:
            run.discard()  # nothing worth resuming: leave no trace of the failed run
        raise
    metrics = {**result.metrics, **resource_metrics(result.built)}
    manifest_extra = {}
    if benchmarks is not None and state.is_main_process:
        from llmkit.benchmark.run import after_training

        metrics["benchmarks"], provenance = after_training(env, result, benchmarks)
        manifest_extra["benchmarks"] = [provenance]
    metrics["wall_time_s"] = round(time.time() - started, 2)
    metrics["processes"] = state.num_processes
    state.wait_for_everyone()  # the main process has saved the model
    if state.is_main_process:
        run.finish(metrics, {**outputs.manifest(source, result.data, started), **result.manifest, **manifest_extra})
    state.wait_for_everyone()
    say(f"done: {run.final}")
    return RunResult(run.final, metrics, result.built.model, result.tokenizer)


def _benchmarks(recipe: Recipe, source: str | None) -> Any:
    """The recipe's `evaluation.benchmarks` as the harness resolves them, or None when it lists none."""
    if recipe.evaluation is None or not recipe.evaluation.benchmarks:
        return None
    from llmkit.benchmark.run import prepare

    try:
        return prepare(recipe)
    except RecipeError:
        raise
    except LlmkitError as exc:
        raise RecipeError(str(exc), source) from None
