"""A finished run stands on its own: its adapter names a base that plain peft can load on another machine (the hub
id of a packaged model, not a path in llmkit's cache), and it reloads from any working directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import sft_recipe

import llmkit
from llmkit import Recipe
from llmkit.families import PACKAGED, Packaged
from llmkit.models import load_trained

pytestmark = pytest.mark.e2e

HUB_ID = "llmkit-test/tiny-llama"

LOAD_WITH_PEFT_ALONE = """
import sys, torch
from peft import AutoPeftModelForCausalLM
model = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    torch.save(model(input_ids=torch.tensor([[5, 17, 42, 99]])).logits, sys.argv[2])
"""


def _hub_cache(root, model_dir, repo_id):
    """A Hugging Face hub cache holding `model_dir` as `repo_id`, as a download would have left it."""
    commit = "0" * 40
    repo = root / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


def test_a_packaged_base_is_recorded_by_its_hub_id_and_loads_with_plain_peft(tiny_dirs, instructions_small, tmp_path,
                                                                            monkeypatch):  # fmt: skip
    package = tmp_path / "site" / "llmkit_fake_packaged"
    shutil.copytree(tiny_dirs["llama"], package / "model")
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(PACKAGED, "tiny-llama", Packaged("llmkit_fake_packaged", "x", "model", HUB_ID, "llama"))

    recipe = sft_recipe("packaged:tiny-llama", instructions_small, tmp_path / "run")
    recipe["data"]["validation_split"] = 0
    recipe["training"]["max_steps"] = 3
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    config = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == HUB_ID

    cache = _hub_cache(tmp_path / "hub", tiny_dirs["llama"], HUB_ID)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", PYTHONPATH="")
    done = subprocess.run([sys.executable, "-c", LOAD_WITH_PEFT_ALONE, str(result.output_dir), "logits.pt"],
                          cwd=elsewhere, env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with torch.no_grad():
        ours = load_trained(result.output_dir).model(input_ids=torch.tensor([[5, 17, 42, 99]])).logits
    assert torch.equal(torch.load(elsewhere / "logits.pt"), ours)


def test_a_local_base_is_recorded_by_its_absolute_path(tiny_dirs, instructions_small, tmp_path, monkeypatch):
    shutil.copytree(tiny_dirs["llama"], tmp_path / "models" / "tiny")
    recipe = sft_recipe("models/tiny", instructions_small, tmp_path / "run")  # relative to the cwd, tmp_path
    recipe["data"]["validation_split"] = 0
    recipe["training"]["max_steps"] = 2
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    config = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tmp_path / "models" / "tiny")
    monkeypatch.chdir(tmp_path / "models")
    assert load_trained(result.output_dir).model is not None  # the relative name would not resolve here
