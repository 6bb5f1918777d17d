"""The steps every task runner shares, as functions: training arguments, the run length, the model under its method,
and saving what a run produced. State flows through arguments and return values: a runner gets a `RunEnv` it cannot
change and returns a `TaskResult`; there is no base runner class and no object to fill in.

The order that matters is in the signatures: `build_model` needs the run length (`total_steps`, which AdaLoRA's
schedule needs before the model is built), and `llmkit.fit.fit` takes the `BuiltModel`, so the method's callbacks
are always installed.
"""

from __future__ import annotations

import json
import math
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import transformers
from accelerate import PartialState
from accelerate.utils import patch_environment
from transformers import PreTrainedTokenizerBase, TrainingArguments

from llmkit import models, precision
from llmkit.console import is_main_process, say
from llmkit.errors import RecipeError, first_line
from llmkit.families import PACKAGED_PREFIX, portable_name
from llmkit.methods import RUN_META, MethodContext
from llmkit.outputs import RunDir
from llmkit.recipe import TASKS, Recipe, TaskSpec


def arg_defaults() -> dict[str, Any]:
    """Training-argument defaults llmkit chooses where transformers' own do not suit a recipe run."""
    return {
        "report_to": "none",  # offline by default; recipes opt in to trackers
        "logging_steps": 10,
        "include_num_input_tokens_seen": "non_padding",  # for tokens/s in metrics.json
        "save_total_limit": 2,
        "dataloader_pin_memory": torch.cuda.is_available(),  # pinning without a GPU only warns
    }


def distributed_state(recipe: Recipe) -> PartialState:
    """The process group, set up before any run-directory work so the processes can wait for one another.

    TrainingArguments is told to reuse it (`use_configured_state`); this is set up the way it would set it up itself,
    except that a machine without CUDA gets `cpu=True`, without which accelerate runs N independent processes
    instead of one data-parallel job.
    """
    extra = recipe.training.model_extra or {}
    kwargs: dict[str, Any] = {"cpu": bool(extra.get("use_cpu")) or not torch.cuda.is_available()}
    if extra.get("ddp_backend"):
        kwargs["backend"] = extra["ddp_backend"]
    if extra.get("ddp_timeout"):
        kwargs["timeout"] = timedelta(seconds=int(extra["ddp_timeout"]))
    # accelerate reads DeepSpeed from the environment; set it only while the state is created.
    with patch_environment(**({"accelerate_use_deepspeed": "true"} if extra.get("deepspeed") else {})):
        return PartialState(**kwargs)


@dataclass(frozen=True)
class RunEnv:
    """What a task runs with: the validated recipe, its run directory and the resolved base model. Built once by
    `llmkit.trainer.train` (or `llmkit eval`); runners read it and never change it."""

    recipe: Recipe
    run: RunDir
    base: models.ResolvedModel
    resume_from: Path | None = None  # the complete checkpoint this run continues (training.resume_from_checkpoint)
    # From Python (`llmkit.Trainer`): transformers TrainerCallbacks `fit` installs on every task's trainer, and a
    # `compute_metrics(predictions, references) -> dict` that classification and seq2seq add to their metrics.
    callbacks: tuple[Any, ...] = ()
    compute_metrics: Callable[[Any, Any], dict[str, Any]] | None = None

    @property
    def spec(self) -> TaskSpec:
        return TASKS[self.recipe.task]

    @property
    def head(self) -> str:
        """The head this task trains on this base model (a distillation student's depends on its data)."""
        return self.recipe.head(self.base.family)

    def tokenizer(self) -> PreTrainedTokenizerBase:
        return models.load_tokenizer(self.base)


@dataclass(frozen=True)
class BuiltModel:
    """The base model under a head, prepared by the recipe's method, and what reloading and reporting it needs."""

    model: Any  # trained in place by the task's trainer
    head: str
    head_kwargs: dict[str, Any]  # what from_pretrained needs to rebuild the head (labels)
    callbacks: list[Any]  # TrainerCallbacks the method needs (AdaLoRA's rank reallocation); `fit` installs them
    trainable_params: int
    total_params: int


@dataclass(frozen=True)
class TaskResult:
    """What a task run returns; `llmkit.trainer.train` saves the model and writes metrics and manifest from it."""

    metrics: dict[str, Any]
    built: BuiltModel  # the trained model (built.model) and how it was built
    tokenizer: PreTrainedTokenizerBase
    data: dict[str, Any]  # every split the run read → {source, sha256, rows}: the manifest's `data`
    meta: dict[str, Any] = field(default_factory=dict)  # more facts for llmkit.json (a distillation's teacher)
    manifest: dict[str, Any] = field(default_factory=dict)  # more for manifest.json (the reward code a run called)


def training_args(
    env: RunEnv, args_class: type[TrainingArguments] = TrainingArguments, *, evaluate: bool = False, **defaults: Any
) -> Any:
    """Recipe keys over task defaults over llmkit defaults; upstream's own errors become RecipeErrors.
    `evaluate`: there is held-out data, so training measures it before and after."""
    own = env.recipe.training.kwargs()
    if env.recipe.training.bf16 == "auto":  # over any task default: bf16 where the GPU has it, never on CPU
        own["bf16"] = precision.bf16_autocast("auto", own.get("fp16"))
    wants_eval = own.get("eval_strategy", "no") != "no" or own.get("load_best_model_at_end")
    if wants_eval and not evaluate:
        raise RecipeError(
            "training: eval_strategy / load_best_model_at_end need held-out data, and this run has none; set "
            "data.validation or data.validation_split, or remove those training keys."
        )
    kwargs = {**arg_defaults(), **defaults, **own}
    kwargs.setdefault("eval_on_start", evaluate)
    kwargs["output_dir"] = str(env.run.checkpoints)
    kwargs["remove_unused_columns"] = False
    kwargs["accelerator_config"] = {**(kwargs.get("accelerator_config") or {}), "use_configured_state": True}
    if kwargs.get("eval_steps") and "eval_strategy" not in own:
        kwargs["eval_strategy"] = "steps"
    try:
        return args_class(**kwargs)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"training: {first_line(exc)}") from None


def total_steps(n_examples: int, args: TrainingArguments) -> int:
    """Optimizer steps the run will take: max_steps, or the epochs over `n_examples` at the global batch size."""
    if args.max_steps and args.max_steps > 0:
        return args.max_steps
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
    return max(1, math.ceil(math.ceil(n_examples / per_step) * args.num_train_epochs))


def method_context(env: RunEnv, head: str | None = None, total_steps: int | None = None) -> MethodContext:
    return MethodContext(
        family=env.base.family,
        task=env.recipe.task,
        head=head or env.head,
        model_type=env.base.model_type,
        total_steps=total_steps,
        model_name=env.recipe.model.name,
        model_path=env.base.path,
    )


def build_model(
    env: RunEnv, tokenizer: PreTrainedTokenizerBase, *, total_steps: int, head: str | None = None, **load_kwargs: Any
) -> BuiltModel:
    """The base model under the task's head (or `head`), prepared by the recipe's method for a run of `total_steps`
    optimizer steps. `load_kwargs` go to from_pretrained (num_labels, id2label, ...)."""
    head = head or env.head
    # New weights (a task head, LoRA matrices) draw from the global RNG: seed it so a recipe is reproducible.
    transformers.set_seed(env.recipe.training.seed if env.recipe.training.seed is not None else 42)
    ctx = method_context(env, head, total_steps)
    method = env.recipe.method
    dtype = precision.weight_dtype(env.recipe.model.dtype, method.trains_base_weights)
    model = models.load_model(env.base, head, tokenizer, dtype, **load_kwargs, **method.load_kwargs(ctx))
    if env.recipe.training.gradient_checkpointing:
        model.config.use_cache = False
    try:
        model = method.apply(model, ctx)
    except ValueError as exc:  # peft's checks (e.g. target modules not found) are config errors
        raise RecipeError(f"method: {first_line(exc)}") from None
    for config in getattr(model, "peft_config", {}).values():  # adapter_config.json: a base plain peft can load
        config.base_model_name_or_path = portable_name(env.recipe.model.name)
    trainable, total = models.count_parameters(model)
    say(f"{method.name}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%)")
    return BuiltModel(model, head, load_kwargs, method.callbacks(model, ctx), trainable, total)


def save_run(env: RunEnv, result: TaskResult) -> None:
    """Weights (adapter or full model) in safetensors, the tokenizer, and what reloading needs to know. Main
    process only; the others have the same model."""
    if not is_main_process():
        return
    built, work = result.built, env.run.work
    env.recipe.method.save(built.model, work)
    result.tokenizer.save_pretrained(work)
    info = {
        "task": env.recipe.task,
        "head": built.head,
        "family": env.base.family,
        "model_type": env.base.model_type,
        "method": env.recipe.method.model_dump(),
        # A local base by its absolute path, so the run reloads from any directory.
        "base_model": {**env.recipe.model.model_dump(), "name": _reloadable(env.recipe.model.name)},
        "head_kwargs": built.head_kwargs,
        **result.meta,
    }
    (work / RUN_META).write_text(json.dumps(info, indent=2) + "\n")


def _reloadable(name: str) -> str:
    return name if name.startswith(PACKAGED_PREFIX) else portable_name(name)


def resource_metrics(built: BuiltModel) -> dict[str, Any]:
    out: dict[str, Any] = {"trainable_params": built.trainable_params, "total_params": built.total_params}
    if torch.cuda.is_available():
        out["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["peak_memory_kind"] = "cuda_max_allocated"
    else:
        out["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        out["peak_memory_kind"] = "process_max_rss"
    return out
