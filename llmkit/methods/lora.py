"""LoRA: low-rank updates beside frozen weights, through peft's LoraConfig."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from llmkit.methods.base import MethodConfig, MethodContext

# peft's task types for the heads llmkit loads; they decide which head modules peft keeps trainable.
PEFT_TASK_TYPE = {"causal_lm": "CAUSAL_LM", "seq_cls": "SEQ_CLS", "seq2seq_lm": "SEQ_2_SEQ_LM"}


class LoraMethod(MethodConfig):
    """Low-rank adapters (Hu et al., 2021). `target_modules: auto` uses peft's per-architecture defaults."""

    name: Literal["lora"] = "lora"
    r: int = Field(8, gt=0, description="rank of the update matrices")
    alpha: float = Field(16, gt=0, description="scaling numerator: the update is scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: Literal["auto", "all-linear"] | list[str] = Field(
        "auto", description="'auto' (peft's defaults for the architecture), 'all-linear', or module names"
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="which biases also train")
    use_dora: bool = Field(False, description="weight-decomposed LoRA (DoRA)")
    use_rslora: bool = Field(False, description="rank-stabilised scaling alpha / sqrt(r)")
    modules_to_save: list[str] | None = Field(None, description="extra modules trained in full and saved")

    mergeable = True

    def upstream_config(self, ctx: MethodContext) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=None if self.target_modules == "auto" else self.target_modules,
            bias=self.bias,
            use_dora=self.use_dora,
            use_rslora=self.use_rslora,
            modules_to_save=self.modules_to_save,
            fan_in_fan_out=ctx.family == "gpt2",  # GPT-2 stores its projections as Conv1D (transposed)
            task_type=PEFT_TASK_TYPE[ctx.head],
        )

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.upstream_config(ctx))
