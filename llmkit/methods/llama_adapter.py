"""LLaMA-Adapter: trained prompts attended through a zero-initialised gate in the top layers (Zhang et al., 2023),
through peft's adaption prompt."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from llmkit.methods.base import MethodConfig, MethodContext

_CLS = "peft's adaption prompt neither trains nor saves a classification head"
_FUSED = "it bypasses the patched LM head that TRL's online trainers read log-probabilities from"


class LlamaAdapterMethod(MethodConfig):
    """LLaMA-Adapter (Zhang et al., 2023) as peft's adaption prompt: trained prompts in the top layers, attended
    through a gate that starts at zero, so training starts exactly from the base model."""

    name: Literal["llama_adapter"] = "llama_adapter"
    adapter_len: int = Field(10, gt=0, description="adaption prompt length per layer")
    adapter_layers: int | Literal["all"] = Field("all", description="how many of the top layers get a prompt")

    families = ("gpt2", "llama")
    model_types = ("gpt2", "llama", "mistral")  # the architectures peft's adaption prompt knows
    tasks = ("sft", "dpo", "distill")
    excluded: ClassVar[dict[tuple[str, str], str]] = {
        ("*", "classification"): _CLS,
        ("*", "reward"): _CLS,
        ("*", "grpo"): _FUSED,
        ("*", "rloo"): _FUSED,
    }
    merge_note = "its gated prompts are extra attention inputs, not a change to any weight"

    def upstream_config(self, ctx: MethodContext, num_layers: int | None = None) -> Any:
        from peft import AdaptionPromptConfig

        layers = self.adapter_layers
        if layers == "all":
            layers = num_layers or 1  # before the model loads, the layer count is not known yet
        elif num_layers is not None and layers > num_layers:
            raise ValueError(f"adapter_layers is {layers}, but the model has {num_layers} layers")
        return AdaptionPromptConfig(adapter_len=self.adapter_len, adapter_layers=layers, task_type="CAUSAL_LM")

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        from peft import get_peft_model

        layers = model.config.num_hidden_layers
        return get_peft_model(model, self.upstream_config(ctx, num_layers=layers))
