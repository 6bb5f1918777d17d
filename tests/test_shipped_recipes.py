"""Every shipped recipe trains end to end — its data, columns, task and method as written — with the model swapped
for a tiny random one of the same family (the real ones are on PyPI or the hub) and the run cut to two steps."""

from __future__ import annotations

import json

import pytest
from conftest import FAMILY_OF_NAME, REPO, assert_manifest_records_the_data, run_cli

pytestmark = pytest.mark.e2e

RECIPES = sorted(p.name for p in (REPO / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_recipe_trains_on_a_tiny_model(name, tiny_dirs, tmp_path, monkeypatch):
    import yaml

    monkeypatch.chdir(REPO)  # recipes name their data relative to the repository root
    recipe = yaml.safe_load((REPO / "recipes" / name).read_text())
    family = FAMILY_OF_NAME[recipe["model"]["name"]]
    out = tmp_path / "run"
    overrides = [f"model.name={tiny_dirs[family]}", f"output_dir={out}", "training.max_steps=2"]
    overrides += ["data.max_train_samples=16", "data.max_eval_samples=4", "training.save_strategy='no'"]
    positions = json.loads((tiny_dirs[family] / "config.json").read_text()).get("n_positions")
    if positions and recipe["data"].get("max_length", 512) > positions:  # the stand-in is shorter than gpt2-medium
        overrides.append(f"data.max_length={positions}")
    if recipe["task"] == "seq2seq":
        overrides.append("generation.max_new_tokens=4")  # a random T5 never stops: keep beam search short
    method = recipe["method"] if isinstance(recipe["method"], str) else recipe["method"]["name"]
    if method == "llama_adapter":
        overrides.append("method.adapter_layers=all")  # the recipe's 8 top layers; the tiny model has 2
    if method == "adapter_fusion":  # fuse two adapters trained here from the shipped adapter recipe, as its notes say
        adapters = [tmp_path / "adapter-a", tmp_path / "adapter-b"]
        for adapter in adapters:
            code, _stdout, stderr = run_cli("train", "recipes/llama-sft-adapter.yaml", *overrides[:1], *overrides[2:],
                                            f"output_dir={adapter}")  # fmt: skip
            assert code == 0, stderr[-3000:]
        overrides.append(f"method.adapters=[{adapters[0]}, {adapters[1]}]")
    if recipe["task"] == "distill":
        overrides += _distill_inputs(recipe, family, tiny_dirs, tmp_path)
    code, _stdout, stderr = run_cli("train", f"recipes/{name}", *overrides)
    assert code == 0, stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 2
    assert_manifest_records_the_data(out)
    if recipe["task"] == "classification":
        assert 0 <= metrics["eval_accuracy"] <= 1 and "test_f1_macro" in metrics
    elif recipe["task"] == "seq2seq":
        assert 0 <= metrics["eval_rouge1"] <= 1
    elif recipe["task"] == "reward":
        assert 0 <= metrics["eval_pairwise_accuracy"] <= 1 and metrics["eval_pairwise_loss"] > 0
    elif recipe["task"] == "grpo":
        assert len(metrics["reward_curve"]) == 2 and 0 <= metrics["eval_greedy_exact_match"] <= 1
    else:
        assert metrics["eval_loss"] > 0


def _distill_inputs(recipe: dict, family: str, tiny_dirs: dict, tmp_path) -> list[str]:
    """What a distillation recipe reads from an earlier command, made here: rationales (step 1), or a teacher."""
    if recipe["data"]["format"] == "rationale":
        why = {"spam": "It offers a prize or asks for a call.", "ham": "It is a personal note."}
        lines = (REPO / "data" / "sms-spam" / "train.tsv").read_text().splitlines()[1:25]
        rows = [dict(zip(("label", "input"), line.split("\t", 1), strict=True)) for line in lines]
        path = tmp_path / "rationales.jsonl"
        path.write_text("".join(json.dumps({**row, "rationale": why[row["label"]]}) + "\n" for row in rows))
        return [f"data.train={path}"]
    if recipe["data"]["format"] == "classification":  # the teacher is a finished classifier on the same labels
        teacher = tmp_path / "teacher"
        code, _stdout, stderr = run_cli(
            "train", "recipes/bert-spam-classify.yaml", f"model.name={tiny_dirs['bert']}", f"output_dir={teacher}",
            "training.max_steps=2", "data.max_train_samples=16", "data.max_eval_samples=4",
            "training.save_strategy='no'",
        )  # fmt: skip
        assert code == 0, stderr[-3000:]
        return [f"distill.teacher={teacher}", "distill.cache_teacher_logits=false"]
    return [f"distill.teacher={tiny_dirs[family]}"]  # token-level: a model sharing the student's tokenizer


def test_every_task_has_a_shipped_recipe_or_its_own_manifest_check():
    """A task added without a recipe here must check its manifest itself (orpo and kto do, in test_dpo.py; rloo in
    test_grpo.py)."""
    import yaml

    from llmkit.recipe import TASKS

    shipped = {yaml.safe_load((REPO / "recipes" / name).read_text())["task"] for name in RECIPES}
    assert set(TASKS) == shipped | {"orpo", "kto", "rloo"}
