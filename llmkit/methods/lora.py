"""LoRA: low-rank updates beside frozen weights, through peft's LoraConfig. DoRA and rsLoRA are options of it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from llmkit.methods.base import MethodConfig, MethodContext
from llmkit.methods.peft_common import (
    LoraAlpha,
    LoraDropout,
    ModulesToSave,
    TargetModules,
    fan_in_fan_out,
    peft_task_kwargs,
    target_modules,
)


class LoraMethod(MethodConfig):
    """Low-rank adapters (Hu et al., 2021). `target_modules: auto` uses peft's per-architecture defaults."""

    name: Literal["lora"] = "lora"
    r: int = Field(8, gt=0, description="rank of the update matrices")
    lora_alpha: LoraAlpha = 16
    lora_dropout: LoraDropout = 0.05
    target_modules: TargetModules = "auto"
    bias: Literal["none", "all", "lora_only"] = Field("none", description="which biases also train")
    use_dora: bool = Field(False, description="weight-decomposed LoRA (DoRA)")
    use_rslora: bool = Field(False, description="rank-stabilised scaling lora_alpha / sqrt(r)")
    modules_to_save: ModulesToSave = None

    mergeable = True

    def upstream_config(self, ctx: MethodContext) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=target_modules(self.target_modules),
            bias=self.bias,
            use_dora=self.use_dora,
            use_rslora=self.use_rslora,
            fan_in_fan_out=self._fan_in_fan_out(ctx),
            **peft_task_kwargs(ctx, self.modules_to_save),
        )

    def _fan_in_fan_out(self, ctx: MethodContext) -> bool:
        return fan_in_fan_out(ctx)

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.upstream_config(ctx))
