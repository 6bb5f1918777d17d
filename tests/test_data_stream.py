"""data.streaming: rows tokenised as training reads them; the stream holds the same examples as a prepared run, packs,
holds out its first rows, names a bad row by its line, and trains; recipes that need a length are refused."""

from __future__ import annotations

import json

import pytest
from conftest import sft_recipe

from llmkit import DataError, Recipe, RecipeError
from llmkit.prepare import prepare_recipe


def _recipe(model, data, tmp_path, **data_keys) -> Recipe:
    recipe = sft_recipe(model, data, tmp_path / "run")
    recipe["data"].update({"cache_dir": str(tmp_path / "cache"), "validation_split": 0, **data_keys})
    recipe["training"].update(max_steps=3, per_device_train_batch_size=2, logging_steps=1)
    return Recipe.from_dict(recipe)


def _key(example: dict) -> tuple:
    return tuple(example["input_ids"]), tuple(example["labels"])


def test_a_stream_holds_the_prepared_examples(tiny_dirs, instructions_small, tmp_path):
    _, _, prepared = prepare_recipe(_recipe(tiny_dirs["gpt2"], instructions_small, tmp_path))
    _, _, streamed = prepare_recipe(_recipe(tiny_dirs["gpt2"], instructions_small, tmp_path, streaming=True))
    assert streamed.entry is None, "nothing is cached"
    rows = list(streamed.train)
    assert sorted(map(_key, rows)) == sorted(map(_key, prepared.train.to_list()))
    assert [_key(r) for r in rows] != [_key(r) for r in prepared.train.to_list()], "shuffled in a buffer"
    assert streamed.sources["train"]["streamed"] is True and streamed.sources["train"]["rows"] is None


def test_a_stream_trains_packed_with_its_first_rows_held_out(tiny_dirs, instructions_small, tmp_path):
    from llmkit import Trainer

    recipe = _recipe(tiny_dirs["gpt2"], instructions_small, tmp_path, streaming=True, packing=True, max_eval_samples=8)
    result = Trainer(recipe).train()
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["train_steps"] == 3 and metrics["eval_loss"] > 0
    data = json.loads((result.output_dir / "manifest.json").read_text())["data"]
    assert data["validation"]["rows"] == 8 and data["validation"]["source"].startswith("first 8 rows of")
    assert data["train"]["streamed"] is True


def test_a_bad_row_in_a_stream_is_named_when_it_is_reached(tiny_dirs, tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(5)] + [{"instruction": "q", "output": 3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, _, streamed = prepare_recipe(_recipe(tiny_dirs["gpt2"], path, tmp_path, streaming=True))
    with pytest.raises(DataError, match=r"rows.jsonl:6: 'output' must be a string, got int"):
        list(streamed.train)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"training": {"max_steps": None}}, "data.streaming: a stream's length is unknown, so training cannot count"),
        ({"task": "classification"}, "data.streaming: task classification needs its whole dataset"),
        ({"data": {"validation_split": 0.1}}, "validation_split: a stream's length is unknown"),
    ],
)
def test_recipes_that_need_the_length_are_refused(tiny_dirs, instructions_small, tmp_path, change, problem):
    recipe = sft_recipe(tiny_dirs["gpt2"], instructions_small, tmp_path / "run")
    recipe["data"] = {"train": str(instructions_small), "streaming": True, **change.get("data", {})}
    recipe["training"] = {"max_steps": 5, **change.get("training", {})}
    if "task" in change:
        recipe.update(task="classification", model={"name": str(tiny_dirs["bert"])}, method="full")
        recipe["data"]["format"] = "classification"
    with pytest.raises(RecipeError, match=problem):
        Recipe.from_dict(recipe)
