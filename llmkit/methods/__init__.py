"""Method registry: `method: <name>` → a config class whose `apply` prepares the model.

Each method is one small module; its config is a pydantic model (validated with the recipe, torch-free) and its
`apply` imports peft or torch only when a run starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError

from llmkit.errors import RecipeError, first_line
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


def read_run(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], MethodConfig]:
    """A finished run's llmkit.json and its method block, or one sentence saying why the directory cannot be used
    (not a run, a damaged llmkit.json, or a method this install cannot rebuild, e.g. QLoRA without bitsandbytes)."""
    meta = Path(run_dir) / "llmkit.json"
    if not meta.is_file():
        raise RecipeError(f"'{run_dir}' is not a finished llmkit run (it has no llmkit.json).")
    try:
        info = json.loads(meta.read_text())
        block = dict(info["method"])
        cls = METHODS[block["name"]]
    except (ValueError, KeyError, TypeError) as exc:
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        raise RecipeError(f"'{meta}' is damaged ({reason}); train the run again.") from exc
    try:
        return info, cls(**block)
    except ValidationError as exc:
        problem = exc.errors()[0]
        key = ".".join(["method", *(str(part) for part in problem["loc"])])
        message = problem["msg"].removeprefix("Value error, ")
        raise RecipeError(f"'{run_dir}' cannot be loaded: {key}: {message}.") from exc


__all__ = ["METHODS", "MethodBlock", "MethodConfig", "MethodContext", "read_run"]
