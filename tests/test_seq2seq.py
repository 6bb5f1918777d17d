"""task: seq2seq on a tiny T5: the source prefix is applied, the loss falls, generation runs and ROUGE is computed at
every evaluation, the run reloads to the same generations, and eval / predict / generate use the same settings."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli, write_recipe
from toy import accumulation_pair, copy_rows, seq2seq_recipe, write_jsonl, write_splits

import llmkit
from llmkit import Recipe
from llmkit.models import load_trained

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return write_splits(tmp_path_factory.mktemp("copy"), copy_rows, sizes=(120, 24, 24))


@pytest.fixture(scope="module")
def trained(tiny_dirs, splits, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    recipe = seq2seq_recipe(tiny_dirs["t5"], splits, root / "t5")
    recipe["training"].update(eval_strategy="steps", eval_steps=30)
    path = write_recipe(root, recipe, "t5.yaml")
    return llmkit.Trainer(Recipe.from_yaml(path)).train(), path


def test_t5_learns_and_rouge_is_computed_at_every_evaluation(trained):
    result, _ = trained
    m = result.metrics
    assert m["eval_loss"] < m["eval_loss_before"] - 1.0, m
    assert m["eval_rouge1"] > m["eval_rouge1_before"] + 0.1, m  # measured: 0.0 → 0.215
    for key in ("eval_rouge1", "eval_rouge2", "eval_rougeL"):
        assert 0.0 <= m[key] <= 1.0
    assert 0 < m["eval_gen_len"] <= 6  # generation.max_new_tokens
    log = [json.loads(line) for line in (result.output_dir / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "eval_rouge1" in e] == [0, 30, 60], "ROUGE before and at each evaluation"


def test_source_prefix_is_applied(trained, tiny_dirs):
    _, path = trained
    from llmkit.data.seq2seq import Encoder
    from llmkit.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer("t5")
    ids = Encoder.for_data(tokenizer, Recipe.from_yaml(path).data).source_ids({"source": "red cat"})
    assert tokenizer.decode(ids) == "summarize: red cat</s>"


def test_reloaded_run_generates_the_same_text(trained):
    result, _ = trained
    reloaded = load_trained(result.output_dir)
    texts = ["summarize: red cat dog house", "summarize: sun moon"]
    batch = reloaded.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(result.model.eval().generate(**batch), reloaded.model.generate(**batch))
    assert reloaded.model.generation_config.max_new_tokens == 6  # the recipe's generation section was saved


def test_eval_predict_and_generate(trained, splits, tmp_path):
    result, _recipe = trained
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    code, stdout, stderr = run_cli("eval", str(result.output_dir), "--output",
                                   str(tmp_path / "e.json"))  # fmt: skip
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["split"] == "validation" and report["eval_rouge1"] == pytest.approx(metrics["eval_rouge1"])

    rows = [json.loads(line) for line in splits["validation"].read_text().splitlines()][:5]
    source = write_jsonl(tmp_path / "in.jsonl", [{"source": r["source"]} for r in rows])
    out = tmp_path / "out.jsonl"
    code, _, stderr = run_cli("predict", str(result.output_dir), "--input", str(source),
                              "--output", str(out))  # fmt: skip
    assert code == 0, stderr
    predicted = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["source"] for p in predicted] == [r["source"] for r in rows]
    assert all(isinstance(p["generation"], str) for p in predicted)

    code, stdout, stderr = run_cli("generate", str(result.output_dir), "--prompt", rows[0]["source"])
    assert code == 0, stderr
    assert stdout.strip() == predicted[0]["generation"], "generate and predict render the prompt the same way"


def test_gradient_accumulation_matches_a_bigger_batch(tiny_dirs, splits, tmp_path):
    """T5 averages its token loss per micro-batch; llmkit's loss divides by the target tokens of the whole
    accumulated batch, so both runs take the same steps."""

    def recipe(out):
        r = seq2seq_recipe(tiny_dirs["t5"], splits, out)
        del r["data"]["validation"]
        r["data"]["validation_split"] = 0
        return r

    big, small = accumulation_pair(recipe, tmp_path)
    a, b = big.model.state_dict(), small.model.state_dict()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_seq2seq_on_a_decoder_is_refused(tiny_dirs, splits, tmp_path):
    path = write_recipe(tmp_path, seq2seq_recipe(tiny_dirs["gpt2"], splits, tmp_path / "run"))
    code, _, stderr = run_cli("train", str(path))
    assert code == 2 and "Traceback" not in stderr
    assert "task: 'seq2seq' cannot run on a gpt2 model (gpt2); it needs one of t5." in stderr
    assert not (tmp_path / "run.incomplete").exists()
