"""Mixing: data.train as a list of sources, each with a weight (its share of the mixture) or max_samples; the mixture
is the same for the same seed, and the manifest records every source. Bad mixtures are one sentence each."""

from __future__ import annotations

import json

import pytest
from conftest import sft_recipe

from llmkit import DataError, Recipe, RecipeError
from llmkit.prepare import prepare_recipe


def _rows(tag: str, n: int) -> list[dict]:
    return [{"instruction": f"{tag} question {i}?", "output": f"{tag} answer {i}."} for i in range(n)]


@pytest.fixture
def files(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.jsonl"
    a.write_text(json.dumps(_rows("A", 60)))
    b.write_text(
        "".join(json.dumps({"prompt": r["instruction"], "answer": r["output"]}) + "\n" for r in _rows("B", 20))
    )
    return a, b


def _recipe(model, tmp_path, train, cache="cache", **data) -> Recipe:
    recipe = sft_recipe(model, tmp_path / "unused.json", tmp_path / "run")
    recipe["data"] = {"train": train, "format": "alpaca", "template": "alpaca", "max_length": 256,
                      "validation_split": 0, "cache_dir": str(tmp_path / cache), **data}  # fmt: skip
    return Recipe.from_dict(recipe)


def _b(path, **keys) -> dict:
    return {"path": str(path), "columns": {"instruction": "prompt", "output": "answer"}, **keys}


def _sources(prepared) -> list[str]:
    return [where.split(":")[0].split("[")[0].rsplit("/", 1)[1] for where in prepared.train_where]


def test_weights_are_shares_of_the_mixture_and_a_seed_fixes_it(tiny_dirs, files, tmp_path):
    a, b = files
    train = [{"path": str(a), "weight": 0.75}, _b(b, weight=0.25)]
    _, _, mixed = prepare_recipe(_recipe(tiny_dirs["gpt2"], tmp_path, train))
    names = _sources(mixed)
    share = names.count("a.json") / len(names)
    assert 0.65 < share < 0.85 and names.count("b.jsonl") > 0
    assert len(names) < 80, "it stops when a source runs out: no row repeats"
    record = mixed.sources["train"]
    assert record["rows"] == len(names) and len(record["sha256"]) == 64
    assert [(s["source"], s["rows"], s["weight"]) for s in record["sources"]] == [
        (str(a), names.count("a.json"), 0.75),
        (str(b), names.count("b.jsonl"), 0.25),
    ]
    _, _, again = prepare_recipe(_recipe(tiny_dirs["gpt2"], tmp_path, train, cache="cache-2"))
    assert again.train.to_list() == mixed.train.to_list(), "the same seed gives the same mixture"
    _, _, other = prepare_recipe(_recipe(tiny_dirs["gpt2"], tmp_path, train, split_seed=7))
    assert other.train.to_list() != mixed.train.to_list()


def test_max_samples_and_per_source_columns(tiny_dirs, files, tmp_path):
    a, b = files
    _, tokenizer, mixed = prepare_recipe(
        _recipe(tiny_dirs["gpt2"], tmp_path, [{"path": str(a), "max_samples": 10}, _b(b)], validation_split=0.2)
    )
    record = mixed.sources["train"]
    assert record["rows"] + mixed.sources["validation"]["rows"] == 30, "10 of a's rows and all 20 of b's"
    assert record["sources"][0]["max_samples"] == 10
    assert all(where.startswith((str(a), str(b))) for where in mixed.train_where)
    first_b = next(i for i, where in enumerate(mixed.train_where) if where.startswith(str(b)))
    assert "B question" in tokenizer.decode(mixed.train[first_b]["input_ids"]), "b's columns were mapped"


def test_a_source_in_another_format_is_named(tiny_dirs, files, tmp_path):
    a, _ = files
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    )
    with pytest.raises(DataError) as info:
        prepare_recipe(_recipe(tiny_dirs["gpt2"], tmp_path, [str(a), str(chat)]))
    message = str(info.value)
    assert message.startswith(f"{chat}: has no 'instruction' or 'output' column, which format 'alpaca' needs")
    assert "it looks like format 'chat', and every source of a mixture is read in data.format" in message
    assert not any((tmp_path / "cache").iterdir()), "nothing cached"


@pytest.mark.parametrize(
    ("train", "problem"),
    [
        ([{"weight": 0.5}, {"weight": 0.6}], "the weights are fractions of the mixture and must sum to 1, not 1.1"),
        ([{"weight": 1.0}, {}], "give every source of the mixture a weight, or none"),
        (
            [{"weight": 0.5, "max_samples": 3}, {"weight": 0.5}],
            "give weight (a fraction of the mixture) or max_samples",
        ),
        ([{"weight": 0}, {"weight": 1}], "data.train.weight: Input should be greater than 0"),
        ([{"weight": -0.5}, {"weight": 1.5}], "data.train.weight: Input should be greater than 0"),
        ([], "train: the list of sources is empty"),
    ],
)
def test_weights_that_make_no_sense_are_one_sentence(files, tmp_path, train, problem):
    a, _ = files
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "gpt2"}')
    recipe = {
        "model": {"name": str(model)},
        "data": {"train": [{"path": str(a), **s} for s in train]},
        "output_dir": "o",
    }
    with pytest.raises(RecipeError) as info:
        Recipe.from_dict(recipe)
    assert problem in str(info.value)
    validation = {**recipe["data"], "train": str(a), "validation": {"path": str(a), "weight": 1}}
    with pytest.raises(RecipeError, match=r"validation: weight and max_samples apply to data\.train sources only"):
        Recipe.from_dict({**recipe, "data": validation})
