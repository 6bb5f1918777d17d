"""The `training:` section: transformers' TrainingArguments by their own names, checked without importing torch."""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmkit.errors import did_you_mean
from llmkit.extras import missing
from llmkit.recipe.wording import unknown_keys
from llmkit.upstream import config_fields

# Keys of TrainingArguments that llmkit sets itself; a recipe that sets them gets this sentence as the fix.
OWNED_TRAINING_KEYS = {
    "output_dir": "set output_dir at the top level of the recipe, not under training",
    "remove_unused_columns": "llmkit builds the model inputs itself and keeps this False",
    "label_names": "llmkit sets the label columns for each task",
    "do_train": "llmkit decides what to run from the task",
    "do_eval": "llmkit evaluates whenever there is held-out data",
    "do_predict": "use `llmkit predict` instead",
    "warmup_ratio": "transformers 5 removed warmup_ratio; use warmup_steps with a value below 1 (e.g. 0.1 = 10%)",
    "predict_with_generate": "task seq2seq always generates when it evaluates; set decoding in the generation section",
    "generation_max_length": "set generation.max_new_tokens instead",
    "generation_num_beams": "set generation.num_beams instead",
}


# Trackers transformers logs to (`report_to`), the modules any of which it needs, and what to pip install.
TRACKERS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
    "trackio": (("trackio",), "trackio"),
}


class TrainingSection(BaseModel):
    """transformers' TrainingArguments, by their own names. Common keys are typed here; any other key is
    passed through if TrainingArguments has it, so upstream documentation applies unchanged."""

    model_config = ConfigDict(extra="allow")

    learning_rate: float | None = Field(None, gt=0)
    num_train_epochs: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, description="-1 or unset: run num_train_epochs")
    per_device_train_batch_size: int | None = Field(None, gt=0)
    per_device_eval_batch_size: int | None = Field(None, gt=0)
    gradient_accumulation_steps: int | None = Field(None, gt=0)
    lr_scheduler_type: str | None = None
    warmup_steps: float | None = Field(None, ge=0, description="steps, or a fraction of the run if below 1")
    weight_decay: float | None = Field(None, ge=0)
    max_grad_norm: float | None = Field(None, ge=0)
    optim: str | None = None
    seed: int | None = None
    logging_steps: float | None = Field(None, gt=0)
    eval_strategy: Literal["no", "steps", "epoch"] | None = None
    eval_steps: float | None = Field(None, gt=0)
    save_strategy: Literal["no", "steps", "epoch", "best"] | None = None
    save_steps: float | None = Field(None, gt=0)
    save_total_limit: int | None = Field(None, gt=0)
    gradient_checkpointing: bool | None = None
    bf16: bool | Literal["auto"] | None = Field(
        "auto", description="bf16 autocast; auto: on where the GPU supports bf16, off on CPU (where it is slower)"
    )
    fp16: bool | None = None
    report_to: str | list[str] | None = Field(
        None, description="trackers transformers logs to: tensorboard, wandb, mlflow, trackio, ... (default none)"
    )
    use_liger_kernel: bool | None = Field(
        None,
        description="Liger's Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy that never holds the "
        "full logits) patched into the model; a CUDA GPU and pip install 'llmkit[liger]'",
    )
    dataloader_num_workers: int | None = Field(None, ge=0)
    chunked_loss: bool = Field(
        True,
        description="send only trained tokens through the LM head, a chunk at a time, so the full logits never "
        "exist (the same loss and gradients; docs/memory.md). Causal-LM, seq2seq and distillation losses; "
        "false: the model computes all its logits",
    )
    resume_from_checkpoint: bool | str | None = Field(
        None,
        description="true: continue from the last complete checkpoint in output_dir; auto: that if there is one, "
        "else start over (one command for a requeue loop); or a checkpoint path",
    )

    @field_validator("report_to")
    @classmethod
    def _trackers_installed(cls, value: str | list[str] | None) -> str | list[str] | None:
        """A tracker transformers cannot import would fail after the model loaded; say so at validate."""
        for name in [value] if isinstance(value, str) else value or []:
            modules, package = TRACKERS.get(name, ((), ""))
            if modules and not any(importlib.util.find_spec(m) for m in modules):
                raise ValueError(f"'{name}' needs the {package} package: pip install {package} (or remove it)")
        return value

    @field_validator("use_liger_kernel")
    @classmethod
    def _liger_installed(cls, value: bool | None) -> bool | None:
        """transformers would raise its ImportError only once the model has loaded; say so at validate."""
        problem = missing("liger_kernel") if value else None
        if problem:
            raise ValueError(f"Liger's kernels need {problem.split(' needs ', 1)[1]} (or remove the key)")
        return value

    @field_validator("max_steps")
    @classmethod
    def _step_count(cls, value: int | None) -> int | None:
        """transformers treats every max_steps below 1 as "run the epochs"; only -1 says so on purpose."""
        if value is not None and value < 1 and value != -1:
            raise ValueError(
                f"{value} is not a number of steps; use a positive number, or -1 (or leave it unset) to run "
                "num_train_epochs"
            )
        return value

    @model_validator(mode="after")
    def _known_keys(self) -> TrainingSection:
        problems = training_key_problems(self.model_extra or {})
        if problems:
            raise unknown_keys(problems)
        return self

    def kwargs(self) -> dict[str, Any]:
        """The keys the recipe set, ready for TrainingArguments; unset keys keep upstream defaults. `bf16: auto` is
        decided by `llmkit.run.training_args`, where the hardware is known."""
        skip = {"resume_from_checkpoint", "chunked_loss"} | ({"bf16"} if self.bf16 == "auto" else set())
        return {k: v for k, v in self.model_dump().items() if v is not None and k not in skip}


def training_key_problems(keys: Any) -> dict[str, str]:
    """For each key TrainingArguments does not take (or llmkit owns), the sentence that fixes it."""
    allowed = training_argument_names()
    problems = {}
    for key in keys:
        if key in OWNED_TRAINING_KEYS:
            problems[key] = OWNED_TRAINING_KEYS[key]
        elif allowed is not None and key not in allowed and key not in TrainingSection.model_fields:
            problems[key] = f"unknown key{did_you_mean(key, allowed)}"
    return problems


def training_argument_names() -> frozenset[str] | None:
    """Field names of transformers' TrainingArguments, read from its source so `validate` never imports torch."""
    return config_fields("transformers", "training_args.py", "TrainingArguments")
