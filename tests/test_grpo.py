"""`task: grpo` on tiny models: a reward that favours one token rises, rewards get the columns TRL passes, the KL
reference stays frozen (under LoRA it is the base with the adapter disabled: one copy), a resumed run equals an
uninterrupted one, llmkit's greedy completions end where TRL's do, and bad input is one sentence."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from conftest import (
    assert_manifest_records_the_data,
    count_model_loads,
    interrupted_at_step,
    run_cli,
    train_fails,
    write_recipe,
)
from toy import write_jsonl
from transformers import AutoModelForCausalLM

import llmkit
from llmkit import Recipe, models
from llmkit.models import load_trained
from llmkit.rewards import greedy
from llmkit.tasks import grpo as grpo_runner
from llmkit.testing import save_tiny

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_thread")]

COLOURS = ["red", "blue", "green", "gold", "grey", "pink", "teal", "white"]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    """Short prompts, each with an answer column and one more column the rewards should also receive."""
    rows = [{"prompt": f"Name colour number {i}.", "answer": COLOURS[i % 8], "level": i % 3} for i in range(24)]
    return write_jsonl(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", rows)


def grpo_recipe(model_dir, data, output_dir, rewards, **grpo) -> dict:
    return {
        "task": "grpo",
        "model": {"name": str(model_dir)},
        "data": {"train": str(data), "format": "prompt", "max_length": 32, "validation_split": 0.25},
        "method": "full",
        "grpo": {"num_generations": 4, "max_completion_length": 8, "rewards": rewards, **grpo},
        "training": {"max_steps": 3, "per_device_train_batch_size": 8, "learning_rate": 1e-3, "save_strategy": "no",
                     "seed": 0},
        "output_dir": str(output_dir),
    }  # fmt: skip


def _reward_file(tmp_path, body: str, name: str = "rewards.py") -> str:
    (tmp_path / name).write_text(body)
    return name  # the tests run in tmp_path, so a relative reference works as in a user's project


RECORDING = """
import json

def recording(prompts, completions, completion_ids, **kwargs):
    with open("calls.jsonl", "a") as f:
        f.write(json.dumps({"prompts": prompts, "completions": completions, "completion_ids": completion_ids,
                            "columns": {k: v for k, v in kwargs.items() if isinstance(v, list)},
                            "keys": sorted(kwargs),
                            "step": getattr(kwargs["trainer_state"], "global_step", None)}) + "\\n")
    return [0.0] * len(completions)
"""


def test_rewards_receive_the_columns_trl_passes_in_training_and_in_the_greedy_evaluation(tiny_dirs, prompts, tmp_path):
    reference = _reward_file(tmp_path, RECORDING) + ":recording"
    recipe = grpo_recipe(tiny_dirs["llama"], prompts, tmp_path / "run", [{"function": reference}])
    recipe["training"]["max_steps"] = 1
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    before, step, after = calls  # greedy held-out, one training batch, greedy held-out again
    assert step["step"] == 0 and before["step"] is None and after["step"] is None
    for call, n in ((step, 8), (before, 6), (after, 6)):  # 2 prompts × 4 generations; the 6 held-out prompts
        assert {"answer", "level", "trainer_state", "log_extra", "log_metric"} <= set(call["keys"]), call["keys"]
        assert len(call["prompts"]) == len(call["completions"]) == len(call["completion_ids"]) == n
        assert len(call["columns"]["answer"]) == len(call["columns"]["level"]) == n
        # the tiny tokenizer has a chat template: a text prompt became a user turn, completions are assistant turns
        assert call["prompts"][0][-1]["role"] == "user" and call["completions"][0][0]["role"] == "assistant"
        texts = result.tokenizer.batch_decode(call["completion_ids"], skip_special_tokens=True)
        assert [c[0]["content"] for c in call["completions"]] == texts
    rows = [json.loads(line) for line in prompts.read_text().splitlines()]
    by_prompt = {row["prompt"]: row for row in rows}
    for prompt, answer, level in zip(step["prompts"], step["columns"]["answer"], step["columns"]["level"], strict=True):
        assert (by_prompt[prompt[-1]["content"]]["answer"], by_prompt[prompt[-1]["content"]]["level"]) == (
            answer,
            level,
        )
    assert Counter(p[-1]["content"] for p in step["prompts"]).most_common()[0][1] == 4, "4 completions per prompt"
    manifest = json.loads((result.output_dir / "manifest.json").read_text())
    assert manifest["rewards"][0]["function"] == reference and len(manifest["rewards"][0]["sha256"]) == 64


def test_completions_end_where_trls_do(tiny_dirs, prompts, tmp_path):
    """TRL generating greedily (generation_kwargs) hands its rewards exactly the completions llmkit's greedy
    evaluation makes from the same model: cut after the first stop token, which is kept."""
    reference = _reward_file(tmp_path, RECORDING) + ":recording"
    recipe = grpo_recipe(tiny_dirs["llama"], prompts, tmp_path / "run", [{"function": reference}],
                         generation_kwargs={"do_sample": False}, max_completion_length=12)  # fmt: skip
    recipe["training"]["max_steps"] = 1
    llmkit.Trainer(Recipe.from_dict(recipe)).train()
    step = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()][1]
    assert step["step"] == 0  # generated by the model before its first update: the base model
    base = models.load_tokenizer(
        models.resolve_base(Recipe.from_dict(recipe).model, Recipe.from_dict(recipe).model_ref())
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    model.generation_config.pad_token_id = base.pad_token_id
    ids, completions = greedy.complete(model, base, step["prompts"], max_new_tokens=12)
    assert ids == step["completion_ids"] and completions == step["completions"]
    stop = base.eos_token_id
    assert any(len(c) < 12 and c[-1] == stop for c in ids), "some completion stopped early, so the cut is exercised"


FAVOURED = """
def favoured(completion_ids, **kwargs):
    return [sum(t == {token} for t in ids) / max(len(ids), 1) for ids in completion_ids]
"""


def nudged_llama(directory, token: int):
    """The tiny llama, with token's output row pointed along the mean final hidden state: untrained, it samples the
    token about one time in seven (a random tiny model samples each of its 600 tokens about equally, so a reward for
    one of them would almost always be 0 and GRPO would have no signal to learn from)."""
    save_tiny("llama", directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    inputs = torch.randint(5, 590, (32, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mean = model.model(inputs).last_hidden_state.reshape(-1, model.config.hidden_size).mean(0)
        model.lm_head.weight[token] = 1.5 * mean / mean.norm() ** 2
    model.save_pretrained(directory)
    return directory


def test_grpo_raises_a_reward_that_favours_one_token(prompts, tmp_path):
    token = 477
    reference = _reward_file(tmp_path, FAVOURED.format(token=token)) + ":favoured"
    model = nudged_llama(tmp_path / "llama", token)
    recipe = grpo_recipe(model, prompts, tmp_path / "run", [{"function": reference}], beta=0.05)
    recipe["training"].update(max_steps=8, learning_rate=2e-3)
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    curve = result.metrics["reward_curve"]
    assert [point["step"] for point in curve] == list(range(1, 9)), "every step is logged"
    means = [point["rewards/favoured/mean"] for point in curve]
    assert sum(means[-3:]) / 3 > sum(means[:3]) / 3 + 0.3, means
    assert result.metrics["eval_greedy_favoured"] > result.metrics["eval_greedy_favoured_before"]
    for key in ("rewards/favoured/std", "kl", "completions/mean_length", "reward", "reward_std"):
        assert all(key in point for point in curve), key
    assert result.metrics["train_kl"] > 0 and result.metrics["train_rewards/favoured/mean"] == means[-1]
    on_disk = json.loads((result.output_dir / "metrics.json").read_text())
    assert on_disk["reward_curve"] == curve
    # the finished run, reloaded: llmkit eval repeats the greedy measurement; llmkit generate answers a prompt
    code, stdout, stderr = run_cli("eval", str(result.output_dir), "--split", "validation")
    assert code == 0, stderr
    assert json.loads(stdout)["eval_greedy_favoured"] == result.metrics["eval_greedy_favoured"]
    code, stdout, stderr = run_cli(
        "generate", str(result.output_dir), "--prompt", "Name a colour.", "--max-new-tokens", "4"
    )
    assert code == 0 and stdout.strip(), stderr


@pytest.mark.parametrize("task", ["grpo", "rloo"])
def test_under_lora_the_reference_is_the_base_with_the_adapter_disabled(
    task, tiny_dirs, prompts, tmp_path, monkeypatch
):
    loads = count_model_loads(monkeypatch)
    recipe = grpo_recipe(tiny_dirs["llama"], prompts, tmp_path / "run", [{"regex": "e"}], beta=0.1)
    recipe["task"], recipe[task] = task, recipe.pop("grpo")  # RLOO: the same runner, rewards and data
    recipe["method"] = {"name": "lora", "r": 8, "target_modules": "all-linear", "lora_dropout": 0.0}
    recipe["training"].update(max_steps=4, learning_rate=2e-2)
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    assert loads == ["causal_lm"], "one copy of the weights: no separate reference model"
    assert "ref" not in result.model.peft_config, "TRL's copy of the fresh adapter was dropped"
    assert_manifest_records_the_data(result.output_dir)
    assert result.metrics["train_kl"] != 0, "the policy moved away from the reference (RLOO's estimate may be < 0)"
    base = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).state_dict()
    under = result.model.get_base_model().state_dict()
    frozen = {name.replace(".base_layer", ""): v for name, v in under.items() if "lora_" not in name}
    assert frozen.keys() == base.keys()
    assert all(torch.equal(frozen[name], value) for name, value in base.items()), "the reference never changed"


def test_full_grpo_reference_stays_frozen(tiny_dirs, prompts, tmp_path, monkeypatch):
    seen = {}
    real = grpo_runner.reference

    def capture(trainer, probe_ids):
        seen["ref"], seen["before"] = (
            trainer.ref_model,
            {k: v.clone() for k, v in trainer.ref_model.state_dict().items()},
        )
        return real(trainer, probe_ids)

    monkeypatch.setattr(grpo_runner, "reference", capture)
    recipe = grpo_recipe(tiny_dirs["llama"], prompts, tmp_path / "run", [{"regex": "e"}], beta=0.1)
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    after = seen["ref"].state_dict()
    assert all(torch.equal(seen["before"][k], after[k]) for k in after)
    assert not any(p.requires_grad for p in seen["ref"].parameters())
    trained = load_trained(result.output_dir).model.state_dict()
    assert any(not torch.equal(trained[k], after[k]) for k in after), "the policy moved"


def test_resume_equals_an_uninterrupted_run(tiny_dirs, prompts, tmp_path, monkeypatch):
    def recipe(out):
        r = grpo_recipe(tiny_dirs["llama"], prompts, out, [{"regex": "e"}], beta=0.05)
        r["method"] = {"name": "lora", "r": 4, "target_modules": "all-linear", "lora_dropout": 0.0}
        r["data"]["validation_split"] = 0
        r["training"].update(max_steps=4, save_strategy="steps", save_steps=2, learning_rate=1e-2)
        return r

    straight = llmkit.Trainer(Recipe.from_dict(recipe(tmp_path / "straight"))).train()
    with interrupted_at_step(monkeypatch, 3):
        llmkit.Trainer(Recipe.from_dict(recipe(tmp_path / "resumed"))).train()
    assert (tmp_path / "resumed.incomplete" / "checkpoints" / "checkpoint-2").is_dir()
    result = llmkit.Trainer(
        Recipe.from_dict(recipe(tmp_path / "resumed"), ["training.resume_from_checkpoint=true"])
    ).train()
    assert result.metrics["train_steps"] == 4
    a, b = (load_trained(run).model.state_dict() for run in (straight.output_dir, result.output_dir))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    curve = {point["step"]: point["reward"] for point in straight.metrics["reward_curve"]}
    assert result.metrics["reward_curve"][-1]["reward"] == pytest.approx(curve[4], abs=1e-6), (
        "same samples after resume"
    )


def test_a_finished_reward_run_is_a_reward(tiny_dirs, prompts, tmp_path):
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": f"Colour {i}?", "chosen": "blue", "rejected": "no"} for i in range(16)]
    )
    reward_run = tmp_path / "rm"
    rm = {
        "task": "reward",
        "model": {"name": str(tiny_dirs["llama"])},
        "data": {"train": str(pairs), "format": "preference", "validation_split": 0},
        "method": "full",
        "training": {"max_steps": 2, "per_device_train_batch_size": 8, "save_strategy": "no"},
        "output_dir": str(reward_run),
    }
    llmkit.Trainer(Recipe.from_dict(rm)).train()
    recipe = grpo_recipe(
        tiny_dirs["llama"], prompts, tmp_path / "policy", [{"reward_model": str(reward_run), "weight": 2}]
    )
    recipe["training"]["max_steps"] = 1
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    assert "rewards/reward_model/mean" in result.metrics["reward_curve"][0]
    assert result.metrics["eval_greedy_reward"] == pytest.approx(
        2 * result.metrics["eval_greedy_reward_model"], rel=1e-5
    )
    record = json.loads((result.output_dir / "manifest.json").read_text())["rewards"][0]
    assert record["reward_model"] == str(reward_run) and len(record["sha256"]) == 64

    from llmkit.testing import gpt2_tokenizer  # the same run, but its tokenizer is another model's

    gpt2_tokenizer().save_pretrained(reward_run)
    code, stderr = train_fails(
        tmp_path, grpo_recipe(tiny_dirs["llama"], prompts, tmp_path / "run", [{"reward_model": str(reward_run)}])
    )
    assert code == 2 and f"grpo.rewards.0: reward_model '{reward_run}' was trained with another tokenizer" in stderr


# ---------------------------------------------------------------- bad input: one sentence, nothing written


def test_a_reward_that_raises_or_miscounts_stops_the_run_naming_it_and_the_batch(tiny_dirs, prompts, tmp_path):
    _reward_file(tmp_path, "def boom(completions, **kwargs):\n    raise ValueError('no answer column')\n"
                 "def short(completions, **kwargs):\n    return [1.0]\n")  # fmt: skip
    recipe = grpo_recipe(tiny_dirs["llama"], prompts, tmp_path / "run", [{"function": "rewards.py:boom"}])
    recipe["data"]["validation_split"] = 0
    code, stderr = train_fails(tmp_path, recipe)
    assert (
        code == 1
        and "error: reward function rewards.py:boom raised ValueError: no answer column — at training step 1, on a "
        "batch of 8 completions whose first prompt is 'Name colour number"
        in stderr
    )
    recipe["grpo"]["rewards"] = [{"function": "rewards.py:short"}]
    code, stderr = train_fails(tmp_path, recipe)
    assert (
        "reward function rewards.py:short returned 1 values for 8 completions; it must return one float per completion"
        in stderr
    )


def test_bad_input_is_refused_before_any_model_loads(tiny_dirs, prompts, tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model loaded")

    monkeypatch.setattr(models, "load_model", no_model)
    code, stderr = train_fails(
        tmp_path, grpo_recipe(tiny_dirs["llama"], prompts, tmp_path / "run", [{"exact_match": "solution"}])
    )
    assert code == 3 and "18 rows have no 'solution', which the exact_match reward compares the answer with" in stderr
    mixed = write_jsonl(
        tmp_path / "mixed.jsonl", [{"prompt": "1 + 1?", "answer": 2}, {"prompt": "Hi?", "answer": "hi"}]
    )
    recipe = grpo_recipe(tiny_dirs["llama"], mixed, tmp_path / "run", [{"regex": "e"}])
    recipe["data"]["validation_split"] = 0
    code, stderr = train_fails(tmp_path, recipe)
    assert code == 3 and "mixed.jsonl:2: 'answer' is a text here but a number in earlier rows" in stderr
    _reward_file(tmp_path, "import numpy.not_there\n", "broken.py")
    code, stderr = train_fails(
        tmp_path, grpo_recipe(tiny_dirs["llama"], prompts, tmp_path / "run", [{"function": "broken.py:f"}])
    )
    assert code == 2 and "grpo.rewards.0: cannot import 'broken.py:f': ModuleNotFoundError" in stderr
    code, stderr = train_fails(
        tmp_path, grpo_recipe(tiny_dirs["llama"], prompts, tmp_path / "run", [{"regex": "e"}], num_generations=3)
    )
    assert (
        code == 2 and "grpo.num_generations: 3 completions per prompt do not divide the generation batch of 8" in stderr
    )
    code, _stdout, stderr = run_cli(
        "validate",
        str(write_recipe(tmp_path, grpo_recipe(tiny_dirs["bert"], prompts, tmp_path / "run", [{"regex": "e"}]))),
    )
    assert code == 2 and "task: 'grpo' cannot run on a bert model" in stderr
