"""Held-out losses are the mean over the whole split — over tokens for sft (padded and packed), seq2seq and causal
distillation, over examples for classification, over pairs for DPO — so the eval batch size cannot change them.

Each task trains 2 steps through its real runner; the trainer it built then evaluates the same held-out split at
eval batch sizes 1, 3 and 8 (held-out splits whose size 3 and 8 do not divide, so the last batch is short)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import sft_recipe
from toy import classification_recipe, copy_rows, sentiment_rows, seq2seq_recipe, write_splits

import llmkit
from llmkit import Recipe
from llmkit.heldout import SplitMeans

pytestmark = pytest.mark.e2e

BATCH_SIZES = (1, 3, 8)


def _train_and_evaluate(monkeypatch, module: str, recipe: dict) -> tuple[dict, dict, object]:
    """Train `recipe` (its task runner is llmkit.tasks.<module>); return its metrics, eval results per eval batch
    size, and the trainer."""
    import importlib

    runner = importlib.import_module(f"llmkit.tasks.{module}")
    real_fit, seen = runner.fit, {}

    def fit(trainer, env, built, **kwargs):
        metrics = real_fit(trainer, env, built, **kwargs)
        for size in BATCH_SIZES:
            trainer.args.per_device_eval_batch_size = size
            seen[size] = trainer.evaluate()
        seen["trainer"] = trainer
        return metrics

    monkeypatch.setattr(runner, "fit", fit)
    recipe["training"].update(max_steps=2, save_strategy="no")
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    return result.metrics, {size: seen[size] for size in BATCH_SIZES}, seen["trainer"]


def _assert_invariant(metrics: dict, by_size: dict, keys=("eval_loss",)) -> None:
    for key in keys:
        values = [by_size[size][key] for size in BATCH_SIZES]
        assert values == pytest.approx([metrics[key]] * 3, rel=1e-5), (key, values)


def test_sft_loss_is_the_mean_over_predicted_tokens(tiny_dirs, instructions_small, tmp_path, monkeypatch):
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run", method="full")
    recipe["data"]["max_eval_samples"] = 10
    recipe["training"].update(metric_for_best_model="loss", eval_steps=2)  # an evaluation during training, at step 2
    metrics, by_size, trainer = _train_and_evaluate(monkeypatch, "sft", recipe)
    _assert_invariant(metrics, by_size)
    # What the best-model / early-stopping logic and the trackers (the log) saw is the same figure.
    assert trainer.state.best_metric == metrics["eval_loss"]
    logged = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    assert logged[:2] == [metrics["eval_loss_before"], metrics["eval_loss"]]

    # By hand: every held-out example alone, cross-entropy summed over the tokens it predicts, over their count.
    model, total, count = trainer.model.eval(), 0.0, 0
    with torch.no_grad():
        for example in trainer.eval_dataset:
            ids = torch.as_tensor(example["input_ids"])[None]
            labels = torch.tensor(example["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1].double()
            scored = labels != -100
            total += float(torch.nn.functional.cross_entropy(logits[scored], labels[scored], reduction="sum"))
            count += int(scored.sum())
    assert metrics["eval_loss"] == pytest.approx(total / count, rel=1e-5)
    lengths = {int((torch.tensor(ex["labels"][1:]) != -100).sum()) for ex in trainer.eval_dataset}
    assert len(lengths) > 1, "examples of different lengths, so a mean of batch means would differ"


def test_packed_sft(tiny_dirs, instructions_small, tmp_path, monkeypatch):
    text = tmp_path / "text.jsonl"
    rows = json.loads(instructions_small.read_text())
    text.write_text("".join(json.dumps({"text": r["instruction"] + " " + r["output"]}) + "\n" for r in rows))
    recipe = sft_recipe(tiny_dirs["gpt2"], text, tmp_path / "run", method="full")
    recipe["data"].update(format="text", packing=True, max_length=96, validation_split=0.5)
    metrics, by_size, trainer = _train_and_evaluate(monkeypatch, "sft", recipe)
    assert len(trainer.eval_dataset) % 8, "a short last batch at eval batch size 8"
    _assert_invariant(metrics, by_size)


def test_seq2seq(tiny_dirs, tmp_path, monkeypatch):
    splits = write_splits(tmp_path / "data", copy_rows, sizes=(32, 10, 10))
    recipe = seq2seq_recipe(tiny_dirs["t5"], splits, tmp_path / "run")
    metrics, by_size, _ = _train_and_evaluate(monkeypatch, "seq2seq", recipe)
    _assert_invariant(metrics, by_size, ("eval_loss", "eval_rouge1"))


def test_classification_loss_is_the_mean_over_examples(tiny_dirs, tmp_path, monkeypatch):
    splits = write_splits(tmp_path / "data", sentiment_rows, sizes=(32, 10, 10))
    recipe = classification_recipe(tiny_dirs["bert"], splits, tmp_path / "run", method="full")
    metrics, by_size, _ = _train_and_evaluate(monkeypatch, "classification", recipe)
    _assert_invariant(metrics, by_size, ("eval_loss", "eval_accuracy"))


def test_causal_distillation_loss_and_its_parts(tiny_dirs, instructions_small, tmp_path, monkeypatch):
    from llmkit.testing import save_tiny

    student = save_tiny("llama", tmp_path / "student", seed=1, num_hidden_layers=1)
    recipe = sft_recipe(student, instructions_small, tmp_path / "run", method="full")
    recipe["task"] = "distill"
    recipe["distill"] = {"teacher": str(tiny_dirs["llama"]), "alpha": 0.5, "temperature": 2.0}
    recipe["data"].update(max_eval_samples=10)
    metrics, by_size, _ = _train_and_evaluate(monkeypatch, "distill", recipe)
    _assert_invariant(metrics, by_size, ("eval_loss", "eval_ce", "eval_kl"))
    combined = 0.5 * metrics["eval_ce"] + 0.5 * 4.0 * metrics["eval_kl"]
    assert metrics["eval_loss"] == pytest.approx(combined, rel=1e-6)


def test_dpo_loss_is_the_mean_over_pairs(tiny_dirs, preferences_small, tmp_path, monkeypatch):
    from test_dpo import dpo_recipe

    recipe = dpo_recipe(tiny_dirs["llama"], preferences_small, tmp_path / "run")
    recipe["data"]["max_eval_samples"] = 10
    recipe["training"]["learning_rate"] = 5e-3
    metrics, by_size, _ = _train_and_evaluate(monkeypatch, "preference", recipe)
    assert abs(metrics["eval_loss"] - metrics["eval_loss_before"]) > 1e-3, "the policy moved from the reference"
    _assert_invariant(metrics, by_size)


def test_split_means_share_a_batch_total_by_count_and_drop_repeated_items():
    """What accelerate's gather_for_metrics does on a last, evened-out batch: keep the first items only."""
    means = SplitMeans(lambda t: t)
    means.add({"loss": (torch.tensor(12.0), torch.tensor([1, 2, 3]))})  # a batch of 6 tokens, loss sum 12
    means.add({"loss": (torch.tensor(3.0), torch.tensor([3]))})
    assert means.mean("loss") == pytest.approx(15 / 9)
    dropping = SplitMeans(lambda t: t[:1])  # the second item is a repeat accelerate added
    dropping.add({"loss": (torch.tensor(10.0), torch.tensor([4, 4]))})
    assert (dropping.sums["loss"], dropping.counts["loss"]) == (5.0, 4.0)
