"""Method registry: `method: <name>` → a config class whose `apply` prepares the model.

Each method is one small module; its config is a pydantic model (validated with the recipe, torch-free) and its
`apply` imports peft or torch only when a run starts.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from llmkit.methods.base import MethodConfig, MethodContext
from llmkit.methods.full import FullMethod
from llmkit.methods.lora import LoraMethod

MethodBlock = Annotated[FullMethod | LoraMethod, Field(discriminator="name")]

METHODS: dict[str, type[MethodConfig]] = {cls.model_fields["name"].default: cls for cls in (FullMethod, LoraMethod)}

__all__ = ["METHODS", "MethodBlock", "MethodConfig", "MethodContext"]
