"""`llmkit benchmark`: lm-evaluation-harness on a run (adapter unmerged) and on its base, with the shipped offline
MMLU-dev task; figures equal to the `lm_eval` CLI's own on the merged model; every bad input one sentence with
nothing written; a recipe's `evaluation.benchmarks` after training."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli, sft_recipe, write_recipe

import llmkit
from llmkit import Recipe
from llmkit.errors import RecipeError
from llmkit.recipe.benchmarks import Benchmark, parse, problems

TASK = "data/mmlu-dev/mmlu_dev.yaml"  # the shipped offline task; its data path starts at the repository root


@pytest.fixture(scope="module")
def run(tiny_dirs, instructions_small, tmp_path_factory) -> Path:
    """A tiny LoRA SFT run (its adapter is what llmkit benchmark loads, unmerged)."""
    out = tmp_path_factory.mktemp("bench") / "run"
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, out)
    recipe["training"]["max_steps"] = 4
    llmkit.Trainer(Recipe.from_dict(recipe)).train()
    return out


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the task list, without the harness


def test_task_lists_parse_with_their_n_shot_and_the_preset():
    assert parse(["open-llm-leaderboard"]) == [
        Benchmark("arc_challenge", 25), Benchmark("hellaswag", 10), Benchmark("mmlu", 5), Benchmark("truthfulqa_mc2", 0)
    ]  # fmt: skip
    assert parse(["arc_easy:5,piqa", "winogrande"], num_fewshot=2) == [
        Benchmark("arc_easy", 5), Benchmark("piqa", 2), Benchmark("winogrande", 2)
    ]  # fmt: skip
    assert problems(["piqa:-1"], "--tasks") == ["--tasks: 'piqa:-1' asks for -1 few-shot examples; use 0 or more"]
    assert "listed twice" in problems(["mmlu", "open-llm-leaderboard"])[0]
    assert "does not exist" in problems(["nowhere/task.yaml"])[0]


def test_recipe_benchmarks_are_for_language_models(tiny_dirs, tmp_path):
    recipe = sft_recipe(tiny_dirs["llama"], REPO / "data" / "instruction-data.json", tmp_path / "run")
    recipe["evaluation"] = {"benchmarks": [str(REPO / TASK)]}
    assert Recipe.from_dict(recipe).evaluation.benchmarks == [str(REPO / TASK)]
    classifier = {**recipe, "task": "classification", "model": {"name": str(tiny_dirs["bert"])}}
    classifier["data"] = {"train": str(REPO / "data" / "sms-spam" / "train.tsv"), "format": "classification"}
    with pytest.raises(RecipeError, match=r"evaluation\.benchmarks: task classification here trains a seq_cls model"):
        Recipe.from_dict(classifier)
    with pytest.raises(RecipeError, match=r"evaluation\.benchmarks: the task file 'a\.yaml' does not exist"):
        Recipe.from_dict({**recipe, "evaluation": {"benchmarks": ["a.yaml"]}})
    with pytest.raises(RecipeError, match=r"evaluation\.extra_metrics: task sft reports a held-out loss only"):
        Recipe.from_dict({**recipe, "evaluation": {"extra_metrics": ["bleu"]}})


# ---------------------------------------------------------------- end to end, on the tiny model


@pytest.mark.e2e
def test_figures_equal_the_lm_eval_cli_on_the_merged_model(run, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    merged = tmp_path / "merged"
    assert run_cli("merge", str(run), "--output", str(merged))[0] == 0
    ours = tmp_path / "ours.json"
    args = ["--tasks", TASK, "--num_fewshot", "2", "--limit", "24"]  # the harness's own names work for both
    code, stdout, stderr = run_cli("benchmark", str(merged), *args, "--output", str(ours))
    assert code == 0, stderr
    row = json.loads(ours.read_text())["results"][0]

    lm_eval = Path(sys.executable).parent / "lm_eval"
    cli = [str(lm_eval), "--model", "hf", "--model_args", f"pretrained={merged}", *args, "--output_path"]
    done = subprocess.run([*cli, str(tmp_path / "cli")], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(next((tmp_path / "cli").rglob("results_*.json")).read_text())
    assert (row["value"], row["stderr"]) == (theirs["results"]["mmlu_dev"]["acc,none"],
                                             theirs["results"]["mmlu_dev"]["acc_stderr,none"])  # fmt: skip
    assert (row["n_shot"], row["samples"]) == (2, 24) == (theirs["n-shot"]["mmlu_dev"], 24)
    printed = next(line for line in done.stdout.splitlines() if line.startswith("|mmlu_dev"))
    assert f"{row['stderr']:.4f}" in printed and f"{row['value']:.4f}".rstrip("0").rstrip(".") in printed
    assert f"{row['value']:.4f} ± {row['stderr']:.4f}" in stdout


@pytest.mark.e2e
def test_a_run_against_its_base_is_recorded_in_the_run(run, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    code, stdout, stderr = run_cli("benchmark", str(run), "--tasks", f"{TASK}:1", "--limit", "12", "--baseline",
                                   "--log-samples")  # fmt: skip
    assert code == 0, stderr
    assert stdout.splitlines()[0].split() == ["task", "n-shot", "metric", "samples", "value", "±", "stderr", "base",
                                              "±", "stderr", "delta"]  # fmt: skip
    row = json.loads((run / "benchmark.json").read_text())["results"][0]
    assert (row["task"], row["metric"], row["n_shot"], row["samples"]) == ("mmlu_dev", "acc", 1, 12)
    assert row["delta"] == pytest.approx(row["value"] - row["baseline"])
    assert f"{row['delta']:+.4f}" in stdout.splitlines()[1]
    recorded = json.loads((run / "metrics.json").read_text())["benchmarks"]["mmlu_dev/acc"]
    assert recorded == {k: row[k] for k in ("value", "stderr", "n_shot", "samples", "baseline", "baseline_stderr",
                                              "delta")}  # fmt: skip
    provenance = json.loads((run / "manifest.json").read_text())["benchmarks"][-1]
    assert provenance["lm_eval"] == "0.4.13" and provenance["models"]["baseline"].endswith("llama")
    shipped = REPO / TASK
    assert provenance["tasks"]["mmlu_dev"]["sha256"] == __import__("hashlib").sha256(shipped.read_bytes()).hexdigest()
    for name in ("mmlu_dev.jsonl", "mmlu_dev-baseline.jsonl"):
        lines = (run / "benchmark-samples" / name).read_text().splitlines()
        assert len(lines) == 12 and {"doc", "target", "resps", "acc"} <= set(json.loads(lines[0]))


@pytest.mark.e2e
def test_bad_input_is_one_sentence_and_writes_nothing(run, tiny_dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    copy = shutil.copytree(run, tmp_path / "run")
    before = _files(copy)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "llmkit.json").write_text("{")
    encoder = tmp_path / "encoder-run"
    encoder.mkdir()
    meta = {"task": "classification", "head": "seq_cls", "family": "bert", "model_type": "bert",
            "method": {"name": "full"}, "base_model": {"name": str(tiny_dirs["bert"])}}  # fmt: skip
    (encoder / "llmkit.json").write_text(json.dumps(meta))
    bad_task = tmp_path / "bad.yaml"
    bad_task.write_text("task: bad\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: nowhere.jsonl\n")
    cases = {
        (str(copy), "--tasks", f"{TASK}:500"): "mmlu_dev has 278 few-shot examples (its 'test' split, less the "
        "question asked), fewer than the 500",
        (str(copy), "--tasks", str(bad_task)): f"'{bad_task}' is not a valid lm-eval task file",
        (str(copy), "--tasks", "nowhere.yaml"): "the task file 'nowhere.yaml' does not exist",
        (str(copy), "--tasks", "piqa:-2"): "'piqa:-2' asks for -2 few-shot examples",
        (str(copy), "--tasks", TASK, "--fewshot-as-multiturn"): "add --apply-chat-template",
        (str(damaged), "--tasks", TASK): "is damaged",
        (str(encoder), "--tasks", TASK): f"evaluate it with `llmkit eval {encoder}`",
        (str(tiny_dirs["t5"]), "--tasks", TASK): "is a t5 model, not a decoder",
        (str(tiny_dirs["llama"]), "--tasks", TASK, "--baseline"): "is not an llmkit run",
        (str(tmp_path / "nothing"), "--tasks", TASK): "the local path",
    }
    for argv, expected in cases.items():
        code, _, stderr = run_cli("benchmark", *argv)
        assert code != 0 and "Traceback" not in stderr, (argv, stderr)
        message = stderr.strip().splitlines()[-1]
        assert message.startswith("error: ") and expected in message, (argv, stderr)
    assert _files(copy) == before, "nothing written"


@pytest.mark.e2e
def test_task_names_are_checked_against_the_harness_index(run, tmp_path, monkeypatch):
    copy = shutil.copytree(run, tmp_path / "run")
    before = _files(copy)
    code, _, stderr = run_cli("benchmark", str(copy), "--tasks", "hellaswg")
    assert code != 0 and "'hellaswg' is not an lm-eval task; did you mean 'hellaswag'?" in stderr, stderr
    code, _, stderr = run_cli("benchmark", str(copy), "--tasks", "open-llm-leaderboard")
    assert code != 0 and "Traceback" not in stderr
    assert "task 'arc_challenge' reads its data from the Hugging Face hub, which is offline" in stderr
    assert f"pass a local lm-eval task file instead (e.g. {TASK})" in stderr
    assert _files(copy) == before


def test_without_the_harness_one_sentence_says_how_to_install_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    code, _, stderr = run_cli("benchmark", "any-model", "--tasks", TASK)
    assert code != 0
    expected = "llmkit benchmark (and evaluation.benchmarks) needs the lm_eval package: pip install 'llmkit[eval]'."
    assert stderr.strip() == f"error: {expected}"


@pytest.mark.e2e
def test_recipe_benchmarks_run_after_training_against_the_base(tiny_dirs, instructions_small, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run")
    recipe["training"]["max_steps"] = 2
    recipe["evaluation"] = {"benchmarks": [TASK], "benchmark_limit": 6}
    path = write_recipe(tmp_path, recipe)
    code, _, stderr = run_cli("train", str(path))
    assert code == 0, stderr
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["benchmarks"]["mmlu_dev/acc"]
    assert recorded["samples"] == 6 and recorded["delta"] == pytest.approx(recorded["value"] - recorded["baseline"])
    provenance = json.loads((tmp_path / "run" / "manifest.json").read_text())["benchmarks"]
    assert len(provenance) == 1 and provenance[0]["settings"]["limit"] == 6
    assert json.loads((tmp_path / "run" / "benchmark.json").read_text())["results"][0]["baseline"] is not None
    assert "base ± stderr" in stderr

    recipe["output_dir"] = str(tmp_path / "other")
    recipe["evaluation"] = {"benchmarks": ["hellaswag"]}
    code, _, stderr = run_cli("train", str(write_recipe(tmp_path, recipe)))
    assert code != 0 and "evaluation.benchmarks: task 'hellaswag' reads its data from the Hugging Face hub" in stderr
    assert not (tmp_path / "other").exists() and not (tmp_path / "other.incomplete").exists()


def test_a_prompt_tuned_model_is_read_at_its_inputs_positions():
    """peft returns logits for prompt tuning's virtual tokens too, ahead of the input's; the harness itself skips
    them (so llmkit passes prompt-tuned runs as they are): its log-likelihood of a continuation equals the one
    computed here from the model's output past those tokens."""
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from peft import PromptTuningConfig, get_peft_model

    from llmkit.testing import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer("llama")
    model = get_peft_model(tiny_model("llama"), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)).eval()
    context, continuation = "Name a colour.", " Blue sky"
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    request = Instance(request_type="loglikelihood", doc={}, arguments=(context, continuation), idx=0)
    ((harness_logp, _greedy),) = lm.loglikelihood([request])

    ids = lm.tok_encode(context + continuation)  # as the harness splits a pair: the whole, less the context's tokens
    n = len(ids) - len(lm.tok_encode(context))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, 3:].log_softmax(-1)  # past the 3 virtual tokens
    expected = sum(float(logits[i - 1, ids[i]]) for i in range(len(ids) - n, len(ids)))
    assert harness_logp == pytest.approx(expected, rel=1e-5)
