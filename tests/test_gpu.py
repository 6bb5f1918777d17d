"""GPU paths (bf16 training). CI has no GPU: these skip cleanly there and run wherever CUDA is available."""

from __future__ import annotations

import pytest
import torch
from conftest import sft_recipe

import llmkit
from llmkit import Recipe

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.e2e,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_bf16_lora_sft_on_gpu_learns(tiny_dirs, instructions_small, tmp_path):
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run")
    recipe["model"]["dtype"] = "bfloat16"
    recipe["training"]["bf16"] = True
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    assert result.metrics["eval_loss"] < result.metrics["eval_loss_before"]
    assert result.metrics["peak_memory_kind"] == "cuda_max_allocated"
    assert next(result.model.parameters()).device.type == "cuda"
