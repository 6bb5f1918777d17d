"""Prefix tuning: trained key/value vectors prepended to every attention layer (Li & Liang, 2021), through peft."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from llmkit.methods.base import MethodConfig, MethodContext
from llmkit.methods.peft_common import peft_task_kwargs


class PrefixTuningMethod(MethodConfig):
    """Prefix tuning (Li & Liang, 2021): every attention layer attends to `num_virtual_tokens` trained key/value
    positions; the model's weights stay frozen."""

    name: Literal["prefix_tuning"] = "prefix_tuning"
    num_virtual_tokens: int = Field(20, gt=0, description="prefix length per layer")
    prefix_projection: bool = Field(False, description="reparameterise the prefix through a small MLP while training")
    encoder_hidden_size: int | None = Field(None, gt=0, description="hidden size of that MLP (default: model width)")

    excluded: ClassVar[dict[tuple[str, str], str]] = {
        ("t5", "classification"): "peft's prefixes do not fit T5ForSequenceClassification, which fails on them"
    }
    merge_note = "its prefixes are extra attention keys and values, not a change to any weight"

    def upstream_config(self, ctx: MethodContext) -> Any:
        from peft import PrefixTuningConfig

        extra = {"encoder_hidden_size": self.encoder_hidden_size} if self.encoder_hidden_size else {}
        return PrefixTuningConfig(
            num_virtual_tokens=self.num_virtual_tokens,
            prefix_projection=self.prefix_projection,
            **extra,
            **peft_task_kwargs(ctx),
        )

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.upstream_config(ctx))
