"""Prompt tuning: trained soft-prompt embeddings prepended to the input (Lester et al., 2021), through peft."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from llmkit.methods.base import MethodConfig, MethodContext
from llmkit.methods.peft_common import peft_task_kwargs

_SHIFTS = "its virtual tokens lengthen the logits, which then no longer line up with the sequence"
_POOLS_PAD = (
    "peft feeds the classifier input embeddings, so it cannot find the last real token of a right-padded batch "
    "and would pool a pad token"
)


class PromptTuningMethod(MethodConfig):
    """Prompt tuning (Lester et al., 2021): only `num_virtual_tokens` input embeddings train; `prompt_tuning_init_text`
    starts them from a task description's tokens."""

    name: Literal["prompt_tuning"] = "prompt_tuning"
    num_virtual_tokens: int = Field(20, gt=0, description="soft-prompt length")
    prompt_tuning_init_text: str | None = Field(
        None, description="start from this text's token embeddings (default: random)"
    )

    tasks = ("sft", "classification", "seq2seq", "reward")
    excluded: ClassVar[dict[tuple[str, str], str]] = {
        ("*", "dpo"): _SHIFTS,
        ("*", "orpo"): _SHIFTS,
        ("*", "kto"): _SHIFTS,
        ("*", "distill"): _SHIFTS,
        ("gpt2", "classification"): _POOLS_PAD,
        ("llama", "classification"): _POOLS_PAD,
        ("gpt2", "reward"): _POOLS_PAD,
        ("llama", "reward"): _POOLS_PAD,
        ("t5", "classification"): "transformers' T5ForSequenceClassification does not accept input embeddings",
    }
    merge_note = "its soft prompt is extra input, not a change to any weight"

    def upstream_config(self, ctx: MethodContext) -> Any:
        from peft import PromptTuningConfig

        init: dict[str, Any] = {"prompt_tuning_init": "RANDOM"}
        if self.prompt_tuning_init_text:
            init = {
                "prompt_tuning_init": "TEXT",
                "prompt_tuning_init_text": self.prompt_tuning_init_text,
                "tokenizer_name_or_path": ctx.model_path,
            }
        return PromptTuningConfig(num_virtual_tokens=self.num_virtual_tokens, **init, **peft_task_kwargs(ctx))

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.upstream_config(ctx))
