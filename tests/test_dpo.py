"""Preference tuning end to end on tiny models: DPO learns the preference, the reference never moves, LoRA-DPO
loads one base; ORPO and KTO run through the same runner; bad preference data is one sentence."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_manifest_records_the_data, count_model_loads, run_cli, write_recipe
from transformers import AutoModelForCausalLM

import llmkit
from llmkit import Recipe
from llmkit.models import load_trained
from llmkit.tasks import preference as dpo_runner

pytestmark = pytest.mark.e2e


def dpo_recipe(model_dir, data, output_dir, **overrides) -> dict:
    """A small DPO recipe for tiny models; evaluates on the training pairs themselves."""
    recipe = {
        "task": "dpo",
        "model": {"name": str(model_dir)},
        "data": {
            "train": str(data),
            "validation": str(data),
            "format": "alpaca_preference",
            "max_length": 96,
            "max_train_samples": 16,
            "max_eval_samples": 16,
        },
        "method": "full",
        "training": {
            "max_steps": 8,
            "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 16,
            "learning_rate": 1e-3,
            "logging_steps": 2,
            "save_strategy": "no",
            "seed": 0,
        },
        "output_dir": str(output_dir),
    }
    recipe.update(overrides)
    return recipe


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def test_full_dpo_learns_the_preference_and_the_reference_never_changes(
    tiny_dirs, preferences_small, tmp_path, monkeypatch
):
    built = {}
    real = dpo_runner.frozen_reference

    def capture(job, tokenizer):
        built["ref"] = real(job, tokenizer)
        built["before"] = _snapshot(built["ref"])
        return built["ref"]

    monkeypatch.setattr(dpo_runner, "frozen_reference", capture)
    out = tmp_path / "run"
    path = write_recipe(tmp_path, dpo_recipe(tiny_dirs["llama"], preferences_small, out, dpo={"beta": 0.1}))
    code, stdout, stderr = run_cli("train", str(path))
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    # On the training pairs: the DPO loss fell from log 2, and the chosen answers now out-score the rejected ones.
    assert metrics["eval_loss_before"] == pytest.approx(0.6931, abs=1e-3)
    assert metrics["eval_loss"] < metrics["eval_loss_before"] - 0.02
    assert metrics["eval_rewards/chosen"] > metrics["eval_rewards/rejected"]
    assert metrics["eval_rewards/margins"] > 0 and metrics["eval_rewards/accuracies"] > 0.7
    assert metrics["train_rewards/margins"] > 0 and 0 <= metrics["train_rewards/accuracies"] <= 1
    losses = [e["loss"] for e in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "loss" in e]
    assert losses[-1] < losses[0]
    assert 0 <= metrics["preference_accuracy_before"] <= 1 and 0 <= metrics["preference_accuracy"] <= 1
    # The reference is a separate frozen copy, bit-identical after training, while the policy moved.
    after = _snapshot(built["ref"])
    assert all(torch.equal(built["before"][name], after[name]) for name in after)
    assert not any(p.requires_grad for p in built["ref"].parameters())
    trained = load_trained(out).model.state_dict()
    assert any(not torch.equal(trained[name], after[name]) for name in after)
    assert "reference: a frozen copy" in stderr and "reward accuracy" in stderr and "rewards/margins" in stdout


def test_lora_dpo_loads_one_base_and_uses_it_with_the_adapter_disabled(
    tiny_dirs, preferences_small, tmp_path, monkeypatch
):
    loads = count_model_loads(monkeypatch)
    recipe = dpo_recipe(
        tiny_dirs["llama"],
        preferences_small,
        tmp_path / "run",
        method={"name": "lora", "r": 8, "target_modules": "all-linear", "lora_dropout": 0.0},
    )
    recipe["training"]["learning_rate"] = 2e-2
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    assert loads == ["causal_lm"], "LoRA-DPO loads the base model once: no separate reference copy"
    metrics = result.metrics
    assert metrics["eval_loss"] < metrics["eval_loss_before"] and metrics["eval_rewards/margins"] > 0
    # The base weights under the adapter are the reference, so they must not have moved.
    base = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).state_dict()
    under = result.model.get_base_model().state_dict()
    frozen = {name.replace(".base_layer", ""): v for name, v in under.items() if "lora_" not in name}
    assert frozen.keys() == base.keys()
    for name, value in base.items():
        assert torch.equal(frozen[name], value), name
    assert "ref" not in result.model.peft_config and not (result.output_dir / "ref").exists()
    assert json.loads((result.output_dir / "llmkit.json").read_text())["task"] == "dpo"
    reloaded = load_trained(result.output_dir)
    probe = reloaded.tokenizer(["Name a colour."], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(reloaded.model(**probe).logits, result.model.eval()(**probe).logits)


@pytest.mark.parametrize("task", ["orpo", "kto"])
def test_orpo_and_kto_run_on_the_same_data_paths(task, tiny_dirs, tmp_path):
    """ORPO on text pairs (GPT-2, no chat template); KTO on chat-message pairs, unpaired into good / bad answers."""
    data = tmp_path / "pairs.jsonl"
    if task == "orpo":
        rows = [{"prompt": f"Q{i}: name a colour.\nA:", "chosen": " Blue.", "rejected": " No."} for i in range(8)]
        family, fmt = "gpt2", "preference"
    else:
        rows = [
            {
                "chosen": [{"role": "user", "content": f"Colour {i}?"}, {"role": "assistant", "content": "Blue."}],
                "rejected": [{"role": "user", "content": f"Colour {i}?"}, {"role": "assistant", "content": "No."}],
            }
            for i in range(8)
        ]
        family, fmt = "llama", "preference"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = dpo_recipe(tiny_dirs[family], data, tmp_path / "run", task=task, **{task: {"beta": 0.1}})
    recipe["data"].update(format=fmt, max_length=48)
    recipe["training"].update(max_steps=3)
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    assert result.metrics["train_steps"] == 3 and "eval_loss" in result.metrics
    assert "preference_accuracy" in result.metrics and (result.output_dir / "model.safetensors").is_file()
    assert_manifest_records_the_data(result.output_dir)


def test_the_loss_type_reaches_trl(tiny_dirs, tmp_path):
    """dpo.loss_type is TRL's: before any update the policy is its reference (margin 0), where IPO's loss is
    (1 / 2β)² = 25 at β 0.1 and the sigmoid loss would be ln 2."""
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Q{i}: name a colour.\nA:", "chosen": " Blue.", "rejected": " No."} for i in range(8)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = dpo_recipe(tiny_dirs["gpt2"], data, tmp_path / "run", dpo={"beta": 0.1, "loss_type": "ipo"})
    recipe["data"].update(format="preference", max_length=48)
    recipe["training"].update(max_steps=2)
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    assert result.metrics["eval_loss_before"] == pytest.approx(25.0, rel=1e-4)
    assert result.metrics["eval_loss"] < 25.0


# ---------------------------------------------------------------- bad input: one sentence, non-zero, nothing written


def _bad(tmp_path, recipe):
    code, _stdout, stderr = run_cli("train", str(write_recipe(tmp_path, recipe)))
    assert code != 0 and "Traceback" not in stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.incomplete").exists(), "nothing written"
    return code, stderr


def test_missing_rejected_and_identical_pairs_are_named(tiny_dirs, tmp_path):
    data = tmp_path / "pairs.jsonl"
    good = {"instruction": "Name a colour.", "chosen": "Blue.", "rejected": "No."}
    data.write_text(json.dumps(good) + "\n" + json.dumps({"instruction": "Name a colour.", "chosen": "Blue."}) + "\n")
    code, err = _bad(tmp_path, dpo_recipe(tiny_dirs["llama"], data, tmp_path / "run"))
    assert code == 3 and "pairs.jsonl:2: row has no 'rejected' field" in err
    data.write_text(json.dumps(good) + "\n" + json.dumps({**good, "rejected": "Blue."}) + "\n")
    code, err = _bad(tmp_path, dpo_recipe(tiny_dirs["llama"], data, tmp_path / "run"))
    assert code == 3 and "chosen identical to rejected" in err and "pairs.jsonl:2" in err
    assert "data.identical_pairs: drop" in err


def test_bad_dpo_keys_fail_before_anything_loads(tiny_dirs, preferences_small, tmp_path):
    code, err = _bad(tmp_path, dpo_recipe(tiny_dirs["llama"], preferences_small, tmp_path / "run", dpo={"bta": 1}))
    assert code == 2 and "dpo.bta: unknown key; did you mean 'beta'?" in err
    code, err = _bad(tmp_path, dpo_recipe(tiny_dirs["bert"], preferences_small, tmp_path / "run"))
    assert code == 2 and "task: 'dpo' cannot run on a bert model" in err


def test_inspect_data_shows_a_pair_as_trl_scores_it(tiny_dirs, preferences_small, tmp_path):
    path = write_recipe(tmp_path, dpo_recipe(tiny_dirs["llama"], preferences_small, tmp_path / "run"))
    code, stdout, stderr = run_cli("inspect-data", str(path), "--index", "0")
    assert code == 0, stderr
    assert "<|im_start|>user" in stdout and "chosen (" in stdout and "rejected (" in stdout
    assert "<|im_end|>\n⟧" in stdout, "the end-of-turn marker is part of each scored answer"
