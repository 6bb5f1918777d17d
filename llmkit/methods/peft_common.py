"""What the peft-based methods share: their task type, the head modules peft must train, and the keys the low-rank
methods (lora, qlora, adalora) declare the same way, under peft's own names."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from llmkit.methods.base import MethodContext
from llmkit.methods.heads import head_module_names

# peft's task types for the heads llmkit loads; they decide which head modules peft keeps trainable.
PEFT_TASK_TYPE = {"causal_lm": "CAUSAL_LM", "seq_cls": "SEQ_CLS", "seq2seq_lm": "SEQ_2_SEQ_LM"}

LoraAlpha = Annotated[float, Field(gt=0, description="scaling numerator: the update is scaled by lora_alpha / r")]
LoraDropout = Annotated[float, Field(ge=0, lt=1, description="dropout on the adapter input")]
TargetModules = Annotated[
    Literal["auto", "all-linear"] | list[str],
    Field(description="'auto' (peft's defaults for the architecture), 'all-linear', or module names"),
]
ModulesToSave = Annotated[list[str] | None, Field(description="extra modules trained in full and saved")]


def peft_task_kwargs(ctx: MethodContext, modules_to_save: list[str] | None = None) -> dict[str, Any]:
    """The task type and the modules peft must train in full: the recipe's plus every task-head module, because
    peft alone leaves T5's `classification_head` (and DistilBERT's `pre_classifier`) random and frozen."""
    extra = [m for m in head_module_names(ctx.head) if m not in (modules_to_save or [])]
    return {"task_type": PEFT_TASK_TYPE[ctx.head], "modules_to_save": ((modules_to_save or []) + extra) or None}


def target_modules(value: str | list[str]) -> str | list[str] | None:
    """peft's value for a recipe's target_modules: None lets peft choose per architecture."""
    return None if value == "auto" else value


def fan_in_fan_out(ctx: MethodContext) -> bool:
    """GPT-2 stores its projections as Conv1D, transposed relative to nn.Linear."""
    return ctx.family == "gpt2"
