"""Every method the matrix allows for classification and seq2seq, through the real task runners (the path
`llmkit train` takes): each trains (loss falls), the classifier head trains and is saved with the adapter, and the
finished run reloads to the same logits. That only the method's parameters move is tests/test_methods.py's job."""

from __future__ import annotations

import pytest
import torch
from methods_harness import SMALL
from toy import classification_recipe, copy_rows, sentiment_rows, seq2seq_recipe, write_splits

import llmkit
from llmkit import Recipe
from llmkit.methods import METHODS
from llmkit.models import load_trained
from llmkit.recipe.matrix import supported

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_thread")]

# (family, task) pairs the runners train; each method runs on every pair it declares.
CELLS = [("bert", "classification"), ("gpt2", "classification"), ("t5", "seq2seq")]
CASES = [
    pytest.param(name, family, task, id=f"{name}-{family}-{task}")
    for family, task in CELLS
    for name, cls in METHODS.items()
    if name != "adapter_fusion" and supported(cls, family, task)  # fusion: test_methods_e2e, over two adapter runs
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return {
        "classification": write_splits(root / "sentiment", sentiment_rows, sizes=(32, 8, 8)),
        "seq2seq": write_splits(root / "copy", copy_rows, sizes=(32, 8, 8)),
    }


def _batch(tokenizer, task: str) -> dict:
    texts = ["a great film, loved it", "dull and far too long"]
    batch = dict(tokenizer(texts, return_tensors="pt", padding=True))
    if task == "seq2seq":
        batch["decoder_input_ids"] = torch.zeros((2, 1), dtype=torch.long)  # T5's decoder start token
    return batch


def _logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize(("name", "family", "task"), CASES)
def test_method_trains_through_the_task_runner_and_reloads(name, family, task, tiny_dirs, data, tmp_path):
    make = classification_recipe if task == "classification" else seq2seq_recipe
    recipe = make(tiny_dirs[family], data[task], tmp_path / "run", method={"name": name, **SMALL.get(name, {})})
    recipe["training"].update(max_steps=4, eval_strategy="steps", eval_steps=2, logging_steps=2)
    if task == "seq2seq":
        recipe["generation"] = {"max_new_tokens": 3}
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()

    metrics = result.metrics
    assert metrics["train_steps"] == 4
    key = "eval_accuracy" if task == "classification" else "eval_rouge1"
    assert 0 <= metrics[key] <= 1 and metrics["eval_loss"] == metrics["eval_loss"]  # a real number, not NaN
    trainable, total = metrics["trainable_params"], metrics["total_params"]
    assert 0 < trainable < total or (name == "full" and trainable == total)

    trained = load_trained(result.output_dir)
    batch = _batch(trained.tokenizer, task)
    got, want = _logits(trained.model, batch), _logits(result.model, batch)
    if name == "adalora":  # pruned ranks reload as smaller matrices: the same sums in another order
        assert torch.allclose(got, want, atol=1e-5, rtol=0)
    else:
        assert torch.equal(got, want)
    if task == "classification" and name != "full":
        # the head starts random: an adapter run that did not save it would reload another classifier
        named = result.model.named_parameters()
        head = [n for n, p in named if p.requires_grad and ("score" in n or "classifier" in n)]
        assert head, "the classification head trains alongside the method"
