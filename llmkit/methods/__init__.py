"""Method registry: `method: <name>` → a config class whose `apply` prepares the model.

Each method is one small module; its config is a pydantic model (validated with the recipe, torch-free) and its
`apply` imports peft or torch only when a run starts.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from llmkit.methods.adalora import AdaLoraMethod
from llmkit.methods.adapter import AdapterMethod
from llmkit.methods.adapter_fusion import AdapterFusionMethod
from llmkit.methods.base import MethodConfig, MethodContext
from llmkit.methods.bitfit import BitFitMethod
from llmkit.methods.full import FullMethod
from llmkit.methods.ia3 import Ia3Method
from llmkit.methods.llama_adapter import LlamaAdapterMethod
from llmkit.methods.lora import LoraMethod
from llmkit.methods.prefix_tuning import PrefixTuningMethod
from llmkit.methods.prompt_tuning import PromptTuningMethod
from llmkit.methods.qlora import QLoraMethod

MethodBlock = Annotated[
    FullMethod
    | LoraMethod
    | QLoraMethod
    | AdaLoraMethod
    | Ia3Method
    | PrefixTuningMethod
    | PromptTuningMethod
    | BitFitMethod
    | AdapterMethod
    | AdapterFusionMethod
    | LlamaAdapterMethod,
    Field(discriminator="name"),
]

METHODS: dict[str, type[MethodConfig]] = {
    cls.model_fields["name"].default: cls
    for cls in (
        FullMethod,
        LoraMethod,
        QLoraMethod,
        AdaLoraMethod,
        Ia3Method,
        PrefixTuningMethod,
        PromptTuningMethod,
        BitFitMethod,
        AdapterMethod,
        AdapterFusionMethod,
        LlamaAdapterMethod,
    )
}

__all__ = ["METHODS", "MethodBlock", "MethodConfig", "MethodContext"]
