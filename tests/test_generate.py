"""Generation from sft runs: the prompt is exactly what training masked before the response (same template), and
`llmkit generate` / `llmkit predict` / `llmkit eval` work on a finished GPT-2 run."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, sft_recipe, write_recipe
from toy import write_jsonl

import llmkit
from llmkit import Recipe
from llmkit.data.sft import build_examples, prompt_ids
from llmkit.data.tokens import IGNORE_INDEX as IGNORE
from llmkit.data.tokens import LengthPolicy
from llmkit.testing import tiny_tokenizer

ROWS = [
    {"instruction": "Name a colour.", "input": "", "output": "Blue."},
    {"instruction": "Translate to French.", "input": "cat", "output": "chat"},
]


CASES = [
    ("gpt2", "alpaca", "alpaca"),
    ("llama", "alpaca", "chat"),
    ("llama", "chat", "auto"),
    ("gpt2", "alpaca", "chat"),  # GPT-2 has no chat template: ChatML, as in training
]


def _chat(row: dict) -> dict:
    user, assistant = {"role": "user", "content": row["instruction"]}, {"role": "assistant", "content": row["output"]}
    return {"messages": [user, assistant]}


@pytest.mark.parametrize(("family", "fmt", "template"), CASES)
def test_generation_prompt_is_the_masked_prefix_of_training(family, fmt, template):
    tokenizer = tiny_tokenizer(family)
    rows = [_chat(r) for r in ROWS] if fmt == "chat" else ROWS
    options = dict(fmt=fmt, tokenizer=tokenizer, template=template, system_prompt="Be brief.")
    examples, _, _ = build_examples(rows, ["r1", "r2"], policy=LengthPolicy(256, "error"), stop_ids=set(), **options)
    prompts = [dict(r) for r in rows]
    if fmt == "chat":
        prompts = [{"messages": r["messages"][:1]} for r in rows]
    for example, ids in zip(examples, prompt_ids(prompts, **options), strict=True):
        n_prompt = next(i for i, label in enumerate(example["labels"]) if label != IGNORE)
        assert ids == example["input_ids"][:n_prompt].tolist()


@pytest.mark.e2e
def test_generate_predict_and_eval_on_a_gpt2_sft_run(tiny_dirs, instructions_small, tmp_path):
    recipe = sft_recipe(tiny_dirs["gpt2"], instructions_small, tmp_path / "run", method="full")
    recipe["data"]["template"] = "alpaca"
    recipe["generation"] = {"max_new_tokens": 5}
    recipe["training"].update(max_steps=5, save_strategy="steps", save_steps=5)
    path = write_recipe(tmp_path, recipe)
    result = llmkit.Trainer(Recipe.from_yaml(path)).train()

    code, stdout, stderr = run_cli("generate", str(result.output_dir), "--prompt", "Name a colour.", "--prompt", "Hi")
    assert code == 0, stderr
    assert stdout.startswith("### Name a colour.\n") and "### Hi\n" in stdout

    prompts = [{"instruction": "Name a colour."}, {"instruction": "Hi", "input": "x"}]
    source = write_jsonl(tmp_path / "in.jsonl", prompts)
    out = tmp_path / "out.jsonl"
    code, _, stderr = run_cli("predict", str(result.output_dir), "--input", str(source),
                              "--output", str(out))  # fmt: skip
    assert code == 0, stderr
    generations = [json.loads(line)["generation"] for line in out.read_text().splitlines()]
    code, stdout, _ = run_cli("generate", str(result.output_dir), "--prompt", "Name a colour.")
    assert stdout.strip() == generations[0]

    code, stdout, stderr = run_cli("eval", str(result.output_dir), "--output",
                                   str(tmp_path / "e.json"))  # fmt: skip
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["eval_loss"] == pytest.approx(result.metrics["eval_loss"], rel=1e-5)
    assert report["eval_perplexity"] == pytest.approx(2.718281828 ** report["eval_loss"], rel=1e-6)
    checkpoint = result.output_dir / "checkpoints" / "checkpoint-5"  # the last step: the same weights
    code, stdout, stderr = run_cli("eval", str(checkpoint))
    assert code == 0, stderr
    assert json.loads(stdout)["eval_loss"] == pytest.approx(report["eval_loss"], rel=1e-5)
    assert (checkpoint / "eval-validation.json").is_file()


def test_generate_refuses_a_classification_run_and_a_bad_directory(tmp_path):
    code, _, stderr = run_cli("generate", str(tmp_path), "--prompt", "x")
    assert code != 0 and "has no recipe.yaml" in stderr and "Traceback" not in stderr
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "x"}])
    recipe = {"task": "classification", "model": {"name": "gone/model"}, "data": {"train": str(data),
              "format": "classification"}, "output_dir": "run"}  # fmt: skip
    write_recipe(tmp_path, recipe)
    data.unlink()  # a finished run's data need not be there any more
    code, _, stderr = run_cli("generate", str(tmp_path), "--prompt", "x")
    assert code != 0 and "is a classification run, which does not generate text; use llmkit predict" in stderr
