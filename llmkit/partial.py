"""Save and reload only the tensors a method trained (BitFit's biases, bottleneck adapters, a task head).

These methods are not peft adapters, so peft's save/load does not apply; writing the whole model would cost its
full size per run when a few thousand values changed. Tensors keep their names in the model, in safetensors.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llmkit.errors import RecipeError

WEIGHTS = "llmkit_weights.safetensors"


def save_tensors(model: Any, names: Iterable[str], directory: str | Path) -> None:
    """Write the named parameters of `model` to `directory/llmkit_weights.safetensors`."""
    from safetensors.torch import save_file

    params = dict(model.named_parameters())
    tensors = {name: params[name].detach().cpu().contiguous() for name in names}
    Path(directory).mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(Path(directory) / WEIGHTS))


def load_tensors(model: Any, directory: str | Path) -> Any:
    """Copy the saved tensors into `model` in place; every saved name must exist with the same shape."""
    import torch
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS
    if not path.is_file():
        raise RecipeError(f"'{directory}' has no {WEIGHTS}, so it is not a finished run of this method.")
    saved = load_file(str(path))
    params = dict(model.named_parameters())
    wrong = [n for n, t in saved.items() if n not in params or params[n].shape != t.shape]
    if wrong:
        raise RecipeError(
            f"'{path}' does not fit this model ({len(wrong)} tensors missing or of another shape, e.g. '{wrong[0]}'); "
            "was it trained on another base model?"
        )
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor.to(params[name].dtype))
    return model


def train_only(model: Any, names: Iterable[str]) -> Any:
    """Freeze every parameter of `model` except those named."""
    wanted = set(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in wanted)
    return model


def trainable_names(model: Any) -> list[str]:
    return [name for name, param in model.named_parameters() if param.requires_grad]
