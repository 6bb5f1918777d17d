"""What every task runner shares, as plain functions on one object: loading, training arguments, saving.

Runners call these in the order they need (data errors surface before the model loads); there is no base runner
class to inherit from.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import transformers
from accelerate import PartialState
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, TrainingArguments

from llmkit import models
from llmkit.data.sources import Rows
from llmkit.errors import DataError, RecipeError, first_line
from llmkit.methods import MethodContext
from llmkit.metrics import measurements
from llmkit.outputs import RunDir
from llmkit.recipe import Recipe
from llmkit.tasks import TASKS

# Training-argument defaults llmkit chooses where transformers' own do not suit a recipe run.
ARG_DEFAULTS: dict[str, Any] = {
    "report_to": "none",  # offline by default; recipes opt in to trackers
    "logging_steps": 10,
    "include_num_input_tokens_seen": "non_padding",  # for tokens/s in metrics.json
    "save_total_limit": 2,
    "dataloader_pin_memory": torch.cuda.is_available(),  # pinning without a GPU only warns
}
LLMKIT_META = "llmkit.json"


def distributed_state(recipe: Recipe) -> PartialState:
    """The process group, set up before any run-directory work so the processes can wait for one another.

    TrainingArguments is told to reuse it (`use_configured_state`); this is set up the way it would set it up itself,
    except that a machine without CUDA gets `cpu=True`, without which accelerate runs N independent processes
    instead of one data-parallel job.
    """
    extra = recipe.training.model_extra or {}
    if extra.get("deepspeed"):
        os.environ.setdefault("ACCELERATE_USE_DEEPSPEED", "true")
    kwargs: dict[str, Any] = {"cpu": bool(extra.get("use_cpu")) or not torch.cuda.is_available()}
    if extra.get("ddp_backend"):
        kwargs["backend"] = extra["ddp_backend"]
    if extra.get("ddp_timeout"):
        kwargs["timeout"] = timedelta(seconds=int(extra["ddp_timeout"]))
    return PartialState(**kwargs)


def is_main_process() -> bool:
    """True in a single-process run and in rank 0 of a torchrun / accelerate launch."""
    return os.environ.get("RANK", "0") == "0"


def say(message: str) -> None:
    """A line for the user on stderr; through tqdm so it does not break a progress bar that is being drawn."""
    if is_main_process():
        tqdm.write(f"llmkit: {message}", file=sys.stderr)


@dataclass
class Prepared:
    """A task's model-ready examples and where each came from (for error messages and `inspect-data`)."""

    train: list[dict[str, Any]]
    train_where: list[str]
    held_out: list[dict[str, Any]] | None = None
    held_out_where: list[str] | None = None
    fingerprints: dict[str, Any] = field(default_factory=dict)


def prepare_examples(
    train_rows: Rows, held_out_rows: Rows | None, encode: Callable[[Rows], tuple[list, list[str], Any]], empty: str
) -> Prepared:
    """Encode the training and held-out rows with the task's `encode(rows) -> (examples, where, stats)`, saying what
    happened to each split. No training example left is an error; `empty` says why and what to change."""
    train, where, stats = encode(train_rows)
    say(f"train: {stats.summary(train_rows.name)}")
    if not train:
        raise DataError(f"no training examples are left {empty}", train_rows.name)
    prepared = Prepared(train, where, fingerprints={"train": train_rows.describe()})
    if held_out_rows is not None:
        prepared.held_out, prepared.held_out_where, stats = encode(held_out_rows)
        prepared.fingerprints["validation"] = held_out_rows.describe()
        say(f"held-out: {stats.summary(held_out_rows.name)}")
    return prepared


@dataclass
class Job:
    recipe: Recipe
    run: RunDir
    base: models.ResolvedModel
    total_steps: int | None = None
    params: tuple[int, int] = (0, 0)
    fingerprints: dict[str, Any] = field(default_factory=dict)
    head_kwargs: dict[str, Any] = field(default_factory=dict)  # what from_pretrained needs to rebuild the head
    trained_model: Any = None
    trained_tokenizer: Any = None
    callbacks: list[Any] = field(default_factory=list)  # the method's TrainerCallbacks; runners pass them on

    @property
    def head(self) -> str:
        return TASKS[self.recipe.task].head

    @property
    def resume(self) -> bool | str | None:
        return self.recipe.training.resume_from_checkpoint

    def tokenizer(self) -> PreTrainedTokenizerBase:
        return models.load_tokenizer(self.base)

    def training_args(
        self, args_class: type[TrainingArguments] = TrainingArguments, *, evaluate: bool = False, **task_defaults: Any
    ) -> Any:
        """Recipe keys over task defaults over llmkit defaults; upstream's own errors become RecipeErrors.
        `evaluate`: there is held-out data, so `train` measures it before and after training."""
        own = self.recipe.training.kwargs()
        wants_eval = own.get("eval_strategy", "no") != "no" or own.get("load_best_model_at_end")
        if wants_eval and not evaluate:
            raise RecipeError(
                "training: eval_strategy / load_best_model_at_end need held-out data, and this run has none; set "
                "data.validation or data.validation_split, or remove those training keys."
            )
        kwargs = {**ARG_DEFAULTS, **task_defaults, **own}
        kwargs.setdefault("eval_on_start", evaluate)
        kwargs["output_dir"] = str(self.run.checkpoints)
        kwargs["remove_unused_columns"] = False
        kwargs["accelerator_config"] = {**(kwargs.get("accelerator_config") or {}), "use_configured_state": True}
        if kwargs.get("eval_steps") and "eval_strategy" not in self.recipe.training.kwargs():
            kwargs["eval_strategy"] = "steps"
        try:
            return args_class(**kwargs)
        except (ValueError, TypeError) as exc:
            raise RecipeError(f"training: {first_line(exc)}") from None

    def plan_steps(self, n_examples: int, args: TrainingArguments) -> int:
        """Optimizer steps the run will take; methods with schedules (AdaLoRA) need it before the model is built."""
        if args.max_steps and args.max_steps > 0:
            self.total_steps = args.max_steps
        else:
            per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
            self.total_steps = max(1, math.ceil(math.ceil(n_examples / per_step) * args.num_train_epochs))
        return self.total_steps

    def method_context(self, head: str | None = None) -> MethodContext:
        return MethodContext(
            family=self.base.family,
            task=self.recipe.task,
            head=head or self.head,
            model_type=self.base.model_type,
            total_steps=self.total_steps,
            model_name=self.recipe.model.name,
            model_path=self.base.path,
        )

    def model(self, tokenizer: PreTrainedTokenizerBase, head: str | None = None, **load_kwargs: Any) -> Any:
        """The base model under the task's head, prepared by the recipe's method, with its parameter counts."""
        head = head or self.head
        self.head_kwargs = load_kwargs
        # New weights (a task head, LoRA matrices) draw from the global RNG: seed it so a recipe is reproducible.
        transformers.set_seed(self.recipe.training.seed if self.recipe.training.seed is not None else 42)
        ctx = self.method_context(head)
        method = self.recipe.method
        model = models.load_model(self.base, head, tokenizer, **load_kwargs, **method.load_kwargs(ctx))
        if self.recipe.training.gradient_checkpointing:
            model.config.use_cache = False
        try:
            model = method.apply(model, ctx)
        except ValueError as exc:  # peft's checks (e.g. target modules not found) are config errors
            raise RecipeError(f"method: {first_line(exc)}") from None
        self.callbacks = method.callbacks(model, ctx)
        self.params = models.count_parameters(model)
        trainable, total = self.params
        say(f"{self.recipe.method.name}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%)")
        return model

    def train(self, trainer: transformers.Trainer) -> dict[str, Any]:
        """Train (resuming if asked) with held-out evaluation before and after; write the log; return the metrics.

        The evaluation before training runs through `eval_on_start` (set by `training_args`), inside `train()`: an
        `evaluate()` call before `train()` marks the model as prepared by accelerate without DDP, and every process
        would then train on its own.
        """
        start = _StartOfTraining()
        trainer.add_callback(start)
        result = trainer.train(resume_from_checkpoint=self.resume)
        runtime = result.metrics.get("train_runtime", 0.0)
        tokens = int(trainer.state.num_input_tokens_seen - start.tokens)  # this session's tokens, if resumed
        metrics: dict[str, Any] = {
            "train_loss": result.training_loss,
            "train_steps": trainer.state.global_step,
            "train_runtime_s": round(runtime, 2),
            "train_tokens": tokens or None,  # None: the trainer could not count them
            "tokens_per_second": round(tokens / runtime, 1) if runtime and tokens else None,
        }
        if start.evaluation is not None:
            suffix = "before" if start.step == 0 else "at_resume"
            metrics.update({f"{k}_{suffix}": v for k, v in measurements(start.evaluation).items()})
            final = start.latest if start.latest_step == trainer.state.global_step else None
            if final is None or trainer.args.load_best_model_at_end:  # the model changed since the last evaluation
                final = trainer.evaluate()
            after = measurements(final)
            metrics.update(after)
            say(f"held-out after training:  {_describe(after)}")
        if is_main_process():
            history = trainer.state.log_history
            (self.run.work / "train_log.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in history))
        return metrics

    def save(self, model: Any, tokenizer: PreTrainedTokenizerBase, **meta: Any) -> None:
        """Weights (adapter or full model) in safetensors, the tokenizer, and what reloading needs to know."""
        self.trained_model, self.trained_tokenizer = model, tokenizer
        if not is_main_process():
            return
        self.recipe.method.save(model, self.run.work)
        tokenizer.save_pretrained(self.run.work)
        info = {
            "task": self.recipe.task,
            "head": self.head,
            "family": self.base.family,
            "model_type": self.base.model_type,
            "method": self.recipe.method.model_dump(),
            "base_model": self.recipe.model.model_dump(),
            "head_kwargs": self.head_kwargs,
            **meta,
        }
        (self.run.work / LLMKIT_META).write_text(json.dumps(info, indent=2) + "\n")

    def resource_metrics(self) -> dict[str, Any]:
        trainable, total = self.params
        out: dict[str, Any] = {"trainable_params": trainable, "total_params": total}
        if torch.cuda.is_available():
            out["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            out["peak_memory_kind"] = "cuda_max_allocated"
        else:
            out["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            out["peak_memory_kind"] = "process_max_rss"
        return out


class _StartOfTraining(transformers.TrainerCallback):
    """Tokens already seen when training (re)starts, so a resumed run's tokens/s counts only its own work, and the
    evaluation `eval_on_start` runs before the first step; the latest evaluation, so one that training ended on is
    not run twice."""

    tokens = 0
    step = 0
    evaluation: dict[str, float] | None = None
    latest: dict[str, float] | None = None
    latest_step = -1

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.tokens, self.step = state.num_input_tokens_seen, state.global_step

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float], **kwargs: Any) -> None:
        self.latest, self.latest_step = dict(metrics), state.global_step
        if self.evaluation is None and state.global_step == self.step:
            self.evaluation = dict(metrics)
            say(f"held-out before training: {_describe(measurements(metrics))}")


def _describe(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k.removeprefix('eval_')} {v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float)))


def set_verbosity() -> None:
    """Keep transformers' own logging to warnings; the progress bar and llmkit's lines say what is happening."""
    transformers.logging.set_verbosity_warning()
    # peft calls a transformers method deprecated for v6; the warning is theirs to fix, not the user's.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
