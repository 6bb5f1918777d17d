"""`training.use_liger_kernel` (transformers' flag): refused in one sentence without the package (at validate) or
without a CUDA GPU (when training starts, before any model loads). Training with it is in tests/test_gpu.py."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import count_model_loads, run_cli, sft_recipe, train_fails, write_recipe

from llmkit import Recipe


def test_without_the_package_validate_says_how_to_install_it(tiny_dirs, instructions_small, tmp_path):
    if importlib.util.find_spec("liger_kernel") is not None:
        pytest.skip("liger_kernel is installed here")
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run")
    recipe["training"]["use_liger_kernel"] = True
    code, _, err = run_cli("validate", str(write_recipe(tmp_path, recipe)))
    assert code != 0 and "Traceback" not in err
    assert (
        "training.use_liger_kernel: Liger's kernels need the liger_kernel package: pip install 'llmkit[liger]' "
        "(or remove the key)"
    ) in err
    recipe["training"]["use_liger_kernel"] = False
    assert run_cli("validate", str(write_recipe(tmp_path, recipe)))[0] == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_train_refuses_it_before_the_model_loads(tiny_dirs, instructions_small, tmp_path, monkeypatch):
    monkeypatch.setattr("llmkit.recipe.training.missing", lambda module: None)  # as if the package were installed
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run")
    recipe["training"]["use_liger_kernel"] = True
    Recipe.from_dict(recipe)  # valid: the package is there
    loads = count_model_loads(monkeypatch)
    _, err = train_fails(tmp_path, recipe)
    assert (
        "training.use_liger_kernel: Liger's kernels run on a CUDA GPU and this machine has none; remove the key to "
        "train on the CPU."
    ) in err
    assert loads == []
