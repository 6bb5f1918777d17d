"""IA³: learned vectors that rescale keys, values and feed-forward activations (Liu et al., 2022), through peft."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from llmkit.methods.base import MethodConfig, MethodContext
from llmkit.methods.peft_common import ModulesToSave, fan_in_fan_out, peft_task_kwargs


class Ia3Method(MethodConfig):
    """IA³ (Liu et al., 2022): one learned vector per targeted layer rescales keys, values and feed-forward
    activations, the fewest trainable parameters here. `auto` uses peft's per-architecture choice of layers."""

    name: Literal["ia3"] = "ia3"
    target_modules: Literal["auto"] | list[str] = Field("auto", description="'auto' or module names to rescale")
    feedforward_modules: list[str] | None = Field(
        None, description="which target_modules are feed-forward (scaled at their input, not output)"
    )
    modules_to_save: ModulesToSave = None

    mergeable = True

    @model_validator(mode="after")
    def _feedforward_subset(self) -> Ia3Method:
        if self.target_modules == "auto" and self.feedforward_modules is not None:
            raise ValueError(
                "feedforward_modules needs explicit target_modules (with target_modules: auto peft chooses both)"
            )
        if isinstance(self.target_modules, list) and self.feedforward_modules is None:
            raise ValueError(
                "with explicit target_modules, list which of them are feed-forward in feedforward_modules ([] for none)"
            )
        if isinstance(self.target_modules, list) and not set(self.feedforward_modules or []) <= set(
            self.target_modules
        ):
            raise ValueError("every feedforward_modules entry must also be in target_modules")
        return self

    def upstream_config(self, ctx: MethodContext) -> Any:
        from peft import IA3Config

        explicit = self.target_modules != "auto"
        return IA3Config(
            target_modules=self.target_modules if explicit else None,
            feedforward_modules=self.feedforward_modules if explicit else None,
            fan_in_fan_out=fan_in_fan_out(ctx),
            **peft_task_kwargs(ctx, self.modules_to_save),
        )

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.upstream_config(ctx))

    def merged(self, base_model: Any, run_dir: Any) -> Any:
        """peft's IA³ unloading assumes every `modules_to_save` entry is a single layer with a `.weight` and fails
        on T5's `classification_head`, so trained head copies are put in place before merging."""
        from peft.utils import ModulesToSaveWrapper

        model = self.reload(base_model, run_dir)
        inner = model.base_model.model
        for name, module in list(inner.named_modules()):
            if isinstance(module, ModulesToSaveWrapper):
                parent, _, child = name.rpartition(".")
                setattr(inner.get_submodule(parent), child, module.modules_to_save[model.active_adapter])
        return model.merge_and_unload()
