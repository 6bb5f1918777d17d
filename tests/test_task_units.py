"""The pieces under classification and seq2seq, unit by unit: metrics, the accumulated-batch loss, label ids,
pair encoding, oversampling, streaming rows, and the recipe sections each task reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import INSTRUCTIONS

from llmkit import DataError, Recipe, RecipeError
from llmkit.data.classification import PAIR_SEPARATOR, Encoder, label_names, oversample
from llmkit.data.sources import Rows, iter_rows, read_source
from llmkit.data.tokens import LengthPolicy, TokenStats
from llmkit.losses import summed_cross_entropy
from llmkit.metrics import classification_scores, rouge_scores
from llmkit.recipe import ClassificationSection
from llmkit.testing import tiny_tokenizer


def test_classification_scores_by_hand():
    # truth 0 0 1 1, predicted 0 1 1 1: class 0 P=1 R=.5, class 1 P=2/3 R=1; TP=2 TN=1 FP=1 FN=0
    scores = classification_scores([0, 1, 1, 1], [0, 0, 1, 1])
    assert scores["accuracy"] == 0.75
    assert scores["precision_macro"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["recall_macro"] == pytest.approx(0.75)
    assert scores["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert scores["mcc"] == pytest.approx(2 / 12**0.5)


def test_rouge_scores_by_hand():
    assert rouge_scores(["the cat sat"], ["the cat sat"]) == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert rouge_scores(["a dog"], ["the cat"])["rouge1"] == 0.0
    scores = rouge_scores(["the cat sat"], ["the cat"])  # P = 2/3, R = 1
    assert scores["rouge1"] == pytest.approx(0.8) and scores["rouge2"] == pytest.approx(2 * 0.5 / 1.5)
    assert rouge_scores(["cats running"], ["cat runs"])["rouge1"] == 1.0, "stemmed, as the original ROUGE"


def test_summed_cross_entropy_is_a_mean_over_the_accumulated_batch():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 2, 1, 1, -100, 0])
    full = torch.nn.functional.cross_entropy(logits, labels)
    halves = summed_cross_entropy(logits[:3], labels[:3], 5) + summed_cross_entropy(logits[3:], labels[3:], 5)
    assert halves == pytest.approx(full.item())  # two micro-batches sum to the big batch's mean
    assert summed_cross_entropy(logits, labels) == pytest.approx(full.item())
    weight = torch.tensor([2.0, 0.5, 1.0])
    per_item = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    expected = sum(weight[y] * per_item[i] for i, y in enumerate(labels.tolist()) if y != -100) / 5
    assert summed_cross_entropy(logits, labels, weight=weight) == pytest.approx(expected.item())
    smoothed = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    assert summed_cross_entropy(logits, labels, label_smoothing=0.1) == pytest.approx(smoothed.item())


def _rows(labels: list, name: str = "d.jsonl") -> Rows:
    rows = [{"text": f"t{i}", "label": label} for i, label in enumerate(labels)]
    return Rows(rows, [f"{name}:{i + 1}" for i in range(len(rows))], name, "x")


def test_label_names_order_and_checks():
    assert label_names(_rows([10, 2, 1, 2]), ClassificationSection()) == ["1", "2", "10"]  # numeric order
    assert label_names(_rows(["spam", "ham"]), ClassificationSection()) == ["ham", "spam"]
    assert label_names(_rows(["ham", "spam"]), ClassificationSection(labels=["spam", "ham"])) == ["spam", "ham"]
    with pytest.raises(DataError, match=r"d.jsonl:3: label 'eggs' is not in classification.labels \(ham, spam\)"):
        label_names(_rows(["ham", "spam", "eggs"]), ClassificationSection(labels=["ham", "spam"]))
    with pytest.raises(RecipeError, match=r"classification\.labels lists 'eggs', which never appears"):
        label_names(_rows(["ham", "spam"]), ClassificationSection(labels=["ham", "spam", "eggs"]))
    with pytest.raises(DataError, match="has only the label 'ham'; a classifier needs at least two"):
        label_names(_rows(["ham", "ham"]), ClassificationSection())


def test_pair_encoding_encoder_and_decoder():
    row = {"text": "Name a colour.", "text_pair": "Blue is a colour."}
    bert = Encoder(tiny_tokenizer("bert"), pair=True, policy=LengthPolicy(64, "error"))
    example = bert.encode(row, "r1", TokenStats())
    assert bert.tokenizer.decode(example["input_ids"]).startswith("[CLS]")
    assert 1 in example["token_type_ids"] and example["token_type_ids"][0] == 0  # segment ids mark the second text
    gpt2 = Encoder(tiny_tokenizer("gpt2"), pair=True, policy=LengthPolicy(64, "error"))
    decoded = gpt2.tokenizer.decode(gpt2.encode(row, "r1", TokenStats())["input_ids"])
    assert decoded == row["text"] + PAIR_SEPARATOR + row["text_pair"]


def test_overlong_rows_truncate_drop_or_fail():
    row = {"text": "word " * 40, "text_pair": "other " * 10}
    stats = TokenStats()
    truncated = Encoder(tiny_tokenizer("bert"), pair=True, policy=LengthPolicy(16, "truncate")).encode(row, "r", stats)
    assert len(truncated["input_ids"]) == 16 and 1 in truncated["token_type_ids"], "longest first keeps both texts"
    assert Encoder(tiny_tokenizer("gpt2"), pair=False, policy=LengthPolicy(8, "drop")).encode(row, "r", stats) is None
    assert (stats.truncated, stats.dropped_overlong) == (1, 1)
    with pytest.raises(DataError, match=r"f\.tsv:9: is \d+ tokens, longer than data\.max_length=8"):
        Encoder(tiny_tokenizer("gpt2"), pair=False, policy=LengthPolicy(8, "error")).encode(row, "f.tsv:9", stats)


def test_oversample_balances_and_keeps_every_example():
    examples = [{"labels": 0, "i": i} for i in range(10)] + [{"labels": 1, "i": i} for i in range(10, 13)]
    out, where = oversample(examples, [f"r{e['i']}" for e in examples], seed=0)
    assert sum(e["labels"] == 0 for e in out) == sum(e["labels"] == 1 for e in out) == 10
    assert {e["i"] for e in out} == set(range(13))
    assert oversample(examples, [str(i) for i in range(13)], seed=0)[0] == out, "seeded"
    assert len(where) == len(out)


@pytest.mark.parametrize("ext", ["jsonl", "csv", "tsv", "txt", "json"])
def test_streamed_rows_equal_the_whole_file_read(tmp_path, ext):
    rows = [{"text": "a b"}, {"text": "c"}, {"text": "d e f"}]  # one column, so csv and tsv read the same
    path = tmp_path / f"x.{ext}"
    if ext in ("jsonl", "json"):
        path.write_text("".join(json.dumps(r) + "\n\n" for r in rows))
    elif ext == "txt":
        path.write_text("a b\n\nc\nd e f\n")
    else:
        path.write_text("text\n" + "".join(f"{r['text']}\n" for r in rows))
    whole = read_source(str(path))
    assert list(iter_rows(path)) == list(zip(whole.rows, whole.where, strict=True))


def test_streamed_rows_report_bad_bytes_by_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"x.jsonl:2: is not valid UTF-8"):
        list(iter_rows(path))


# ---------------------------------------------------------------- recipe sections


def _recipe(tmp_path: Path, model_type: str = "bert", **extra) -> dict:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"model_type": model_type}))
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n')
    recipe = {"task": "classification", "model": {"name": str(model)}, "data": {"train": str(data),
              "format": "classification"}, "output_dir": "out"}  # fmt: skip
    recipe.update(extra)
    return recipe


def _error(tmp_path: Path, recipe: dict) -> str:
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    with pytest.raises(RecipeError) as info:
        Recipe.from_yaml(path)
    return str(info.value)


def test_task_sections_are_filled_for_their_task_only(tmp_path):
    recipe = Recipe.from_dict(_recipe(tmp_path))
    assert recipe.classification.balance == "none" and recipe.evaluation.extra_metrics == []
    assert recipe.generation is None
    assert "classification:" in recipe.to_yaml() and "generation:" not in recipe.to_yaml()
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(recipe.to_yaml())
    assert Recipe.from_yaml(resolved) == recipe


def test_a_section_of_another_task_names_its_line(tmp_path):
    message = _error(tmp_path, _recipe(tmp_path, generation={"max_new_tokens": 5}))
    expected = (
        "r.yaml:8: generation: this section applies to task sft, seq2seq, grpo or rloo, not 'classification'; remove it"
    )
    assert expected in message
    recipe = _recipe(tmp_path, model_type="llama", task="sft", classification={"balance": "oversample"})
    recipe["data"] = {"train": str(INSTRUCTIONS)}
    assert "classification: this section applies to task classification or distill, not 'sft'" in _error(
        tmp_path, recipe
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"classification": {"labels": ["a", "b"], "num_labels": 3}}, "num_labels is 3 but labels lists 2 names"),
        ({"classification": {"labels": ["a", "a"]}}, "labels lists 'a' more than once"),
        ({"classification": {"balance": "smote"}}, "classification.balance: Input should be 'none'"),
        ({"data": {"format": "classification", "packing": True}}, "packing applies to text-generation formats"),
        ({"data": {"format": "classification", "source_prefix": "x"}}, "source_prefix applies to format seq2seq"),
        ({"data": {"format": "alpaca"}}, "data.format 'alpaca' does not fit task 'classification'; use one of"),
        ({"training": {"predict_with_generate": True}}, "task seq2seq always generates when it evaluates"),
    ],
)
def test_bad_task_settings_are_one_sentence(tmp_path, section, message):
    recipe = _recipe(tmp_path)
    for key, value in section.items():
        recipe[key] = {**recipe.get(key, {}), **value} if key == "data" else value
    assert message in _error(tmp_path, recipe)


def test_generation_settings_are_checked(tmp_path):
    recipe = _recipe(tmp_path, model_type="t5", task="seq2seq", generation={"temperature": 0.7})
    recipe["data"]["format"] = "seq2seq"
    assert "generation: temperature only applies when sampling; set do_sample: true" in _error(tmp_path, recipe)


def test_validate_a_classification_recipe_without_torch(tmp_path):
    import subprocess
    import sys

    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(tmp_path, classification={"balance": "class_weights"})))
    code = (
        "import sys; from llmkit.cli import main; rc = main(['validate', sys.argv[1]]); "
        "assert 'torch' not in sys.modules, 'validate imported torch'; sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_inspect_data_shows_a_label_or_a_target(tiny_dirs, tmp_path):
    from conftest import run_cli, write_recipe

    data = tmp_path / "toy.jsonl"
    data.write_text('{"text": "good day", "label": "pos"}\n{"text": "bad day", "label": "neg"}\n')
    recipe = _recipe(tmp_path, model={"name": str(tiny_dirs["bert"])})
    recipe["data"] = {"train": str(data), "format": "classification", "validation_split": 0}
    code, stdout, stderr = run_cli("inspect-data", str(write_recipe(tmp_path, recipe)), "--index", "1")
    assert code == 0, stderr
    assert "[CLS]bad day[SEP]" in stdout and "labels: 0" in stdout  # neg sorts first: id 0
    data.write_text('{"source": "a long text", "target": "short"}\n')
    recipe = _recipe(tmp_path, task="seq2seq", model={"name": str(tiny_dirs["t5"])})
    recipe["data"] = {"train": str(data), "format": "seq2seq", "source_prefix": "summarize: ", "validation_split": 0}
    code, stdout, stderr = run_cli("inspect-data", str(write_recipe(tmp_path, recipe)))
    assert code == 0, stderr
    assert "summarize: a long text</s>" in stdout and "target (5 tokens):\nshort</s>" in stdout
