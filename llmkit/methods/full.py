"""Full fine-tuning: every weight trains."""

from __future__ import annotations

from typing import Any, Literal

from llmkit.methods.base import MethodConfig, MethodContext


class FullMethod(MethodConfig):
    """Train all parameters. The most memory-hungry method and the reference the others are measured against."""

    name: Literal["full"] = "full"

    saves_full_model = True
    trains_base_weights = True

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        model.requires_grad_(True)
        return model
