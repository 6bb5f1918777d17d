"""Rationale distillation: step 1 (`llmkit rationales`, resumable, written as it goes) and step 2 (a student trained
on label + rationale with a weight between the losses)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SHARED_DATA, run_cli, write_recipe

import llmkit
from llmkit import Recipe
from llmkit.cli import build_parser
from llmkit.data.collate import Collator
from llmkit.distill import generate
from llmkit.distill.generate import check_prompt, parse
from llmkit.distill.trainer import TwoTasks
from llmkit.errors import LlmkitError
from llmkit.tasks.distill_rationale import TwoTaskCollator
from llmkit.testing import tiny_model

SPAM = SHARED_DATA / "sms-spam-collection.tsv"


@pytest.mark.parametrize(
    ("text", "rationale", "answer"),
    [
        ("It offers a prize.\nAnswer: spam.", "It offers a prize.", "spam"),
        ("Friends chatting.\n\nFinal answer: ham", "Friends chatting.", "ham"),
        ("Answer: maybe\nIt sells something.\nAnswer: spam", "Answer: maybe\nIt sells something.", "spam"),
        ("No verdict here.", "No verdict here.", None),
    ],
)  # fmt: skip
def test_the_last_answer_line_splits_rationale_from_answer(text, rationale, answer):
    assert parse(text) == (rationale, answer)


def test_prompt_placeholders_are_checked():
    check_prompt("Q: {input}", has_label=False)
    check_prompt("Why is '{input}' {label}?", has_label=True)
    with pytest.raises(LlmkitError, match=r"placeholders \{input\} \(required\)"):
        check_prompt("Q: {text}", has_label=False)
    with pytest.raises(LlmkitError, match="give --label-column"):
        check_prompt("{input} is {label}", has_label=False)


@pytest.fixture
def sms(tmp_path):
    """12 real SMS messages with their ham / spam label (TSV, as in the UCI file)."""
    if not SPAM.is_file():
        pytest.skip("../shared/data/sms-spam-collection.tsv is not here")
    lines = SPAM.read_text().splitlines()
    path = tmp_path / "sms.tsv"
    path.write_text("\n".join(lines[:13]) + "\n")
    return path


def _rationales(tiny_dirs, data, out, *extra):
    return run_cli(
        "rationales", "--teacher", str(tiny_dirs["llama"]), "--data", str(data), "--output", str(out),
        "--input-column", "SMS", "--max-new-tokens", "8", "--batch-size", "4", *extra,
    )  # fmt: skip


@pytest.mark.e2e
def test_rationales_are_written_as_they_come_and_an_interrupted_run_resumes(tiny_dirs, sms, tmp_path, monkeypatch):
    out = tmp_path / "rationales.jsonl"
    real = generate.generate
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "generate", interrupted)
    code, _, _ = _rationales(tiny_dirs, sms, out, "--label-column", "Label")
    assert code == 130
    first = out.read_text()
    assert len(first.splitlines()) == 4, "the first batch is on disk although the run was interrupted"
    with out.open("a") as handle:
        handle.write('{"input": "half a rec')  # a write cut off mid-line
    monkeypatch.setattr(generate, "generate", real)
    code, stdout, stderr = _rationales(tiny_dirs, sms, out, "--label-column", "Label")
    assert code == 0, stderr
    assert "8 rationales written" in stdout and "4 already done" in stdout
    text = out.read_text()
    assert text.startswith(first), "records already written are kept as they were"
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["source"] for r in records] == [f"{sms}:{i}" for i in range(2, 14)], "each input once, in order"
    labels = [line.split("\t")[0] for line in sms.read_text().splitlines()[1:]]
    assert [r["label"] for r in records] == labels, "the gold label is the label"
    assert all(r["rationale"] and r["input"] for r in records)
    code, stdout, _ = _rationales(tiny_dirs, sms, out, "--label-column", "Label")
    assert code == 0 and out.read_text() == text, "a finished output is left alone"


@pytest.mark.e2e
@pytest.mark.parametrize("family", ["t5", "gpt2"])
def test_encoder_decoder_and_template_free_teachers_write_rationales(family, tiny_dirs, sms, tmp_path):
    out = tmp_path / "r.jsonl"
    code, stdout, stderr = run_cli(
        "rationales", "--teacher", str(tiny_dirs[family]), "--data", str(sms), "--output", str(out),
        "--input-column", "SMS", "--label-column", "Label", "--max-new-tokens", "6", "--limit", "5",
    )  # fmt: skip
    assert code == 0, stderr
    assert "5 rationales written" in stdout
    assert len(out.read_text().splitlines()) == 5


@pytest.mark.e2e
def test_inputs_without_an_answer_go_to_the_rejected_file(tiny_dirs, sms, tmp_path):
    out = tmp_path / "r.jsonl"
    code, stdout, stderr = _rationales(tiny_dirs, sms, out, "--limit", "3")
    assert code == 0, stderr
    assert "0 rationales written" in stdout and "3 inputs without a usable answer" in stdout
    rejected = [json.loads(line) for line in (tmp_path / "r.rejected.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejected] == ["no 'Answer:' line"] * 3
    assert out.read_text() == ""


def test_bad_rationale_inputs_are_one_sentence(tiny_dirs, sms, tmp_path):
    code, _, stderr = run_cli(
        "rationales", "--teacher", str(tiny_dirs["llama"]), "--data", str(sms), "--output", "o.jsonl",
        "--input-column", "Text",
    )  # fmt: skip
    assert code == 3 and "has no column 'Text'; its columns are Label, SMS" in stderr and "Traceback" not in stderr
    code, _, stderr = run_cli(
        "rationales", "--teacher", str(tmp_path / "none"), "--data", str(sms), "--output", "o.jsonl",
        "--input-column", "SMS",
    )  # fmt: skip
    assert code == 2 and "distill.teacher:" in stderr and "does not exist" in stderr
    for content in ('{"input": "hi", "label": "ham", "rationale": "r"}\n', "not json\n{}\n"):  # not step-1 output
        (tmp_path / "other.jsonl").write_text(content)
        code, _, stderr = _rationales(tiny_dirs, sms, tmp_path / "other.jsonl")
        assert code == 3 and "Traceback" not in stderr, stderr
        assert "other.jsonl:1: is not a record of `llmkit rationales` (JSON with a 'source')" in stderr
    with pytest.raises(SystemExit):  # argparse: a count below 1 is refused before anything loads
        build_parser().parse_args(["rationales", "--teacher", "t", "--data", "d", "--output", "o", "--batch-size", "0"])


# ---------------------------------------------------------------- step 2: the student


def test_two_task_loss_is_label_loss_plus_weighted_rationale_loss():
    model = tiny_model("llama", seed=4)
    examples = [
        {"input_ids": [1, 5, 6, 7, 8], "labels": [-100, -100, 6, 7, 8]},  # label task
        {"input_ids": [1, 5, 9, 10, 11, 12], "labels": [-100, -100, -100, 10, 11, 12]},  # rationale task
    ]
    items = [{"label": examples[0], "rationale": examples[1]}]
    batch = TwoTaskCollator(Collator(0))(items)
    assert batch["task"].tolist() == [0, 1]
    loss, _, parts = TwoTasks(weight=0.3, causal=True)(model, dict(batch), None)

    def mean_ce(example):
        ids = torch.tensor([example["input_ids"]])
        return model(input_ids=ids, labels=torch.tensor([example["labels"]])).loss

    expected = mean_ce(examples[0]) + 0.3 * mean_ce(examples[1])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    total, counts = parts["label_loss"]  # a sum over the label task's 3 target tokens, and that count per input
    assert counts.tolist() == [3] and parts["rationale_loss"][1].tolist() == [3]
    assert (total / counts.sum()).item() == pytest.approx(mean_ce(examples[0]).item(), rel=1e-5)


def rationale_recipe(model_dir, data, output_dir) -> dict:
    return {
        "task": "distill",
        "model": {"name": str(model_dir)},
        "data": {"train": str(data), "format": "rationale", "max_length": 96, "validation_split": 0.25},
        "method": "full",
        "distill": {"rationale_weight": 0.5},
        "training": {
            "max_steps": 16,
            "per_device_train_batch_size": 8,
            "learning_rate": 5e-3,
            "save_strategy": "no",
            "logging_steps": 10,
            "seed": 0,
        },
        "output_dir": str(output_dir),
    }


@pytest.fixture
def rationale_rows(tmp_path):
    """Step-1 output for 64 real SMS: gold labels, with a short rationale per class."""
    if not SPAM.is_file():
        pytest.skip("../shared/data/sms-spam-collection.tsv is not here")
    why = {"spam": "It offers a prize or asks you to call a number.", "ham": "It is a personal note to a friend."}
    rows = []
    for i, line in enumerate(SPAM.read_text().splitlines()[1:65]):
        label, text = line.split("\t", 1)
        rows.append({"input": text[:120], "label": label, "rationale": why[label], "source": f"sms:{i}"})
    path = tmp_path / "rationales.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.e2e
def test_a_decoder_student_learns_label_and_rationale(tiny_dirs, rationale_rows, tmp_path):
    out = tmp_path / "run"
    path = write_recipe(tmp_path, rationale_recipe(tiny_dirs["llama"], rationale_rows, out))
    code, _stdout, stderr = run_cli("train", str(path))
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_label_loss"] < metrics["eval_label_loss_before"] - 1
    assert metrics["eval_rationale_loss"] < metrics["eval_rationale_loss_before"] - 1
    combined = metrics["eval_label_loss"] + 0.5 * metrics["eval_rationale_loss"]
    assert metrics["eval_loss"] == pytest.approx(combined, rel=1e-4)
    assert metrics["label_accuracy"] > metrics["label_accuracy_before"]
    info = json.loads((out / "llmkit.json").read_text())
    assert info["head"] == "causal_lm" and info["label_prefix"] == "[label] "
    code, stdout, stderr = run_cli("inspect-data", str(path))
    assert code == 0, stderr
    assert "== label ==" in stdout and "== rationale ==" in stdout
    assert "[label] " in stdout and "⟦ham" in stdout and "⟦It is a personal note" in stdout


@pytest.mark.e2e
def test_a_t5_student_learns_label_and_rationale(tiny_dirs, rationale_rows, tmp_path):
    """The paper's setting: an encoder-decoder answers "[label] …" and "[rationale] …" with its decoder."""
    out = tmp_path / "run"
    recipe = rationale_recipe(tiny_dirs["t5"], rationale_rows, out)
    recipe["data"]["max_target_length"] = 24
    recipe["training"]["learning_rate"] = 1e-2
    code, _stdout, stderr = run_cli("train", str(write_recipe(tmp_path, recipe)))
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_label_loss"] < metrics["eval_label_loss_before"] - 1
    assert metrics["eval_rationale_loss"] < metrics["eval_rationale_loss_before"] - 1
    assert json.loads((out / "llmkit.json").read_text())["head"] == "seq2seq_lm"
    assert 0 <= metrics["label_accuracy"] <= 1


def test_rationale_recipes_refuse_a_teacher_and_an_encoder_student(tiny_dirs, rationale_rows, tmp_path):
    recipe = rationale_recipe(tiny_dirs["llama"], rationale_rows, tmp_path / "run")
    recipe["distill"]["teacher"] = str(tiny_dirs["llama"])
    with pytest.raises(llmkit.RecipeError, match=r"distill\.teacher: with data\.format rationale the student learns"):
        Recipe.from_dict(recipe)
    recipe = rationale_recipe(tiny_dirs["bert"], rationale_rows, tmp_path / "run")
    with pytest.raises(llmkit.RecipeError, match="needs a student of family t5, gpt2, llama, not bert"):
        Recipe.from_dict(recipe)
