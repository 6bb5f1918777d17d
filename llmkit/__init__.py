"""llmkit: one YAML recipe from a pretrained model and some data to a trained, evaluated, saved model.

`Recipe` and the errors import without torch; `Trainer`, `RunResult` and `load` load the training stack on first use.
Importing llmkit prints nothing: notices that libraries log as they import (bitsandbytes' CPU kernel notice) are held
back, and shown only if a run uses what they are about (`llmkit.notices`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmkit import notices
from llmkit.errors import DataError, LlmkitError, RecipeError
from llmkit.recipe import Recipe

if TYPE_CHECKING:
    from llmkit.result import RunResult, load
    from llmkit.trainer import Trainer

__version__ = "0.1.0"
__all__ = ["DataError", "LlmkitError", "Recipe", "RecipeError", "RunResult", "Trainer", "__version__", "load"]

notices.hold()

_LAZY = {"Trainer": "llmkit.trainer", "RunResult": "llmkit.result", "load": "llmkit.result"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llmkit' has no attribute {name!r}")
