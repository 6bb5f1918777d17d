"""Method registry: `method: <name>` → a config class whose `apply` prepares the model.

Each method is one small module; its config is a pydantic model (validated with the recipe, torch-free) and its
`apply` imports peft or torch only when a run starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Union

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

METHODS: dict[str, type[MethodConfig]] = {}


def register(cls: type[MethodConfig]) -> type[MethodConfig]:
    """Add a method under its `name` (the default of its `name: Literal[...]` field)."""
    METHODS[cls.model_fields["name"].default] = cls
    return cls


# One line per method; the recipe's `method:` block, the docs and the methods matrix all follow this list.
register(FullMethod)
register(LoraMethod)
register(QLoraMethod)
register(AdaLoraMethod)
register(Ia3Method)
register(PrefixTuningMethod)
register(PromptTuningMethod)
register(BitFitMethod)
register(AdapterMethod)
register(AdapterFusionMethod)
register(LlamaAdapterMethod)

# The recipe's `method:` block: whichever registered method its `name` picks.
MethodBlock = Annotated[Union[tuple(METHODS.values())], Field(discriminator="name")]  # noqa: UP007

# Keys llmkit 0.1 named its own way, now peft's (and bitsandbytes') names, per method; runs saved by 0.1 still load.
_LORA_0_1 = {"alpha": "lora_alpha", "dropout": "lora_dropout"}
RENAMED_KEYS = {
    "lora": _LORA_0_1,
    "adalora": _LORA_0_1,
    "qlora": {
        **_LORA_0_1,
        "quant_type": "bnb_4bit_quant_type",
        "double_quant": "bnb_4bit_use_double_quant",
        "compute_dtype": "bnb_4bit_compute_dtype",
    },
    "prompt_tuning": {"init_text": "prompt_tuning_init_text"},
}
RUN_META = "llmkit.json"


def read_run(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], MethodConfig]:
    """A finished run's llmkit.json and its method block, or one sentence saying why the directory cannot be used
    (not a run, a damaged llmkit.json, or a method this install cannot rebuild, e.g. QLoRA without bitsandbytes)."""
    meta = Path(run_dir) / RUN_META
    if not meta.is_file():
        raise RecipeError(f"'{run_dir}' is not a finished llmkit run (it has no {RUN_META}).")
    try:
        info = json.loads(meta.read_text())
        renamed = RENAMED_KEYS.get(info["method"].get("name"), {})
        block = {renamed.get(key, key): value for key, value in info["method"].items()}
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


__all__ = ["METHODS", "RUN_META", "MethodBlock", "MethodConfig", "MethodContext", "read_run", "register"]
