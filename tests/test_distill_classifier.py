"""task: distill with classification data: a finished classifier teaches another, even one with a different
tokenizer; the teacher's columns follow the student's label order by name; its weights never change; bad pairings
are one sentence before training."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import run_cli, train_fails, write_recipe
from toy import classification_recipe, sentiment_rows, write_splits

import llmkit
from llmkit import Recipe
from llmkit.tasks.distill_classifier import _label_order

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return write_splits(tmp_path_factory.mktemp("sentiment"), sentiment_rows)


@pytest.fixture(scope="module")
def teacher(tiny_dirs, splits, tmp_path_factory):
    """A tiny BERT classifier that has learnt the toy sentiment task (labels neg, pos in that order)."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    recipe = classification_recipe(tiny_dirs["bert"], splits, out, method="full")
    recipe["training"].update(max_steps=40)
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    assert result.metrics["test_accuracy"] >= 0.9, result.metrics
    assert json.loads((out / "llmkit.json").read_text())["head_kwargs"]["id2label"] == {"0": "neg", "1": "pos"}
    return out


def _student(model_dir, splits, out, teacher, **distill) -> dict:
    recipe = classification_recipe(model_dir, splits, out, method="full", task="distill")
    recipe["distill"] = {"teacher": str(teacher), **distill}
    recipe["training"].update(max_steps=40)
    return recipe


def _digest(run_dir) -> str:
    return hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest()


def test_a_bert_teacher_teaches_a_gpt2_student_with_another_tokenizer(tiny_dirs, splits, teacher, tmp_path):
    before = _digest(teacher)
    recipe = _student(tiny_dirs["gpt2"], splits, tmp_path / "run", teacher, alpha=0.5, temperature=2.0)
    recipe["training"]["learning_rate"] = 2e-2
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    m = result.metrics
    assert m["eval_kl"] < m["eval_kl_before"] / 2, m  # the student moves towards the teacher's distribution
    assert m["eval_accuracy"] >= 0.9 and m["test_accuracy"] >= 0.9, m
    assert _digest(teacher) == before, "the teacher is only ever read"
    info = json.loads((result.output_dir / "llmkit.json").read_text())
    assert info["head"] == "seq_cls" and info["teacher"] == str(teacher)
    assert result.model.config.id2label == {0: "neg", 1: "pos"}


def test_soft_targets_alone_follow_the_teacher_through_a_reversed_label_order(tiny_dirs, splits, teacher, tmp_path):
    """alpha 0: the student sees only the teacher's logits. Its labels are listed pos, neg (the teacher's are
    neg, pos), so a column mix-up would teach it the opposite of every answer."""
    assert _label_order(["neg", "pos"], ["pos", "neg"], "t") == [1, 0]
    recipe = _student(tiny_dirs["bert"], splits, tmp_path / "run", teacher, alpha=0.0)
    recipe["classification"] = {"labels": ["pos", "neg"]}
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    assert result.model.config.id2label == {0: "pos", 1: "neg"}
    assert result.metrics["test_accuracy"] >= 0.9, result.metrics


def test_cached_teacher_logits_are_reused_and_give_the_same_run(tiny_dirs, splits, teacher, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path / "cache"))
    metrics, logs = [], []
    for name in ("first", "second"):
        recipe = _student(tiny_dirs["bert"], splits, tmp_path / name, teacher, cache_teacher_logits=True)
        recipe["training"]["max_steps"] = 6
        code, _stdout, stderr = run_cli("train", str(write_recipe(tmp_path, recipe, f"{name}.yaml")))
        assert code == 0, stderr[-3000:]
        metrics.append(json.loads((tmp_path / name / "metrics.json").read_text()))
        logs.append(stderr)
    assert "cached in" in logs[0] and "read from cache" in logs[1]
    assert len(list((tmp_path / "cache" / "teacher-logits").iterdir())) == 3  # train, validation, test
    assert metrics[0]["eval_loss"] == pytest.approx(metrics[1]["eval_loss"], rel=1e-6)


def test_a_teacher_with_other_labels_is_refused_before_training(tiny_dirs, splits, teacher, tmp_path):
    rows = [{**row, "label": {"neg": "ham", "pos": "spam"}[row["label"]]} for row in sentiment_rows(96, 0)]
    other = write_splits(tmp_path / "other", lambda n, seed: rows[:n])
    code, err = train_fails(tmp_path, _student(tiny_dirs["bert"], other, tmp_path / "run", teacher))
    assert code == 2, err
    assert "distill.teacher:" in err and "predicts the labels ['neg', 'pos']" in err and "['ham', 'spam']" in err


def test_bad_classifier_distillation_recipes_are_one_sentence(tiny_dirs, splits, teacher, tmp_path):
    recipe = _student(tiny_dirs["bert"], splits, tmp_path / "run", teacher)
    recipe["classification"] = {"balance": "class_weights"}
    with pytest.raises(llmkit.RecipeError, match=r"classification\.balance: distillation follows the teacher"):
        Recipe.from_dict(recipe)
    recipe = _student(tiny_dirs["t5"], splits, tmp_path / "run", teacher)
    with pytest.raises(llmkit.RecipeError, match="needs a student of family bert, gpt2, llama, not t5"):
        Recipe.from_dict(recipe)
    recipe = _student(tiny_dirs["bert"], splits, tmp_path / "run", teacher)
    recipe["method"] = {"name": "llama_adapter"}
    with pytest.raises(llmkit.RecipeError, match="llama_adapter"):
        Recipe.from_dict(recipe)
