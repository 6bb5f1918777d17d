"""Bottleneck adapters after transformer sub-layers: Houlsby (attention and feed-forward) or Pfeiffer (feed-forward
only). Implemented in `llmkit.adapters`; see there for why not AdapterHub or peft."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from llmkit.methods.base import MethodConfig, MethodContext

Activation = Literal["relu", "gelu", "silu", "tanh"]
NOT_LINEAR = "an adapter is a non-linear block after a layer, not a change to that layer's weights"
# Model types of a supported family whose layers `llmkit.adapters.bottleneck` cannot place adapters in.
NO_PLACES = {"albert": "ALBERT runs one shared layer at every depth, so there is no per-layer place for an adapter"}


class AdapterMethod(MethodConfig):
    """Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2021) after transformer sub-layers, the base
    frozen: 2 · width² / reduction_factor parameters per place."""

    name: Literal["adapter"] = "adapter"
    architecture: Literal["houlsby", "pfeiffer"] = Field(
        "houlsby", description="houlsby: after attention and feed-forward; pfeiffer: after feed-forward only"
    )
    reduction_factor: int = Field(16, gt=0, description="bottleneck width = hidden width / reduction_factor")
    activation: Activation = Field("relu", description="non-linearity inside the bottleneck")

    merge_note = NOT_LINEAR
    refused_model_types = NO_PLACES

    def insert(self, model: Any) -> list[str]:
        from llmkit.adapters.bottleneck import Bottleneck, insert

        return insert(model, self.architecture, lambda width: Bottleneck(width, self.reduction_factor, self.activation))

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from llmkit.adapters.bottleneck import adapter_parameter_names
        from llmkit.methods.heads import head_parameter_names
        from llmkit.partial import train_only

        self.insert(model)
        return train_only(model, adapter_parameter_names(model) + head_parameter_names(model, ctx.head))

    def save(self, model: Any, directory: Any) -> None:
        from llmkit.partial import save_tensors, trainable_names

        save_tensors(model, trainable_names(model), directory)

    def reload(self, base_model: Any, run_dir: Any) -> Any:
        from llmkit.partial import load_tensors

        self.insert(base_model)
        return load_tensors(base_model, run_dir)
