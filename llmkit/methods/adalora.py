"""AdaLoRA: LoRA whose rank budget is reallocated during training to the matrices that matter (Zhang et al., 2023).

peft reallocates only when `update_and_allocate(step)` is called after every optimizer step; a plain Trainer never
calls it, so ranks would silently stay at `init_r`. The callback below does it, and `total_step` is the run length.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

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


class AdaLoraMethod(MethodConfig):
    """LoRA whose rank budget is reallocated during training (Zhang et al., 2023): ranks start at `init_r` and shrink
    to an average of `target_r` (warm-up for `tinit` steps, a cubic budget decrease, then `tfinal` steps at the
    final ranks)."""

    name: Literal["adalora"] = "adalora"
    init_r: int = Field(12, gt=0, description="rank every matrix starts with")
    target_r: int = Field(8, gt=0, description="average rank left at the end")
    lora_alpha: LoraAlpha = 32
    lora_dropout: LoraDropout = 0.05
    target_modules: TargetModules = "auto"
    tinit: float = Field(0.1, ge=0, description="warm-up before ranks shrink: steps, or a fraction of the run if < 1")
    tfinal: float = Field(0.2, ge=0, description="steps at the final ranks: steps, or a fraction of the run if < 1")
    deltaT: int = Field(1, gt=0, description="steps between two budget reallocations")  # peft's name
    beta1: float = Field(0.85, gt=0, lt=1, description="EMA factor of the sensitivity")
    beta2: float = Field(0.85, gt=0, lt=1, description="EMA factor of the uncertainty")
    orth_reg_weight: float = Field(0.5, ge=0, description="weight of the orthogonality regulariser on P and Q")
    modules_to_save: ModulesToSave = None

    excluded: ClassVar[dict[tuple[str, str], str]] = {
        (family, task): "TRL's online trainers copy the adapter into a second, reference adapter, and peft's AdaLoRA "
        "allows only one trainable adapter"
        for family, task in (("*", "grpo"), ("*", "rloo"))
    }
    mergeable = True

    @model_validator(mode="after")
    def _ranks(self) -> AdaLoraMethod:
        if self.target_r > self.init_r:
            raise ValueError(f"target_r ({self.target_r}) must not exceed init_r ({self.init_r}); ranks only shrink")
        return self

    def schedule(self, total_steps: int) -> tuple[int, int]:
        """(tinit, tfinal) in optimizer steps for a run of `total_steps`."""
        steps = [round(v * total_steps) if v < 1 else int(v) for v in (self.tinit, self.tfinal)]
        return steps[0], steps[1]

    def upstream_config(self, ctx: MethodContext) -> Any:
        from peft import AdaLoraConfig

        if ctx.total_steps is None:  # at train start the run length is not known yet; check the rest now
            total, (tinit, tfinal) = 10**6, (0, 0)
        else:
            total, (tinit, tfinal) = ctx.total_steps, self.schedule(ctx.total_steps)
            if tinit + tfinal >= total:
                raise ValueError(
                    f"tinit + tfinal ({tinit} + {tfinal} steps) leave no step of this {total}-step run to reallocate "
                    "ranks in; lower them or train longer"
                )
        return AdaLoraConfig(
            init_r=self.init_r,
            target_r=self.target_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=target_modules(self.target_modules),
            tinit=tinit,
            tfinal=tfinal,
            deltaT=self.deltaT,
            beta1=self.beta1,
            beta2=self.beta2,
            orth_reg_weight=self.orth_reg_weight,
            total_step=total,
            fan_in_fan_out=fan_in_fan_out(ctx),
            **peft_task_kwargs(ctx, self.modules_to_save),
        )

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from peft import get_peft_model

        return self._regularise_in_training_only(get_peft_model(model, self.upstream_config(ctx)))

    def save(self, model: Any, directory: Any) -> None:
        model.peft_config[model.active_adapter].orth_reg_weight = self.orth_reg_weight  # as configured, not as zeroed
        model.save_pretrained(directory)

    def reload(self, base_model: Any, run_dir: Any) -> Any:
        return self._regularise_in_training_only(super().reload(base_model, run_dir))

    def _regularise_in_training_only(self, model: Any) -> Any:
        """Work around two peft AdaLoRA behaviours: its forward adds the orthogonality regulariser to the loss in
        eval mode too (a held-out loss would not be the task loss), and a reloaded model, having no trainable adapter
        name, raises AttributeError on any forward with labels. The regulariser's weight is set before each forward
        by mode, and a reloaded model gets its adapter's name."""
        tuner = model.base_model
        if not hasattr(tuner, "trainable_adapter_name"):
            tuner.trainable_adapter_name = model.active_adapter
        weight = self.orth_reg_weight

        def by_mode(module: Any, args: Any) -> None:
            module.peft_config[module.trainable_adapter_name].orth_reg_weight = weight if module.training else 0.0

        tuner.register_forward_pre_hook(by_mode)
        return model

    def callbacks(self, model: Any, ctx: MethodContext) -> list[Any]:
        from transformers import TrainerCallback

        class Reallocate(TrainerCallback):
            """After each optimizer step, before gradients are zeroed (sensitivity is |w · grad|)."""

            def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                model.base_model.update_and_allocate(state.global_step)

        return [Reallocate()]
