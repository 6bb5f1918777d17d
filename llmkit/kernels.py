"""Liger's kernels (`training.use_liger_kernel`, transformers' own flag): Triton kernels, so CUDA GPUs only.

transformers patches them in when its Trainer starts training, after the model has loaded, and on a machine without
a GPU fails there with a Triton error; llmkit says so before anything loads. The missing package is refused earlier
still, at `llmkit validate` (llmkit/recipe/training.py).
"""

from __future__ import annotations

import torch

from llmkit.errors import RecipeError
from llmkit.recipe import Recipe


def check(recipe: Recipe, source: str | None = None) -> None:
    if recipe.training.use_liger_kernel and not torch.cuda.is_available():
        raise RecipeError(
            "training.use_liger_kernel: Liger's kernels run on a CUDA GPU and this machine has none; remove the key "
            "to train on the CPU.",
            source,
        )
