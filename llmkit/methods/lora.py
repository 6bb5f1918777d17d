"""LoRA: low-rank updates beside frozen weights, through peft's LoraConfig. DoRA and rsLoRA are options of it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from llmkit.methods.base import MethodConfig, MethodContext
from llmkit.methods.heads import head_module_names

# peft's task types for the heads llmkit loads; they decide which head modules peft keeps trainable.
PEFT_TASK_TYPE = {"causal_lm": "CAUSAL_LM", "seq_cls": "SEQ_CLS", "seq2seq_lm": "SEQ_2_SEQ_LM"}

# Keys the low-rank methods (lora, qlora, adalora) share, declared once.
Alpha = Annotated[float, Field(gt=0, description="scaling numerator: the update is scaled by alpha / r")]
Dropout = Annotated[float, Field(ge=0, lt=1, description="dropout on the adapter input")]
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


class LoraMethod(MethodConfig):
    """Low-rank adapters (Hu et al., 2021). `target_modules: auto` uses peft's per-architecture defaults."""

    name: Literal["lora"] = "lora"
    r: int = Field(8, gt=0, description="rank of the update matrices")
    alpha: Alpha = 16
    dropout: Dropout = 0.05
    target_modules: TargetModules = "auto"
    bias: Literal["none", "all", "lora_only"] = Field("none", description="which biases also train")
    use_dora: bool = Field(False, description="weight-decomposed LoRA (DoRA)")
    use_rslora: bool = Field(False, description="rank-stabilised scaling alpha / sqrt(r)")
    modules_to_save: ModulesToSave = None

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
            fan_in_fan_out=self._fan_in_fan_out(ctx),
            **peft_task_kwargs(ctx, self.modules_to_save),
        )

    def _fan_in_fan_out(self, ctx: MethodContext) -> bool:
        return ctx.family == "gpt2"  # GPT-2 stores its projections as Conv1D (transposed)

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.upstream_config(ctx))
