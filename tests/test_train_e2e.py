"""End to end on tiny models: real recipes through the real CLI and API, asserting outcomes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, interrupted_at_step, run_cli, sft_recipe, train_fails, write_recipe

import llmkit
from llmkit import Recipe
from llmkit.models import load_trained

pytestmark = pytest.mark.e2e


def _probe(tokenizer):
    return tokenizer(["Give three examples of a fruit.", "Name a colour."], return_tensors="pt", padding=True)


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_lora_sft_cli_learns_and_writes_a_complete_run(tiny_dirs, instructions_small, tmp_path):
    out = tmp_path / "run"
    path = write_recipe(tmp_path, sft_recipe(tiny_dirs["llama"], instructions_small, out))
    code, stdout, stderr = run_cli("train", str(path))
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    # A random tiny model moves little under a low-rank update; full fine-tuning (below) moves a lot more.
    assert metrics["eval_loss"] < metrics["eval_loss_before"] - 0.05, metrics
    assert metrics["train_steps"] == 20 and metrics["tokens_per_second"] > 0 and metrics["peak_memory_mb"] > 0
    assert 0 < metrics["trainable_params"] < metrics["total_params"]
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "recipe.yaml",
        "manifest.json",
        "llmkit.json",
        "train_log.jsonl",
    ):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["packages"]["transformers"] and len(manifest["data"]["train"]["sha256"]) == 64
    assert not (tmp_path / "run.incomplete").exists()
    assert Recipe.from_yaml(out / "recipe.yaml").method.r == 8  # the resolved recipe reloads
    assert "held-out after training:  loss" in stderr
    header, loss = stdout.splitlines()[:2]  # the summary table: before / after / test, one row per metric
    assert header.split() == ["metric", "before", "after", "test"]
    assert loss.split() == ["loss", f"{metrics['eval_loss_before']:.4f}", f"{metrics['eval_loss']:.4f}", "-"]


def test_saved_adapter_reloads_with_the_same_logits(tiny_dirs, instructions_small, tmp_path):
    recipe = Recipe.from_dict(sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run"))
    result = llmkit.Trainer(recipe).train()
    trained = load_trained(result.output_dir)
    batch = _probe(trained.tokenizer)
    result.model.eval()
    assert torch.equal(_logits(result.model, batch), _logits(trained.model, batch))
    with trained.model.disable_adapter():  # and the adapter really changes the model
        assert not torch.allclose(_logits(trained.model, batch), _logits(result.model, batch))


def test_full_finetune_gpt2_reloads_with_the_same_logits(tiny_dirs, instructions_small, tmp_path):
    recipe = Recipe.from_dict(sft_recipe(tiny_dirs["gpt2"], instructions_small, tmp_path / "run", method="full"))
    recipe.training.learning_rate = 5e-3
    result = llmkit.Trainer(recipe).train()
    assert (result.output_dir / "model.safetensors").is_file()
    assert result.metrics["eval_loss"] < result.metrics["eval_loss_before"] - 0.5
    trained = load_trained(result.output_dir)
    batch = _probe(trained.tokenizer)
    assert torch.equal(_logits(result.model.eval(), batch), _logits(trained.model, batch))


def _final_weights(output_dir):
    from safetensors.torch import load_file

    return load_file(output_dir / "adapter_model.safetensors")


def test_gradient_accumulation_matches_a_bigger_batch(tiny_dirs, instructions_small, tmp_path):
    """Batch 4 × accumulation 1 and batch 1 × accumulation 4 see the same examples per step and must agree: the
    loss is normalised by the number of target tokens across the accumulated micro-batches, not per micro-batch."""
    runs = {}
    for batch, accum in ((4, 1), (1, 4)):
        recipe = sft_recipe(tiny_dirs["gpt2"], instructions_small, tmp_path / f"b{batch}")
        recipe["method"]["lora_dropout"] = 0.0
        recipe["training"].update(per_device_train_batch_size=batch, gradient_accumulation_steps=accum, max_steps=4)
        runs[batch] = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    a, b = _final_weights(runs[4].output_dir), _final_weights(runs[1].output_dir)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=1e-4), name
    assert runs[4].metrics["train_loss"] == pytest.approx(runs[1].metrics["train_loss"], rel=1e-4)


def test_resume_equals_an_uninterrupted_run(tiny_dirs, instructions_small, tmp_path, monkeypatch):
    def recipe(out):
        r = sft_recipe(tiny_dirs["gpt2"], instructions_small, out)
        r["method"]["lora_dropout"] = 0.0
        r["training"].update(max_steps=6, save_strategy="steps", save_steps=3)
        return r

    straight = llmkit.Trainer(Recipe.from_dict(recipe(tmp_path / "straight"))).train()

    with interrupted_at_step(monkeypatch, 5):
        llmkit.Trainer(Recipe.from_dict(recipe(tmp_path / "resumed"))).train()
    assert not (tmp_path / "resumed").exists(), "an interrupted run must not look finished"
    assert (tmp_path / "resumed.incomplete" / "checkpoints" / "checkpoint-3").is_dir()

    with pytest.raises(llmkit.RecipeError, match="an interrupted run is in"):
        Recipe.from_dict(recipe(tmp_path / "resumed"))  # validating is fine ...
        llmkit.Trainer(Recipe.from_dict(recipe(tmp_path / "resumed"))).train()  # ... restarting silently is not

    resumed = llmkit.Trainer(Recipe.from_dict(recipe(tmp_path / "resumed"), ["training.resume_from_checkpoint=true"]))
    result = resumed.train()
    a, b = _final_weights(straight.output_dir), _final_weights(result.output_dir)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_text_format_with_packing_learns(tiny_dirs, tmp_path):
    story = REPO.parent / "shared" / "data" / "the-verdict.txt"
    if not story.is_file():
        pytest.skip("../shared/data/the-verdict.txt is not here")
    recipe = sft_recipe(tiny_dirs["llama"], story, tmp_path / "run", method="full")
    recipe["data"] = {
        "train": str(story),
        "format": "text",
        "max_length": 64,
        "overlong": "split",
        "packing": True,
        "validation_split": 0.1,
    }
    recipe["training"]["learning_rate"] = 3e-3
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    assert result.metrics["eval_loss"] < result.metrics["eval_loss_before"] - 0.5


def test_inspect_data_shows_the_label_mask(tiny_dirs, instructions_small, tmp_path):
    path = write_recipe(tmp_path, sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run"))
    code, stdout, stderr = run_cli("inspect-data", str(path), "--index", "1", "--tokens")
    assert code == 0, stderr
    assert "⟦" in stdout and "<|im_end|>\n⟧" in stdout and "-100" in stdout
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.incomplete").exists()


def test_real_cli_in_a_subprocess(tiny_dirs, instructions_small, tmp_path):
    recipe = sft_recipe(tiny_dirs["gpt2"], instructions_small, tmp_path / "run")
    path = write_recipe(tmp_path, recipe)
    done = subprocess.run(
        [sys.executable, "-m", "llmkit", "train", str(path), "training.max_steps=3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training: 3 steps in" in done.stdout and done.stdout.count("output:") == 1
    # Not a terminal: plain lines, no bars redrawn with carriage returns or cursor codes.
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr
    assert "precision: float32 weights, no autocast · attention sdpa" in done.stderr, "the CPU choice is said"


# ---------------------------------------------------------------- bad input: one sentence, non-zero, nothing written


_bad = train_fails


def test_bad_row_is_named_and_nothing_is_written(tiny_dirs, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n' * 5 + '{"instruction": "c"}\n')
    code, err = _bad(tmp_path, sft_recipe(tiny_dirs["llama"], data, tmp_path / "run"))
    assert code == 3 and "d.jsonl:6: row has no 'output' field" in err


def test_empty_dataset(tiny_dirs, tmp_path):
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    _code, err = _bad(tmp_path, sft_recipe(tiny_dirs["llama"], data, tmp_path / "run"))
    assert "empty.jsonl: has no rows" in err


def test_every_row_too_long(tiny_dirs, instructions_small, tmp_path):
    _code, err = _bad(
        tmp_path, sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run"), "data.max_length=8"
    )
    assert "no training examples are left" in err and "max_length=8" in err


def test_missing_model_and_data(tiny_dirs, instructions_small, tmp_path):
    code, err = _bad(tmp_path, sft_recipe(tmp_path / "nope", tmp_path / "nope.json", tmp_path / "run"))
    assert code == 2 and "nope.json' does not exist" in err and "'" + str(tmp_path / "nope") in err


def test_wrong_family_for_task(tiny_dirs, instructions_small, tmp_path):
    _code, err = _bad(tmp_path, sft_recipe(tiny_dirs["bert"], instructions_small, tmp_path / "run"))
    assert "task: 'sft' cannot run on a bert model" in err


def test_lora_target_not_in_model(tiny_dirs, instructions_small, tmp_path):
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run")
    recipe["method"]["target_modules"] = ["no_such_proj"]
    _code, err = _bad(tmp_path, recipe)
    assert "method:" in err and "no_such_proj" in err


def test_refuses_to_overwrite_a_finished_run(tiny_dirs, instructions_small, tmp_path):
    out = tmp_path / "done"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    path = write_recipe(tmp_path, sft_recipe(tiny_dirs["llama"], instructions_small, out))
    code, _, err = run_cli("train", str(path))
    assert code == 2 and "already exists and is not empty" in err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_a_corrupt_gguf_file_is_one_sentence(tiny_dirs, instructions_small, tmp_path):
    broken = tmp_path / "m" / "model.gguf"
    broken.parent.mkdir()
    broken.write_bytes(b"GGUF" + b"\0" * 8)  # a header cut short
    code, err = _bad(tmp_path, sft_recipe(broken, instructions_small, tmp_path / "run"))
    assert code == 2 and f"model.name: cannot read the GGUF file '{broken}'" in err


def test_evaluation_without_held_out_data(tiny_dirs, instructions_small, tmp_path):
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run")
    _code, err = _bad(tmp_path, recipe, "data.validation_split=0", "training.eval_strategy=steps")
    assert "training: eval_strategy / load_best_model_at_end need held-out data, and this run has none" in err


def test_max_length_past_the_models_positions(tiny_dirs, instructions_small, tmp_path):
    limit = json.loads((tiny_dirs["gpt2"] / "config.json").read_text())["n_positions"]
    recipe = sft_recipe(tiny_dirs["gpt2"], instructions_small, tmp_path / "run")
    code, err = _bad(tmp_path, recipe, f"data.max_length={limit + 1}")
    assert code == 2 and f"data.max_length: {limit + 1} is more than this gpt2 model's {limit} positions" in err


def test_a_chat_template_that_refuses_the_conversation(tiny_dirs, instructions_small, tmp_path):
    import shutil

    model = tmp_path / "no-system"
    shutil.copytree(tiny_dirs["llama"], model)
    refuse = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    (model / "chat_template.jinja").write_text(refuse + (model / "chat_template.jinja").read_text())
    recipe = sft_recipe(model, instructions_small, tmp_path / "run")
    code, err = _bad(tmp_path, recipe, "data.system_prompt=Be brief.")
    assert code == 3 and "the model's chat template refuses this conversation (System role not supported)" in err


def test_a_failed_run_leaves_no_directories_it_created(tiny_dirs, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    path = write_recipe(tmp_path, sft_recipe(tiny_dirs["llama"], data, tmp_path / "new" / "deeper" / "run"))
    code, _, _ = run_cli("train", str(path))
    assert code == 3 and not (tmp_path / "new").exists()
