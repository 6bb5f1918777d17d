"""llmkit: one YAML recipe from a pretrained model and some data to a trained, evaluated, saved model.

`Recipe` and the errors import without torch; `Trainer` loads the training stack on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmkit.errors import DataError, LlmkitError, RecipeError
from llmkit.recipe import Recipe

if TYPE_CHECKING:
    from llmkit.trainer import RunResult, Trainer

__version__ = "0.1.0"
__all__ = ["DataError", "LlmkitError", "Recipe", "RecipeError", "RunResult", "Trainer", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Trainer", "RunResult"):
        from llmkit import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'llmkit' has no attribute {name!r}")
