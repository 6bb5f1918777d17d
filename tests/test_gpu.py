"""GPU paths (bf16 training). CI has no GPU: these skip cleanly there and run wherever CUDA is available."""

from __future__ import annotations

import pytest
import torch
from conftest import run_cli, sft_recipe

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


def test_qlora_on_gpu_trains_through_evaluation_and_merges(tiny_dirs, instructions_small, tmp_path):
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run")
    recipe["method"] = {"name": "qlora", "r": 8, "target_modules": "all-linear"}
    recipe["training"].update(eval_steps=5, bf16=True)
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    assert result.metrics["eval_loss"] < result.metrics["eval_loss_before"]
    assert next(p for p in result.model.parameters() if p.requires_grad).device.type == "cuda"
    code, _, err = run_cli("merge", str(result.output_dir), "--output", str(tmp_path / "merged"))
    assert code == 0, err


@pytest.mark.parametrize("method", ["lora", "full"])
def test_auto_precision_and_attention_fit_the_gpu(method, tiny_dirs, instructions_small, tmp_path, capfd):
    """model.dtype / training.bf16 / attn_implementation auto: bf16 weights where the GPU has bf16 (float32 weights
    with bf16 autocast when the base weights train), FlashAttention 2 when installed, else sdpa; said once."""
    import importlib.util

    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run", method=method)
    recipe["training"]["max_steps"] = 2
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    bf16 = torch.cuda.is_bf16_supported()
    weights = "bfloat16" if bf16 and method == "lora" else "float32"
    frozen = next(p for p in result.model.parameters() if not p.requires_grad) if method == "lora" else None
    if frozen is not None:
        assert str(frozen.dtype) == f"torch.{weights}"
    flash = importlib.util.find_spec("flash_attn") is not None and weights == "bfloat16"
    attention = "flash_attention_2" if flash else "sdpa"
    expected = f"precision: {weights} weights, {'bf16' if bf16 else 'no'} autocast · attention {attention}"
    assert expected in capfd.readouterr().err


def test_liger_kernels_train_lora_on_gpu(tiny_dirs, instructions_small, tmp_path):
    """training.use_liger_kernel: transformers patches Liger's kernels into the model, and it still learns."""
    pytest.importorskip("liger_kernel", reason="needs pip install 'llmkit[liger]'")
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run")
    recipe["training"].update(use_liger_kernel=True, max_steps=10, bf16=True)
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    assert result.metrics["eval_loss"] < result.metrics["eval_loss_before"]
    patched = [m for m in result.model.modules() if "Liger" in getattr(m.__dict__.get("forward"), "__qualname__", "")]
    assert patched, "Liger binds its kernels' forward onto the model's modules (RMSNorm, MLP); none was"
