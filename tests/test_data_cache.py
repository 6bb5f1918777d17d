"""Tokenise once: a second preparation reads the cache without tokenising; any change to what makes an example (a byte
of the data, the chat template, max_length) misses it; a damaged entry is rebuilt with a note; an unwritable cache
is one sentence; a failed preparation leaves nothing behind; `llmkit prepare` says where it wrote and how big."""

from __future__ import annotations

import shutil

import pytest
from conftest import run_cli, sft_recipe, write_recipe

from llmkit import DataError, Recipe
from llmkit.prepare import prepare_recipe


def _recipe(model, data, tmp_path, **data_keys) -> Recipe:
    recipe = sft_recipe(model, data, tmp_path / "run")
    recipe["data"].update({"cache_dir": str(tmp_path / "cache"), "max_length": 128, **data_keys})
    return Recipe.from_dict(recipe)


def _entries(tmp_path) -> set[str]:
    return {p.name for p in (tmp_path / "cache").iterdir()} if (tmp_path / "cache").is_dir() else set()


def _examples(prepared) -> list:
    return prepared.train.to_list() + prepared.held_out.to_list()


def test_second_preparation_reads_the_cache_without_tokenising(tiny_dirs, instructions_small, tmp_path, capsys):
    recipe = _recipe(tiny_dirs["llama"], instructions_small, tmp_path)
    _, _, first = prepare_recipe(recipe)
    assert "cached in" in capsys.readouterr().err

    import llmkit.tasks.sft

    def no_tokenising(*args, **kwargs):
        raise AssertionError("a cached preparation must not tokenise")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(llmkit.tasks.sft, "build_examples", no_tokenising)
        _, _, second = prepare_recipe(recipe)
    err = capsys.readouterr().err
    assert f"read from the cache in {first.entry}" in err
    assert "train: 64 examples from 64 rows" in err, "the counts are shown again"
    assert second.entry == first.entry and _examples(second) == _examples(first)
    assert list(second.train_where) == list(first.train_where)
    assert second.sources == first.sources


def test_any_change_to_what_makes_an_example_misses_the_cache(tiny_dirs, instructions_small, tmp_path):
    data = tmp_path / "rows.json"
    shutil.copy(instructions_small, data)
    model = tmp_path / "model"
    shutil.copytree(tiny_dirs["llama"], model)
    prepare_recipe(_recipe(model, data, tmp_path))
    prepare_recipe(_recipe(model, data, tmp_path))
    assert len(_entries(tmp_path)) == 1, "unchanged: a hit"

    text = data.read_text()
    data.write_text(text.replace("a", "b", 1))  # one byte
    prepare_recipe(_recipe(model, data, tmp_path))
    assert len(_entries(tmp_path)) == 2

    template = model / "chat_template.jinja"  # the recipe's template: auto, so rows render with this one
    template.write_text(template.read_text().replace("<|im_start|>", "<|im_start|> "))
    prepare_recipe(_recipe(model, data, tmp_path))
    assert len(_entries(tmp_path)) == 3
    prepare_recipe(_recipe(model, data, tmp_path, max_length=127))
    assert len(_entries(tmp_path)) == 4


def test_a_damaged_entry_is_rebuilt_with_a_note(tiny_dirs, instructions_small, tmp_path, capsys):
    recipe = _recipe(tiny_dirs["llama"], instructions_small, tmp_path)
    _, _, first = prepare_recipe(recipe)
    expected = _examples(first)
    arrow = first.entry / "train.arrow"
    arrow.write_bytes(arrow.read_bytes()[:200])  # cut short, as by a full disk
    capsys.readouterr()
    _, _, again = prepare_recipe(recipe)
    assert "is damaged" in capsys.readouterr().err
    assert _examples(again) == expected
    (again.entry / "meta.json").write_text("{not json")
    _, _, third = prepare_recipe(recipe)
    assert "is damaged" in capsys.readouterr().err and _examples(third) == expected


def test_an_unwritable_cache_dir_is_one_sentence_and_writes_nothing(tiny_dirs, instructions_small, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run")
    recipe["data"]["cache_dir"] = str(blocker / "cache")
    code, _out, err = run_cli("prepare", str(write_recipe(tmp_path, recipe)))
    assert code == 2 and "Traceback" not in err
    assert f"data.cache_dir: cannot write prepared data to '{blocker / 'cache'}'" in err
    assert err.count("\n") == 1 and blocker.is_file()


def test_a_failed_preparation_leaves_nothing_half_written(tiny_dirs, instructions_small, tmp_path):
    recipe = _recipe(tiny_dirs["llama"], instructions_small, tmp_path, max_length=16, overlong="error")
    with pytest.raises(DataError, match=r"instructions.json\[row \d+\]: is \d+ tokens, longer than data.max_length"):
        prepare_recipe(recipe)
    assert _entries(tmp_path) == set(), "no entry, and no unfinished one"


def test_prepare_command_says_where_it_wrote_and_how_big(tiny_dirs, instructions_small, tmp_path):
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run")
    recipe["data"]["cache_dir"] = str(tmp_path / "cache")
    code, out, err = run_cli("prepare", str(write_recipe(tmp_path, recipe)))
    assert code == 0, err
    (entry,) = (tmp_path / "cache").iterdir()
    assert out.startswith(f"prepared: {entry} (") and "examples: train 64, held-out 16" in out
    assert "KB" in out and not (tmp_path / "run").exists(), "prepare writes no run"
