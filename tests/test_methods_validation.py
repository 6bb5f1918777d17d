"""Method blocks are validated before anything loads: unknown keys, wrong values and every unsupported combination
are one sentence naming the key and the fix; the documented matrix is the one the code enforces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import INSTRUCTIONS, REPO, write_recipe

from llmkit import Recipe, RecipeError
from llmkit.methods import METHODS
from llmkit.methods.base import ALL_FAMILIES
from llmkit.recipe import TASKS
from llmkit.recipe.matrix import markdown, supported

# Keys a method cannot do without; everything else has a default.
REQUIRED = {"adapter_fusion": {"adapters": ["runs/a", "runs/b"]}}


# Data each task accepts, so that only the method can be what a recipe is refused for.
DATA = {
    "classification": {"train": str(REPO / "data/sms-spam/train.tsv"), "format": "classification",
                       "columns": {"text": "SMS", "label": "Label"}},
    "seq2seq": {"train": str(REPO / "data/verdict-summaries.jsonl"), "format": "seq2seq",
                "columns": {"source": "passage", "target": "summary"}},
    **{task: {"train": str(REPO / "data/instruction-data-with-preference.json"), "format": "alpaca_preference",
              "identical_pairs": "drop"} for task in ("dpo", "orpo", "kto", "reward")},
    **{task: {"train": str(INSTRUCTIONS), "format": "prompt", "columns": {"prompt": "instruction"}}
       for task in ("grpo", "rloo")},
}  # fmt: skip


def _recipe(tmp_path: Path, model_type: str, task: str, method: dict) -> dict:
    model = tmp_path / model_type
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(f'{{"model_type": "{model_type}"}}')
    data = DATA.get(task, {"train": str(INSTRUCTIONS)})
    recipe = {"task": task, "model": {"name": str(model)}, "data": data, "method": method, "output_dir": "out"}
    if task in ("grpo", "rloo"):
        recipe[task] = {"rewards": [{"regex": "^A"}]}
    if task == "distill":  # each family's student: a classifier (bert), a rationale student (t5), a causal LM
        if model_type == "t5":
            rationales = tmp_path / "rationales.jsonl"
            rationales.write_text('{"input": "Win a prize!", "label": "spam", "rationale": "It sells."}\n')
            recipe["data"] = {"train": str(rationales), "format": "rationale"}
        else:
            recipe["data"] = DATA["classification"] if model_type == "bert" else data
            recipe["distill"] = {"teacher": str(model)}
    return recipe


def _problems(tmp_path: Path, model_type: str, task: str, method: dict) -> str:
    try:
        Recipe.from_dict(_recipe(tmp_path, model_type, task, method))
    except RecipeError as exc:
        return str(exc)
    return ""


def test_docs_show_the_matrix_the_code_enforces():
    docs = (REPO / "docs" / "methods.md").read_text()
    assert markdown() in docs, "docs/methods.md is stale: paste the output of `python -m llmkit.recipe.matrix`"


@pytest.mark.parametrize("name", list(METHODS))
def test_validation_refuses_exactly_the_unsupported_cells(name, tmp_path):
    for task in TASKS:
        for family in ALL_FAMILIES:
            message = _problems(tmp_path, family, task, {"name": name, **REQUIRED.get(name, {})})
            assert (message == "") == supported(METHODS[name], family, task), (family, task, message)


def test_refusals_say_why(tmp_path):
    assert (
        "method.name: 'bitfit' does not work for task 'sft' on llama models: it trains only bias terms, and "
        "Llama-style models have none." in _problems(tmp_path, "llama", "sft", {"name": "bitfit"})
    )
    assert (
        "method.name: 'llama_adapter' does not work on model type 'qwen2'; it supports gpt2, llama, mistral."
        in _problems(tmp_path, "qwen2", "sft", {"name": "llama_adapter"})
    )
    bert = METHODS["llama_adapter"](name="llama_adapter").problems("bert", "sft")
    assert bert == [
        "method.name: 'llama_adapter' does not work for task 'sft' on bert models: it supports gpt2, llama models."
    ]
    for name in ("adapter", "adapter_fusion"):  # albert is a bert-family type, but has no per-layer places
        message = _problems(tmp_path, "albert", "classification", {"name": name, **REQUIRED.get(name, {})})
        assert f"method.name: '{name}' does not work on model type 'albert': ALBERT runs one shared layer" in message
    prompt = METHODS["prompt_tuning"](name="prompt_tuning")
    assert "would pool a pad token" in prompt.problems("llama", "classification")[0]
    assert "virtual tokens lengthen the logits" in prompt.problems("llama", "dpo")[0]


def test_method_keys_are_checked_with_suggestions(tmp_path):
    cases = {
        "method.reduction: unknown key; did you mean 'reduction_factor'?": {"name": "adapter", "reduction": 8},
        "method.architecture: Input should be 'houlsby' or 'pfeiffer'": {"name": "adapter", "architecture": "x"},
        "method.bnb_4bit_quant_type: Input should be 'nf4' or 'fp4'": {"name": "qlora", "bnb_4bit_quant_type": "int4"},
        "method: target_r (16) must not exceed init_r (12)": {"name": "adalora", "target_r": 16},
        "method.adapters: adapter_fusion fuses at least two adapter runs": {
            "name": "adapter_fusion",
            "adapters": ["a"],
        },
        "method.num_virtual_tokens: Input should be greater than 0": {"name": "prompt_tuning", "num_virtual_tokens": 0},
        "method: every feedforward_modules entry must also be in target_modules": {
            "name": "ia3",
            "target_modules": ["k_proj"],
            "feedforward_modules": ["down_proj"],
        },
    }
    for message, block in cases.items():
        assert message in _problems(tmp_path, "llama", "sft", block), block


def test_qlora_without_bitsandbytes_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # find_spec now reports it missing
    message = _problems(tmp_path, "llama", "sft", {"name": "qlora"})
    assert "method: qlora needs the bitsandbytes package: pip install 'llmkit[qlora]' (or use method lora)" in message


def test_a_run_that_cannot_be_rebuilt_is_one_sentence(tmp_path, monkeypatch):
    """merge / eval / predict read the run's llmkit.json: a damaged one, or a method this install lacks, is a
    RecipeError naming the run, not a pydantic or JSON traceback."""
    from llmkit.methods import read_run

    run = tmp_path / "run"
    run.mkdir()
    cases = {
        "{not json": "llmkit.json' is damaged (JSONDecodeError",
        '{"method": {"name": "lorax"}}': "llmkit.json' is damaged (KeyError: 'lorax'); train the run again.",
        '{"method": {"name": "lora", "rank": 4}}': "cannot be loaded: method.rank: Extra inputs are not permitted.",
    }
    for text, message in cases.items():
        (run / "llmkit.json").write_text(text)
        with pytest.raises(RecipeError) as caught:
            read_run(run)
        assert message in str(caught.value), text
    (run / "llmkit.json").write_text('{"method": {"name": "qlora"}}')
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(
        RecipeError,
        match=r"cannot be loaded: method: qlora needs the bitsandbytes package: pip install 'llmkit\[qlora\]'",
    ):
        read_run(run)


def test_validating_any_method_imports_no_torch(tmp_path):
    paths = []
    for name in METHODS:
        recipe = _recipe(
            tmp_path, "llama" if name != "bitfit" else "gpt2", "sft", {"name": name, **REQUIRED.get(name, {})}
        )
        paths.append(str(write_recipe(tmp_path, recipe, f"{name}.yaml")))
    code = (
        "import sys; from llmkit.cli import main\n"
        "for path in sys.argv[1:]:\n"
        "    assert main(['validate', path]) == 0, path\n"
        "assert 'torch' not in sys.modules, 'validate imported torch'"
    )
    done = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.usefixtures("one_thread")
def test_refused_peft_cells_really_fail_upstream(tiny_dirs):
    """The exclusions are not caution: peft and transformers fail on these combinations."""
    from methods_harness import Case, batch, method

    for name, family, head in (("prefix_tuning", "t5", "seq_cls"), ("prompt_tuning", "t5", "seq_cls"),
                               ("llama_adapter", "bert", "seq_cls")):  # fmt: skip
        case = Case(method(name), tiny_dirs[family], head)
        with pytest.raises((RuntimeError, ValueError, NotImplementedError)):
            case.applied()(**batch(case))


def test_eval_names_a_damaged_run_before_anything_loads(tmp_path):
    from llmkit.evaluation import find_checkpoint

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "llmkit.json").write_text("{not json")
    with pytest.raises(RecipeError, match=r"llmkit.json' is damaged \(JSONDecodeError"):
        find_checkpoint(tmp_path / "run")


def test_runs_saved_by_llmkit_0_1_still_load_under_the_peft_key_names(tmp_path):
    """0.1 named LoRA's keys alpha / dropout (and QLoRA's quant_type, ...); a run it saved reloads as peft names it."""
    from llmkit.methods import read_run

    (tmp_path / "llmkit.json").write_text(
        '{"method": {"name": "qlora", "r": 4, "alpha": 32, "dropout": 0.1, "compute_dtype": "float32"}}'
    )
    _, method = read_run(tmp_path)
    assert (method.lora_alpha, method.lora_dropout, method.bnb_4bit_compute_dtype) == (32, 0.1, "float32")
