"""Every method through a real SFT recipe (the one code path `llmkit train` takes), with an evaluation pass between
training steps; the finished run reloads to the same logits; `llmkit merge` writes a plain transformers model."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from conftest import run_cli, sft_recipe, write_recipe
from methods_harness import SMALL
from safetensors.torch import load_file

import llmkit
from llmkit import Recipe
from llmkit.methods import METHODS
from llmkit.models import load_trained
from llmkit.recipe.matrix import supported

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_thread")]

SFT = [name for name, cls in METHODS.items() if supported(cls, "gpt2", "sft") or supported(cls, "llama", "sft")]


def _family(name: str) -> str:
    return "llama" if supported(METHODS[name], "llama", "sft") else "gpt2"


@pytest.fixture(scope="module")
def runs(tiny_dirs, instructions_small, tmp_path_factory):
    """Finished runs, trained once per (method, family, keys) and shared by the tests below."""
    done = {}

    def get(name: str, family: str | None = None, **keys) -> llmkit.RunResult:
        family = family or _family(name)
        key = (name, family, json.dumps(keys, sort_keys=True))
        if key not in done:
            out = tmp_path_factory.mktemp(name) / "run"
            recipe = sft_recipe(tiny_dirs[family], instructions_small, out, method={"name": name, **keys})
            recipe["training"].update(max_steps=4, eval_steps=2, logging_steps=2)  # evaluate between steps
            recipe["data"]["max_eval_samples"] = 8
            done[key] = llmkit.Trainer(Recipe.from_dict(recipe)).train()
        return done[key]

    return get


def _logits(model, tokenizer):
    batch = tokenizer(["Give three examples of a fruit.", "Name a colour."], return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("name", [n for n in SFT if n != "adapter_fusion"])
def test_every_method_runs_an_sft_recipe_and_reloads(name, runs, capfd):
    result = runs(name, **SMALL.get(name, {}))
    metrics = result.metrics
    trainable, total = metrics["trainable_params"], metrics["total_params"]
    assert 0 < trainable < total or (name == "full" and trainable == total)
    assert f"{name}: {trainable:,} of {total:,} parameters train" in capfd.readouterr().err
    assert metrics["train_steps"] == 4 and metrics["eval_loss"] == metrics["eval_loss"]  # not NaN
    log = [json.loads(line) for line in (result.output_dir / "train_log.jsonl").read_text().splitlines()]
    assert 2 in [e["step"] for e in log if "eval_loss" in e], "evaluation ran between training steps"

    trained = load_trained(result.output_dir)
    got, want = _logits(trained.model, trained.tokenizer), _logits(result.model, trained.tokenizer)
    if name == "adalora":  # pruned ranks reload as smaller matrices: the same sums in another order
        assert torch.allclose(got, want, atol=1e-5, rtol=0)
    else:
        assert torch.equal(got, want)


def test_adalora_reallocates_ranks_inside_the_real_trainer(runs):
    result = runs("adalora", **SMALL["adalora"])
    pattern = json.loads((result.output_dir / "adapter_config.json").read_text())["rank_pattern"]
    assert pattern, "the Trainer never called update_and_allocate"
    assert sum(sum(mask) for mask in pattern.values()) == 2 * len(pattern)  # target_r on average


def test_adapter_fusion_over_two_adapter_runs(tiny_dirs, instructions_small, tmp_path, runs):
    first = runs("adapter", **SMALL["adapter"]).output_dir
    second = runs("adapter", **SMALL["adapter"], activation="gelu").output_dir
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "fusion")
    recipe["method"] = {"name": "adapter_fusion", "adapters": [str(first), str(second)]}
    recipe["training"]["max_steps"] = 3
    code, _, err = run_cli("train", str(write_recipe(tmp_path, recipe)))
    assert code == 0, err
    trained = load_trained(tmp_path / "fusion")
    assert (tmp_path / "fusion" / "fusion_adapters.json").is_file()
    fused = trained.model.model.layers[0].mlp.down_proj.llmkit_adapter
    assert len(fused.adapters) == 2
    for index, run in enumerate((first, second)):  # the fused adapters stayed frozen: exactly as their runs saved them
        saved = load_file(run / "llmkit_weights.safetensors")["model.layers.0.mlp.down_proj.llmkit_adapter.up.weight"]
        assert torch.equal(fused.adapters[index].up.weight, saved)

    recipe["method"]["adapters"] = [str(first), str(tmp_path / "fusion")]
    recipe["output_dir"] = str(tmp_path / "again")
    code, _, err = run_cli("train", str(write_recipe(tmp_path, recipe)))
    assert code == 2 and "was trained with method adapter_fusion, not adapter" in err
    assert not (tmp_path / "again.incomplete").exists()


# Merged vs unmerged logits, float32. QLoRA's unmerged forward computes in bfloat16 (its default compute dtype).
MERGES = {
    "lora": ("llama", SMALL["lora"], 1e-4),
    "dora": ("gpt2", {**SMALL["lora"], "use_dora": True}, 1e-4),
    "rslora": ("llama", {**SMALL["lora"], "use_rslora": True}, 1e-4),
    "qlora-gpt2": ("gpt2", SMALL["qlora"], 3e-2),
    "qlora-llama-float32": ("llama", {**SMALL["qlora"], "bnb_4bit_compute_dtype": "float32"}, 1e-4),
    "adalora": ("llama", SMALL["adalora"], 1e-4),
    "ia3": ("gpt2", {}, 1e-4),
    "bitfit": ("gpt2", {}, 1e-4),
}


@pytest.mark.parametrize("label", list(MERGES))
def test_merge_writes_a_plain_transformers_model_with_the_same_logits(label, runs, tmp_path):
    family, keys, atol = MERGES[label]
    name = label.split("-")[0] if label.split("-")[0] in METHODS else "lora"
    result = runs(name, family, **keys)
    code, out, err = run_cli("merge", str(result.output_dir), "--output", str(tmp_path / "merged"))
    assert code == 0, err
    assert f"output: {tmp_path / 'merged'}" in out
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    unmerged = load_trained(result.output_dir)
    got, want = _logits(plain, unmerged.tokenizer), _logits(unmerged.model, unmerged.tokenizer)
    assert torch.allclose(got, want, atol=atol, rtol=0), f"differ by {(got - want).abs().max():.1e}"


def test_merge_says_what_cannot_merge(runs, tmp_path):
    run = runs("prefix_tuning", **SMALL["prefix_tuning"]).output_dir
    code, _, err = run_cli("merge", str(run), "--output", str(tmp_path / "m"))
    assert code == 2 and "method prefix_tuning cannot be merged: its prefixes are extra attention keys" in err
    run = runs("full").output_dir
    code, _, err = run_cli("merge", str(run), "--output", str(tmp_path / "m"))
    assert code == 2 and "already is a complete model" in err
    code, _, err = run_cli("merge", str(tmp_path), "--output", str(tmp_path / "m"))
    assert code == 2 and "is not a finished llmkit run" in err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    code, _, err = run_cli("merge", str(runs("lora", **SMALL["lora"]).output_dir), "--output", str(tmp_path / "taken"))
    assert code == 2 and "already exists and is not empty" in err
    assert not (tmp_path / "m").exists()


def test_merge_writes_the_dtype_asked_for_and_by_default_the_base_models(runs, tmp_path):
    """A merged SmolLM2 (published in bfloat16) is not written in float32 at twice the size."""
    from safetensors.torch import load_file

    from llmkit.families import declared_dtype

    result = runs("lora", "llama", **SMALL["lora"])
    out = tmp_path / "bf16"
    code, stdout, err = run_cli("merge", str(result.output_dir), "--output", str(out), "--dtype", "bfloat16")
    assert code == 0 and stdout.strip() == f"output: {out} (bfloat16)", err
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.bfloat16}
    assert transformers.AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16

    assert declared_dtype(str(result.output_dir.parent.parent)) is None  # no config.json: not a model
    assert declared_dtype("packaged:smollm2-135m-instruct") == "bfloat16"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"model_type": "llama", "torch_dtype": "bfloat16"}')
    assert declared_dtype(str(tmp_path / "m")) == "bfloat16"
