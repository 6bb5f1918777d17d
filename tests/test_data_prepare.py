"""The Arrow data path gives the examples the list path gave (tests/data_reference.py), token for token and label for
label, for every shipped recipe's data on the tiny stand-in model of its family: every task's formats, the held-out
carve-out, test splits, where each example came from, the manifest's record, packing, and worker processes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import FAMILY_OF_NAME, REPO
from data_reference import examples as reference
from data_reference import kind_of, pack

from llmkit import Recipe
from llmkit.prepare import prepare_recipe


def _distinct_data() -> list[str]:
    """One shipped recipe per distinct (data path, data section, model family): the llama-sft-* recipes share one."""
    seen, names = set(), []
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        family = FAMILY_OF_NAME[recipe["model"]["name"]]
        fingerprint = json.dumps([recipe["task"], recipe["data"], family], sort_keys=True)
        if fingerprint not in seen:
            seen.add(fingerprint)
            names.append(path.name)
    return names


def _recipe(name: str, tiny_dirs: dict, tmp_path, *overrides: str) -> Recipe:
    raw = yaml.safe_load((REPO / "recipes" / name).read_text())
    family = FAMILY_OF_NAME[raw["model"]["name"]]
    extra = [f"model.name={tiny_dirs[family]}", f"data.cache_dir={tmp_path / 'cache'}", "method=full"]
    extra.append(f"output_dir={tmp_path / 'run'}")
    positions = json.loads((tiny_dirs[family] / "config.json").read_text()).get("n_positions")
    if positions and raw["data"].get("max_length", 512) > positions:
        extra.append(f"data.max_length={positions}")
    if raw["task"] == "distill" and raw["data"]["format"] == "rationale":
        extra.append(f"data.train={_rationales(tmp_path)}")
    elif raw["task"] == "distill":
        extra.append(f"distill.teacher={tiny_dirs[family]}")
    return Recipe.from_yaml(REPO / "recipes" / name, [*extra, *overrides])


def _rationales(tmp_path):
    """What `llmkit rationales` writes for the SMS data (step 1 of rationale distillation)."""
    why = {"spam": "It offers a prize or asks for a call.", "ham": "It is a personal note."}
    lines = (REPO / "data" / "sms-spam" / "train.tsv").read_text().splitlines()[1:121]
    rows = [dict(zip(("label", "input"), line.split("\t", 1), strict=True)) for line in lines]
    path = tmp_path / "rationales.jsonl"
    path.write_text("".join(json.dumps({**row, "rationale": why[row["label"]]}) + "\n" for row in rows))
    return path


def plain(value):
    """Arrays and Arrow's lists alike, as Python values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {key: plain(v) for key, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def assert_same(prepared, expected: dict) -> None:
    got = {"train": (prepared.train, prepared.train_where)}
    if prepared.held_out is not None:
        got["validation"] = (prepared.held_out, prepared.held_out_where)
    if prepared.test is not None:
        got["test"] = (prepared.test, None)
    assert set(got) == set(expected)
    for split, (examples, where) in got.items():
        built, origins, record = expected[split]
        assert len(examples) == len(built) > 0, split
        assert plain(examples.to_list()) == plain(built), f"{split}: examples differ"
        if where is not None:
            assert list(where) == origins, f"{split}: where the examples came from differs"
        assert prepared.sources[split] == record, split


@pytest.mark.parametrize("name", _distinct_data())
def test_shipped_recipe_data_is_the_same_token_for_token(name, tiny_dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # recipes name their data relative to the repository root
    env, tokenizer, prepared = prepare_recipe(_recipe(name, tiny_dirs, tmp_path))
    assert_same(prepared, reference(env, tokenizer))


def test_packing_and_worker_processes_give_the_same_rows(tiny_dirs, tmp_path, monkeypatch):
    from llmkit.data.prepared import packed

    monkeypatch.chdir(REPO)
    recipe = _recipe("quickstart.yaml", tiny_dirs, tmp_path, "data.packing=true", "data.num_proc=2")
    assert kind_of(recipe) == "sft"
    env, tokenizer, prepared = prepare_recipe(recipe)
    expected = reference(env, tokenizer)
    assert_same(prepared, expected)  # encoded by two worker processes
    train, held_out = packed(prepared, recipe.data.max_length, num_proc=2)
    assert train.to_list() == pack(plain(expected["train"][0]), recipe.data.max_length)
    assert held_out.to_list() == pack(plain(expected["validation"][0]), recipe.data.max_length)
    again, _ = packed(prepared, recipe.data.max_length)  # read back from the cache entry
    assert again.to_list() == train.to_list()
