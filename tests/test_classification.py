"""task: classification on tiny BERT, GPT-2 and Llama: learns a separable toy set, reloads to the same outputs,
`llmkit eval` / `llmkit predict` agree with training, and every bad input is one sentence with nothing written."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli, run_cli_fresh, train_fails, write_recipe
from toy import accumulation_pair, classification_recipe, pair_rows, sentiment_rows, write_jsonl, write_splits

import llmkit
from llmkit import Recipe
from llmkit.models import load_trained

pytestmark = pytest.mark.e2e

METHODS = {"bert": "full", "gpt2": "full", "llama": {"name": "lora", "r": 8, "lora_alpha": 16, "lora_dropout": 0.0}}


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return write_splits(tmp_path_factory.mktemp("sentiment"), sentiment_rows)


@pytest.fixture(scope="module")
def trained(tiny_dirs, splits, tmp_path_factory):
    """One classifier per family, trained once for the module: {family: (RunResult, recipe path)}."""
    runs = {}
    root = tmp_path_factory.mktemp("runs")
    for family, method in METHODS.items():
        recipe = classification_recipe(tiny_dirs[family], splits, root / family, method=method)
        if family == "llama":
            recipe["training"]["learning_rate"] = 2e-2
        path = write_recipe(root, recipe, f"{family}.yaml")
        runs[family] = (llmkit.Trainer(Recipe.from_yaml(path)).train(), path)
    return runs


def _batch(tokenizer, texts):
    return tokenizer(texts, return_tensors="pt", padding=True)


@pytest.mark.parametrize("family", list(METHODS))
def test_classifier_learns_the_toy_set_and_reloads_with_the_same_logits(family, trained):
    result, _ = trained[family]
    m = result.metrics
    assert m["eval_loss"] < m["eval_loss_before"] - 0.3, m
    assert m["eval_accuracy"] == 1.0 and m["test_accuracy"] == 1.0, m
    for key in ("eval_f1_macro", "eval_precision_macro", "eval_recall_macro", "eval_mcc", "test_f1_macro"):
        assert m[key] == 1.0, key
    reloaded = load_trained(result.output_dir)
    assert reloaded.model.config.id2label == {0: "neg", 1: "pos"}
    assert reloaded.model.config.label2id == {"neg": 0, "pos": 1}
    batch = _batch(reloaded.tokenizer, ["good happy love", "cruel cold hate bad sad worst"])
    with torch.no_grad():
        assert torch.equal(result.model.eval()(**batch).logits, reloaded.model(**batch).logits)
        assert reloaded.model(**batch).logits.argmax(-1).tolist() == [1, 0]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_decoder_classifier_reads_the_last_real_token_of_padded_rows(family, trained):
    """GPT-2 and Llama pool the last token that is not padding: a row alone and the same row right-padded in a
    batch with a longer one must get the same logits, which holds only if the model's pad id is the tokenizer's."""
    model = load_trained(trained[family][0].output_dir)
    tokenizer = model.tokenizer
    assert model.model.config.pad_token_id == tokenizer.pad_token_id
    short, long = "good nice", "bad sad cruel cold hate worst angry poor"
    with torch.no_grad():
        alone = model.model(**_batch(tokenizer, [short])).logits[0]
        padded = model.model(**_batch(tokenizer, [short, long])).logits[0]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_pad_id_follows_the_tokenizer_when_the_base_config_names_another(tmp_path):
    """A base config whose pad_token_id differs from the tokenizer's would make padded rows pool a pad position."""
    from llmkit import models
    from llmkit.families import resolve_model
    from llmkit.recipe import ModelSection
    from llmkit.testing import save_tiny, tiny_tokenizer

    other_pad = tiny_tokenizer("llama").convert_tokens_to_ids("<pad>")
    directory = save_tiny("llama", tmp_path / "llama", pad_token_id=other_pad)
    section = ModelSection(name=str(directory))
    base = models.resolve_base(section, resolve_model(str(directory)))
    tokenizer = models.load_tokenizer(base)  # no pad token: reuses EOS, as for SmolLM2 and GPT-2
    model = models.load_model(base, "seq_cls", tokenizer, num_labels=2).eval()
    assert model.config.pad_token_id == tokenizer.pad_token_id == tokenizer.eos_token_id
    with torch.no_grad():
        alone = model(**_batch(tokenizer, ["good"])).logits[0]
        padded = model(**_batch(tokenizer, ["good", "a much longer text than that"])).logits[0]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_eval_command_reproduces_the_training_metrics(trained, tmp_path):
    result, _recipe = trained["bert"]
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    out = tmp_path / "val.json"
    code, stdout, stderr = run_cli_fresh("eval", str(result.output_dir),
                                         "--split", "validation", "--output", str(out))  # fmt: skip
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert json.loads(stdout) == report and report["rows"] == 24 and report["split"] == "validation"
    for key in ("eval_accuracy", "eval_f1_macro", "eval_mcc"):
        assert report[key] == metrics[key], key
    assert report["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-5)
    code, _, stderr = run_cli("eval", str(result.output_dir))  # default: the test split
    assert code == 0, stderr
    report = json.loads((result.output_dir / "eval-test.json").read_text())
    assert report["test_accuracy"] == metrics["test_accuracy"]


def test_predict_writes_labels_and_probabilities(trained, tmp_path):
    result, _recipe = trained["gpt2"]
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": "love good nice", "id": 1}, {"text": "hate cruel", "id": 2}])
    out = tmp_path / "out.jsonl"
    code, stdout, stderr = run_cli("predict", str(result.output_dir),
                                   "--input", str(source), "--output", str(out), "--batch-size", "1")  # fmt: skip
    assert code == 0, stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["prediction"]) for r in rows] == [(1, "pos"), (2, "neg")]
    for r in rows:
        assert set(r["probabilities"]) == {"neg", "pos"}
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["probabilities"][r["prediction"]] > 0.5
    assert "2 predictions" in stdout


def test_predict_stops_at_a_bad_row_and_keeps_the_rows_before_it(trained, tmp_path):
    result, _recipe = trained["bert"]
    rows = [{"text": "good"}] * 5 + [{"text": "   "}] + [{"text": "bad"}] * 3
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    code, _, stderr = run_cli("predict", str(result.output_dir),
                              "--input", str(source), "--output", str(out), "--batch-size", "2")  # fmt: skip
    assert code == 3 and "Traceback" not in stderr
    assert f"{source}:6: 'text' is empty; the 5 rows before it are in {out}" in stderr
    assert [json.loads(line)["prediction"] for line in out.read_text().splitlines()] == ["pos"] * 5


def test_predict_refuses_to_overwrite_and_writes_nothing_for_a_bad_first_row(trained, tmp_path):
    result, _recipe = trained["bert"]
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": "good"}])
    code, _, stderr = run_cli("predict", str(result.output_dir),
                              "--input", str(source), "--output", str(out))  # fmt: skip
    assert code != 0 and "already exists" in stderr and out.read_text() == "old\n"
    source = write_jsonl(tmp_path / "bad.jsonl", [{"txt": "good"}])
    code, _, stderr = run_cli("predict", str(result.output_dir),
                              "--input", str(source), "--output", str(tmp_path / "new.jsonl"))  # fmt: skip
    assert code == 3 and "bad.jsonl:1: row has no 'text' field" in stderr
    assert not (tmp_path / "new.jsonl").exists()


def test_sentence_pairs_with_mapped_columns_and_a_run_that_needs_only_itself(tiny_dirs, tmp_path, monkeypatch):
    """Trained from relative data paths; then, from another directory and with the training data gone, eval reads
    the test split from where the run was trained and predict needs only the run. A predict input that lacks a
    mapped column is told the user's column name, not the format's field."""
    splits = write_splits(tmp_path / "pairs", pair_rows)
    relative = {split: path.relative_to(tmp_path) for split, path in splits.items()}  # the cwd is tmp_path
    recipe = classification_recipe(tiny_dirs["bert"], relative, tmp_path / "run", method="full")
    columns = {"text": "question", "text_pair": "answer", "label": "verdict"}
    recipe["data"].update(format="sentence-pair", columns=columns)
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    assert result.metrics["eval_accuracy"] == 1.0 and result.metrics["test_accuracy"] == 1.0, result.metrics

    splits["train"].rename(tmp_path / "moved.jsonl")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, stdout, stderr = run_cli("eval", str(result.output_dir), "--output", "e.json")
    assert code == 0, stderr
    assert json.loads(stdout)["test_accuracy"] == 1.0 and json.loads(stdout)["data"] == str(splits["test"])
    source = write_jsonl(elsewhere / "in.jsonl", [{"question": "red cat", "answer": "good happy"}])
    code, _, stderr = run_cli("predict", str(result.output_dir), "--input", str(source), "--output", "p.jsonl")
    assert code == 0, stderr
    assert json.loads((elsewhere / "p.jsonl").read_text())["prediction"] == "pos"

    source = write_jsonl(elsewhere / "bad.jsonl", [{"question": "red cat", "reply": "good"}])
    code, _, stderr = run_cli("predict", str(result.output_dir), "--input", str(source), "--output", "q.jsonl")
    assert code == 3 and "Traceback" not in stderr
    assert f"{source}:1: row has no 'answer' field (or it is null) (data.columns maps it to text_pair)" in stderr
    code, _, stderr = run_cli("eval", str(result.output_dir), "--split", "validation", "data.validation=gone.jsonl")
    assert code == 1 and "data.validation: file 'gone.jsonl' does not exist" in stderr


def test_eval_and_predict_say_the_run_comes_first(trained):
    result, recipe = trained["bert"]
    code, _, stderr = run_cli("eval", str(recipe), "--checkpoint", str(result.output_dir))
    assert code == 1 and f"llmkit eval takes the run directory first: llmkit eval {result.output_dir} ..." in stderr


def test_class_weights_on_imbalanced_data(tiny_dirs, tmp_path, capfd):
    rows = sentiment_rows(120, 0)
    train = [r for i, r in enumerate(rows) if r["label"] == "pos" or i % 6 == 1]  # 60 pos, 20 neg
    splits = write_splits(tmp_path / "d", sentiment_rows)
    splits["train"] = write_jsonl(tmp_path / "imbalanced.jsonl", train)
    recipe = classification_recipe(tiny_dirs["gpt2"], splits, tmp_path / "run", method="full")
    recipe["classification"] = {"balance": "class_weights"}
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    err = capfd.readouterr().err
    assert "training examples per label: neg 20, pos 60" in err
    assert "class weights: neg 2, pos 0.667" in err  # n / (classes × count of the class)
    assert result.metrics["eval_recall_macro"] == 1.0, result.metrics


def test_gradient_accumulation_matches_a_bigger_batch(tiny_dirs, splits, tmp_path):
    """Pins llmkit.losses: transformers' classifier heads average per micro-batch while Trainer assumes otherwise,
    which makes accumulation 4 step 4× too far."""
    big, small = accumulation_pair(lambda out: classification_recipe(tiny_dirs["bert"], splits, out), tmp_path)
    a, b = big.model.state_dict(), small.model.state_dict()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    assert big.metrics["train_loss"] == pytest.approx(small.metrics["train_loss"], rel=1e-5)


EXACT_METRIC = """
import datasets
import evaluate


class Exact(evaluate.Metric):
    def _info(self):
        features = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})
        return evaluate.MetricInfo(description="share of exact matches", citation="", features=features)

    def _compute(self, predictions, references):
        return {"exact": sum(p == r for p, r in zip(predictions, references)) / len(predictions), "note": "text"}
"""


def test_extra_evaluate_metrics_from_a_local_script_and_offline_hub_names(trained, tmp_path):
    result, _recipe = trained["bert"]
    script = tmp_path / "exact" / "exact.py"
    script.parent.mkdir()
    script.write_text(EXACT_METRIC)
    code, stdout, stderr = run_cli("eval", str(result.output_dir), "--output",
                                   str(tmp_path / "e.json"), f"evaluation.extra_metrics=[{script}]")  # fmt: skip
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["test_exact"] == report["test_accuracy"] == 1.0 and "test_exact_note" not in report
    code, _, stderr = run_cli("eval", str(result.output_dir), "--output",
                              str(tmp_path / "f.json"), "evaluation.extra_metrics=[accuracy]")  # fmt: skip
    assert code == 2 and "Traceback" not in stderr and not (tmp_path / "f.json").exists()
    assert "evaluation.extra_metrics: cannot load 'accuracy' with evaluate (" in stderr and "HF_HUB_OFFLINE" in stderr


# ---------------------------------------------------------------- bad input: one sentence, non-zero, nothing written


def _bad(tmp_path, recipe, *overrides):
    """The one-line error of a refused run (which wrote nothing, with no traceback)."""
    return train_fails(tmp_path, recipe, *overrides)[1].strip().splitlines()[-1]


def test_label_column_missing(tiny_dirs, splits, tmp_path):
    data = tmp_path / "sms.tsv"
    data.write_text("Label\tSMS\nham\thello there\nspam\tWIN a prize now\n")
    recipe = classification_recipe(tiny_dirs["bert"], splits, tmp_path / "run")
    recipe["data"] = {"train": str(data), "format": "classification", "columns": {"text": "SMS"}}
    err = _bad(tmp_path, recipe)
    assert err == (
        f"error: {data}: has no 'label' column, which format 'classification' needs (text, label); its columns are "
        "Label, text; map yours with data.columns, e.g. columns: {label: <your column>}"
    )


def test_validation_label_unseen_in_training(tiny_dirs, splits, tmp_path):
    rows = [{"text": "good", "label": "pos"}, {"text": "meh", "label": "neutral"}]
    validation = write_jsonl(tmp_path / "val.jsonl", rows)
    recipe = classification_recipe(tiny_dirs["bert"], {**splits, "validation": validation}, tmp_path / "run")
    err = _bad(tmp_path, recipe)
    assert err == (
        f"error: {validation}:2: label 'neutral' never appears in the training data, so the classifier cannot "
        "predict it (neg, pos)"
    )


def test_num_labels_inconsistent_with_the_data(tiny_dirs, splits, tmp_path):
    recipe = classification_recipe(tiny_dirs["bert"], splits, tmp_path / "run", classification={"num_labels": 3})
    err = _bad(tmp_path, recipe)
    assert "classification.num_labels is 3 but the training data has 2 labels (neg, pos); set num_labels: 2" in err


def test_empty_text(tiny_dirs, splits, tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [*sentiment_rows(10, 0), {"text": " ", "label": "pos"}])
    err = _bad(tmp_path, classification_recipe(tiny_dirs["bert"], {**splits, "train": train}, tmp_path / "run"))
    assert f"{train}:11: 'text' is empty" in err


def test_sentence_pair_recipe_with_a_column_missing(tiny_dirs, tmp_path):
    splits = write_splits(tmp_path / "pairs", pair_rows)
    recipe = classification_recipe(tiny_dirs["bert"], splits, tmp_path / "run")
    columns = {"text": "question", "text_pair": "reply", "label": "verdict"}
    recipe["data"].update(format="sentence-pair", columns=columns)
    err = _bad(tmp_path, recipe)
    assert err == (
        f"error: {splits['train']}: has no column 'reply' (data.columns maps to it); its columns are question, "
        "answer, verdict"
    )


def test_a_family_that_cannot_classify(tiny_dirs, splits, tmp_path):
    err = _bad(tmp_path, classification_recipe(tiny_dirs["t5"], splits, tmp_path / "run"))
    assert "task: 'classification' cannot run on a t5 model (t5); it needs one of bert, gpt2, llama." in err
