"""The Python API as a notebook uses it: rows held as objects (Dataset, DatasetDict, DataFrame, list of dicts) go
where a recipe names a file and make the same examples; recipes built and changed in Python are validated like
YAML; callbacks and a metrics hook reach the trainer; the result generates and predicts exactly as the CLI does;
importing llmkit prints nothing. Decisions: docs/python-api.md."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import datasets
import pandas as pd
import pytest
from conftest import REPO, run_cli, sft_recipe, write_recipe
from toy import classification_recipe, copy_rows, sentiment_rows, seq2seq_recipe, write_jsonl, write_splits
from transformers import TrainerCallback

import llmkit
from llmkit import DataError, Recipe, RecipeError
from llmkit.data.memory import attach
from llmkit.prepare import prepare_recipe

KINDS = ("list", "DataFrame", "Dataset", "DatasetDict")


def as_kind(rows: list[dict], kind: str):
    if kind == "list":
        return rows
    if kind == "DataFrame":
        return pd.DataFrame(rows)
    if kind == "Dataset":
        return datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(train=datasets.Dataset.from_list(rows))


@pytest.fixture(scope="module")
def rows(instructions_small) -> list[dict]:
    return json.loads(instructions_small.read_text())[:40]


def _python_recipe(model_dir, output_dir, **changes) -> Recipe:
    """sft_recipe without data.train: the rows come from Python."""
    recipe = sft_recipe(model_dir, "unused", output_dir)
    del recipe["data"]["train"]
    recipe["data"]["cache_dir"] = str(output_dir.parent / "cache")
    recipe["training"].update(max_steps=2, logging_steps=1)
    return Recipe.from_dict(recipe).replace(**changes)


def _columns(ds) -> dict:
    return ds.to_dict() if ds is not None else None


# ---------------------------------------------------------------- quiet import


def test_importing_llmkit_prints_nothing():
    for code in (
        "from llmkit import Recipe, Trainer",
        "import llmkit; llmkit.Trainer; llmkit.load; llmkit.RunResult",
    ):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, done.stderr
        assert (done.stdout, done.stderr) == ("", ""), code


def test_bitsandbytes_import_notices_are_held_until_4bit_is_used():
    """bitsandbytes logs its CPU-kernel notice while peft imports it; llmkit shows it only once a run loads 4-bit."""
    script = (
        "import logging, sys, llmkit\n"
        "llmkit.Trainer\n"
        "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('Failed to load CPU gemm_4bit_forward')\n"
        "print('imported', file=sys.stderr, flush=True)\n"
        "from llmkit.methods import METHODS\n"
        "from llmkit.methods.base import MethodContext\n"
        "ctx = MethodContext(family='llama', task='sft', head='causal_lm', model_type='llama')\n"
        "METHODS['qlora']().load_kwargs(ctx)\n"
    )
    pytest.importorskip("bitsandbytes")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["imported", "Failed to load CPU gemm_4bit_forward"]


# ---------------------------------------------------------------- recipes from Python


def test_a_recipe_built_in_python_is_validated_like_yaml(tiny_dirs, instructions_small, tmp_path):
    fields = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run")
    assert Recipe(**fields) == Recipe.from_dict(fields)
    with pytest.raises(RecipeError, match=r"training\.max_stepz: unknown key; did you mean 'max_steps'"):
        Recipe(**{**fields, "training": {"max_stepz": 3}})
    with pytest.raises(RecipeError, match=r"task: 'classification' cannot run|data.format 'alpaca' does not fit"):
        Recipe(**{**fields, "task": "classification"})


def test_replace_changes_dotted_keys_and_validates_again(tiny_dirs, instructions_small, tmp_path):
    recipe = Recipe.from_dict(sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run"))
    changed = recipe.replace(**{"training.max_steps": 7, "method.r": 4}, output_dir=str(tmp_path / "b"))
    assert (changed.training.max_steps, changed.method.r, changed.output_dir) == (7, 4, str(tmp_path / "b"))
    assert (recipe.training.max_steps, recipe.method.r) == (20, 8)  # the original is untouched
    with pytest.raises(RecipeError, match=r"data\.format: unknown format 'alpacca'; did you mean 'alpaca'"):
        recipe.replace(**{"data.format": "alpacca"})
    with pytest.raises(RecipeError, match=r"training\.max_steps"):
        recipe.replace(**{"training.max_steps": "many"})


def test_rows_in_the_recipe_say_where_rows_go(tiny_dirs, tmp_path):
    """The first thing a notebook user tries: the rows themselves as data.train."""
    fields = {"model": {"name": str(tiny_dirs["llama"])}, "method": "lora", "output_dir": str(tmp_path / "x")}
    for rows in ([{"instruction": "a", "output": "b"}], pd.DataFrame([{"instruction": "a", "output": "b"}])):
        with pytest.raises(RecipeError) as caught:
            Recipe.from_dict({**fields, "data": {"train": rows, "format": "alpaca"}})
        assert str(caught.value).count("\n") == 0
        assert "data.train: this holds rows" in str(caught.value)
        assert "llmkit.Trainer(recipe, train=rows)" in str(caught.value)


def test_a_recipe_without_data_train_trains_only_from_python(tiny_dirs, instructions_small, tmp_path):
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run")
    del recipe["data"]["train"]
    path = write_recipe(tmp_path, recipe)
    code, out, err = run_cli("validate", str(path))
    assert code == 0 and "task: sft" in out
    assert "has no data.train: it trains only from Python" in err and "llmkit.Trainer(recipe, train=rows)" in err
    code, _, err = run_cli("train", str(path))
    assert code == 2 and "Traceback" not in err
    assert "data.train: this recipe names no training rows" in err and "Trainer(recipe, train=rows)" in err
    with pytest.raises(RecipeError, match=r"data.train: this recipe names no training rows"):
        llmkit.Trainer(Recipe.from_yaml(path)).train()
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.incomplete").exists()
    in_memory = recipe | {"data": {**recipe["data"], "train": {"in_memory": "list", "fingerprint": "abc"}}}
    with pytest.raises(RecipeError, match="in_memory names rows that lived in a Python session"):
        Recipe.from_dict(in_memory)


# ---------------------------------------------------------------- data objects → the file path's examples


@pytest.mark.parametrize("kind", KINDS)
def test_each_data_object_makes_the_examples_its_rows_make_from_a_file(kind, rows, tiny_dirs, tmp_path):
    data_file = tmp_path / "rows.jsonl"
    write_jsonl(data_file, rows)
    from_file = Recipe.from_dict(sft_recipe(tiny_dirs["llama"], data_file, tmp_path / "a")).replace(
        **{"data.cache_dir": str(tmp_path / "cache")}
    )
    python = _python_recipe(tiny_dirs["llama"], tmp_path / "b").replace(**{"training.max_steps": 20})
    _, _, expected = prepare_recipe(from_file)
    _, _, got = prepare_recipe(attach(python, train=as_kind(rows, kind)))
    assert len(got.train) == len(expected.train) > 0
    assert _columns(got.train) == _columns(expected.train)
    assert _columns(got.held_out) == _columns(expected.held_out)  # the same seeded carve-out
    assert got.sources["train"]["source"] == f"train (in-memory {'Dataset' if kind == 'DatasetDict' else kind})"
    assert got.sources["train"]["fingerprint"] == datasets.Dataset.from_list(rows)._fingerprint


def test_a_dataset_dict_gives_its_splits_and_refuses_others(rows, tiny_dirs, tmp_path):
    recipe = _python_recipe(tiny_dirs["llama"], tmp_path / "run")
    whole = datasets.DatasetDict(
        train=datasets.Dataset.from_list(rows[:30]),
        validation=datasets.Dataset.from_list(rows[30:35]),
        test=datasets.Dataset.from_list(rows[35:]),
    )
    attached = attach(recipe, train=whole)
    copied = pickle.loads(pickle.dumps(attached))  # as a Dataset.map worker gets it: the rows stay here
    assert (copied.data.train.fingerprint, copied.data.train.held_rows) == (attached.data.train.fingerprint, None)
    assert [s.in_memory for s in (attached.data.train, attached.data.validation, attached.data.test)] == ["Dataset"] * 3
    assert attached.data.test.fingerprint == whole["test"]._fingerprint  # sft reads no test split; eval would
    _, _, prepared = prepare_recipe(attached)
    assert prepared.sources["validation"]["source"] == "validation (in-memory Dataset)"
    assert (prepared.sources["train"]["rows"], prepared.sources["validation"]["rows"]) == (30, 5)
    with pytest.raises(DataError, match=r"needs a 'train' split .* it has train, dev"):
        attach(recipe, train=datasets.DatasetDict(train=whole["train"], dev=whole["test"]))
    with pytest.raises(DataError, match="validation is both a split of train= and validation="):
        attach(recipe, train=whole, validation=rows)
    with pytest.raises(DataError, match="validation= takes one split, not a DatasetDict"):
        attach(recipe, train=rows, validation=whole)


def test_bad_rows_are_named_by_their_index_in_the_object(rows, tiny_dirs, tmp_path):
    recipe = _python_recipe(tiny_dirs["llama"], tmp_path / "run")
    bad = [dict(r) for r in rows[:6]]
    bad[3]["output"] = ""
    with pytest.raises(DataError, match=r"row 3 of train \(in-memory list\): 'output' is empty"):
        prepare_recipe(attach(recipe, train=bad))
    with pytest.raises(DataError, match=r"row 3 of train \(in-memory DataFrame\): 'output' is empty"):
        prepare_recipe(attach(recipe, train=pd.DataFrame(bad)))
    bad[3]["output"] = 7  # a column of mixed types: Arrow refuses the table, the row check names the row
    with pytest.raises(DataError, match=r"row 3 of train \(in-memory list\): 'output' must be a string, got int"):
        attach(recipe, train=bad)
    with pytest.raises(DataError, match=r"row 1 of validation \(in-memory list\): is of type str"):
        attach(recipe, train=rows, validation=[rows[0], "text"])
    with pytest.raises(DataError, match=r"train= takes a datasets.Dataset .* not a dict"):
        attach(recipe, train={"instruction": ["a"], "output": ["b"]})
    with pytest.raises(DataError, match=r"train \(in-memory list\): has no rows"):
        attach(recipe, train=[])
    with pytest.raises(DataError, match="has no 'output' column"):
        prepare_recipe(attach(recipe, train=[{"instruction": "a", "answer": "b"}] * 4))
    mapped = recipe.replace(**{"data.columns": {"output": "answer"}})
    _, _, prepared = prepare_recipe(attach(mapped, train=[{"instruction": "a", "answer": "b"}] * 4))
    assert len(prepared.train) == 3


def test_hub_style_label_ids_and_dataframe_gaps_read_as_a_file_would_hold_them(tiny_dirs, tmp_path):
    """A ClassLabel column gives its names (id2label 'pos', not '1'); a DataFrame's NaN is a missing field."""
    from llmkit.data.memory import as_dataset

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    hub_like = datasets.Dataset.from_dict({"text": ["good", "bad", "??"], "label": [1, 0, -1]}, features=features)
    ds, kind = as_dataset(hub_like, "train")
    assert (kind, ds["label"]) == ("Dataset", ["pos", "neg", None])
    frame = pd.DataFrame([{"instruction": "a", "input": "x", "output": "b"}, {"instruction": "c", "output": "d"}] * 3)
    recipe = _python_recipe(tiny_dirs["llama"], tmp_path / "run", **{"data.validation_split": 0})
    _, _, prepared = prepare_recipe(attach(recipe, train=frame))
    assert len(prepared.train) == 6


def test_two_different_in_memory_datasets_never_share_a_cache_entry(rows, tiny_dirs, tmp_path):
    recipe = _python_recipe(tiny_dirs["llama"], tmp_path / "run")
    _, _, first = prepare_recipe(attach(recipe, train=rows[:20]))
    _, _, other = prepare_recipe(attach(recipe, train=rows[20:]))
    _, _, same = prepare_recipe(attach(recipe, train=pd.DataFrame(rows[:20])))  # same rows, another kind
    assert first.entry != other.entry
    assert _columns(other.train) != _columns(first.train)
    assert _columns(same.train) == _columns(first.train)


# ---------------------------------------------------------------- training from Python


class Recorder(TrainerCallback):
    def __init__(self):
        self.events: list[str] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.events.append("begin")

    def on_step_end(self, args, state, control, **kwargs):
        self.events.append(f"step {state.global_step}")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.events.append("evaluate")


@pytest.mark.e2e
@pytest.mark.parametrize("kind", KINDS)
def test_training_from_each_data_object_calls_callbacks_and_records_the_source(kind, rows, tiny_dirs, tmp_path):
    recorder = Recorder()
    recipe = _python_recipe(tiny_dirs["llama"], tmp_path / "run")
    result = llmkit.Trainer(recipe, train=as_kind(rows, kind), callbacks=[recorder]).train()
    assert recorder.events == ["begin", "evaluate", "step 1", "step 2", "evaluate"]
    manifest = json.loads((result.output_dir / "manifest.json").read_text())
    shown = "Dataset" if kind == "DatasetDict" else kind
    assert manifest["data"]["train"] == {
        "source": f"train (in-memory {shown})",
        "kind": f"in-memory {shown}",
        "fingerprint": datasets.Dataset.from_list(rows)._fingerprint,
        "rows": 32,
    }
    saved = Recipe.from_run(result.output_dir)
    fingerprint = manifest["data"]["train"]["fingerprint"]
    assert (saved.data.train.in_memory, saved.data.train.fingerprint) == (shown, fingerprint)
    code, _, err = run_cli("eval", str(result.output_dir), "--output", str(tmp_path / "eval.json"))
    assert code != 0 and "was passed from Python" in err and "Traceback" not in err


@pytest.mark.e2e
def test_result_generate_is_the_cli_generate_on_the_same_run(rows, tiny_dirs, tmp_path):
    recipe = _python_recipe(tiny_dirs["llama"], tmp_path / "run", **{"generation.max_new_tokens": 6})
    result = llmkit.Trainer(recipe, train=rows).train()
    prompts = ["Name a colour.", "Translate 'cat' to French."]
    code, out, err = run_cli("generate", str(result.output_dir), "--prompt", prompts[0])
    assert code == 0, err
    assert result.generate(prompts[0]) == out.removesuffix("\n") != ""
    code, out, err = run_cli("generate", str(result.output_dir), "--prompt", prompts[0], "--prompt", prompts[1],
                             "--max-new-tokens", "3")  # fmt: skip
    assert code == 0, err
    expected = [f"### {p}\n{t}\n" for p, t in zip(prompts, result.generate(prompts, max_new_tokens=3), strict=True)]
    assert out == "\n".join(expected) + "\n"
    loaded = llmkit.load(result.output_dir)
    assert isinstance(loaded, llmkit.RunResult) and loaded.metrics == result.metrics
    assert loaded.generate(prompts) == result.generate(prompts)
    with pytest.raises(RecipeError, match=r"generation: temperature only applies when sampling; set do_sample"):
        result.generate(prompts, temperature=0.5)
    with pytest.raises(RecipeError, match=r"generation\.max_new_tokenz: unknown key; did you mean 'max_new_tokens'"):
        result.generate(prompts, max_new_tokenz=3)


@pytest.mark.e2e
def test_classifier_from_a_dataframe_with_a_metric_hook_predicts_as_the_cli_does(tiny_dirs, tmp_path):
    splits = write_splits(tmp_path / "data", sentiment_rows, sizes=(48, 16, 16))
    recipe = classification_recipe(tiny_dirs["bert"], splits, tmp_path / "run", method="full")
    recipe["training"]["max_steps"] = 4
    seen = []

    def agreement(predictions, references):
        seen.append((len(predictions), len(references)))
        return {"agreement": float((predictions == references).mean())}

    frames = {split: pd.read_json(path, lines=True) for split, path in splits.items()}
    trainer = llmkit.Trainer(Recipe.from_dict(recipe), train=frames["train"], compute_metrics=agreement)
    result = trainer.train()
    assert result.metrics["eval_agreement"] == pytest.approx(result.metrics["eval_accuracy"])
    assert result.metrics["test_agreement"] == pytest.approx(result.metrics["test_accuracy"])
    assert (16, 16) in seen
    new = [{"text": "love good nice", "id": 1}, {"text": "hate cruel", "id": 2}]
    code, _, err = run_cli("predict", str(result.output_dir), "--input", str(write_jsonl(tmp_path / "in.jsonl", new)),
                           "--output", str(tmp_path / "out.jsonl"))  # fmt: skip
    assert code == 0, err
    cli = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert result.predict(new) == cli
    assert llmkit.load(result.output_dir).predict(pd.DataFrame(new)) == cli
    from llmkit.predict import predict

    assert predict(result.output_dir, datasets.Dataset.from_list(new), batch_size=1) == cli
    with pytest.raises(DataError, match=r"row 1 of rows \(in-memory list\): 'text' is empty"):
        result.predict([{"text": "good"}, {"text": " "}])
    with pytest.raises(llmkit.LlmkitError, match="does not generate text"):
        result.generate("hi")


@pytest.mark.e2e
def test_seq2seq_metric_hook_gets_the_generated_and_reference_texts(tiny_dirs, tmp_path):
    splits = write_splits(tmp_path / "data", copy_rows, sizes=(16, 8, 8))
    recipe = seq2seq_recipe(tiny_dirs["t5"], splits, tmp_path / "run")
    recipe["training"]["max_steps"] = 2
    del recipe["data"]["train"], recipe["data"]["validation"]
    seen = []

    def exact(predictions, references):
        seen.append((predictions, references))
        return {"exact": sum(p == r for p, r in zip(predictions, references, strict=True)) / len(references)}

    rows = copy_rows(16, 0)
    held = datasets.Dataset.from_list(copy_rows(8, 1))
    result = llmkit.Trainer(Recipe.from_dict(recipe), train=rows, validation=held, compute_metrics=exact).train()
    predictions, references = seen[-1]
    assert references == [r["target"] for r in copy_rows(8, 1)]
    assert len(predictions) == 8 and all(isinstance(p, str) for p in predictions)
    assert {"eval_exact_before", "eval_exact", "eval_rouge1"} <= set(result.metrics)
    assert result.generate(held[0]["source"]) == result.predict([{"source": held[0]["source"]}])[0]["generation"]


def test_compute_metrics_is_refused_for_a_task_without_metrics(tiny_dirs, tmp_path):
    recipe = _python_recipe(tiny_dirs["llama"], tmp_path / "run")
    with pytest.raises(RecipeError, match="compute_metrics: task sft reports a held-out loss only"):
        llmkit.Trainer(recipe, train=[{"instruction": "a", "output": "b"}], compute_metrics=lambda p, r: {})


@pytest.mark.e2e
def test_callbacks_reach_a_trl_trainer(tiny_dirs, preferences_small, tmp_path):
    from test_dpo import dpo_recipe

    recorder = Recorder()
    recipe = dpo_recipe(tiny_dirs["llama"], preferences_small, tmp_path / "run")
    recipe["training"]["max_steps"] = 2
    pairs = json.loads(preferences_small.read_text())
    del recipe["data"]["train"], recipe["data"]["validation"]
    llmkit.Trainer(Recipe.from_dict(recipe), train=pairs, validation=pairs[:8], callbacks=[recorder]).train()
    assert recorder.events == ["begin", "evaluate", "step 1", "step 2", "evaluate"]


# ---------------------------------------------------------------- the notebook example


@pytest.mark.e2e
def test_the_notebook_example_runs(tiny_dirs, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "LLMKIT_EXAMPLE_OUTPUT": str(tmp_path / "out"),
        "LLMKIT_EXAMPLE_CHAT_MODEL": str(tiny_dirs["llama"]),
        "LLMKIT_EXAMPLE_CLASSIFIER": str(tiny_dirs["bert"]),
        "LLMKIT_EXAMPLE_STEPS": "2",
        "LLMKIT_CACHE": str(tmp_path / "cache"),
    }
    example = REPO / "docs" / "examples" / "notebook.py"
    done = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "held-out loss:" in done.stdout and "eval_balanced_accuracy" in done.stdout
    assert (tmp_path / "out" / "sft" / "manifest.json").is_file()
    assert (tmp_path / "out" / "spam" / "manifest.json").is_file()
