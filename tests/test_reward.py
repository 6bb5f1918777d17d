"""`task: reward` on tiny models: a reward model learns a separable preference (decoder under LoRA, encoder in full),
its held-out pairwise accuracy and margin are measured over every pair before and after, and `llmkit eval` /
`llmkit predict` score text the way training rendered it."""

from __future__ import annotations

import json
import random

import pytest
from conftest import assert_manifest_records_the_data, run_cli, train_fails
from toy import NEG, NOUNS, POS, write_jsonl

import llmkit
from llmkit import Recipe
from llmkit.data.reward import reward_ids
from llmkit.models import load_trained
from llmkit.rewards.model import score_ids

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_thread")]


def preference_rows(n: int, seed: int) -> list[dict]:
    """A neutral prompt; the chosen answer is made of kind words, the rejected one of unkind words."""
    rng = random.Random(seed)

    def words(pool: list[str]) -> str:
        return " ".join(rng.choice(pool) for _ in range(rng.randint(2, 5)))

    return [{"prompt": f"Say something about the {words(NOUNS)}.", "chosen": words(POS), "rejected": words(NEG)}
            for _ in range(n)]  # fmt: skip


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    return {
        "train": write_jsonl(root / "train.jsonl", preference_rows(64, 0)),
        "validation": write_jsonl(root / "validation.jsonl", preference_rows(16, 1)),
    }


def reward_recipe(model_dir, pairs, output_dir, **overrides) -> dict:
    recipe = {
        "task": "reward",
        "model": {"name": str(model_dir)},
        "data": {"train": str(pairs["train"]), "validation": str(pairs["validation"]), "format": "preference",
                 "max_length": 48},
        "method": {"name": "lora", "r": 8, "target_modules": "all-linear", "lora_dropout": 0.0},
        "training": {"max_steps": 16, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8,
                     "learning_rate": 1e-2, "logging_steps": 4, "save_strategy": "no", "seed": 0},
        "output_dir": str(output_dir),
    }  # fmt: skip
    recipe.update(overrides)
    return recipe


@pytest.fixture(scope="module")
def llama_run(tiny_dirs, pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("reward") / "run"
    return llmkit.Trainer(Recipe.from_dict(reward_recipe(tiny_dirs["llama"], pairs, out))).train()


def _learnt(metrics: dict) -> None:
    """Over every held-out pair: the chosen answer now outscores the rejected one, by a wider margin than before,
    and the loss RewardTrainer minimises fell."""
    assert metrics["eval_pairwise_accuracy"] == 1.0 > metrics["eval_pairwise_accuracy_before"]
    assert metrics["eval_mean_margin"] > metrics["eval_mean_margin_before"] + 0.2
    assert metrics["eval_pairwise_loss"] < metrics["eval_pairwise_loss_before"] - 0.1


def test_a_decoder_reward_model_learns_a_separable_preference_under_lora(llama_run):
    _learnt(llama_run.metrics)
    trainable = [name for name, p in llama_run.model.named_parameters() if p.requires_grad]
    assert any("score" in name for name in trainable), "the new one-output head trains with the adapter"
    assert llama_run.model.config.num_labels == 1
    assert_manifest_records_the_data(llama_run.output_dir)


def test_an_encoder_reward_model_reads_prompt_and_answer_as_a_pair(tiny_dirs, pairs, tmp_path):
    recipe = reward_recipe(tiny_dirs["bert"], pairs, tmp_path / "run", method="full")
    recipe["training"].update(learning_rate=3e-3, eval_strategy="steps", eval_steps=16)  # TRL evaluates too
    result = llmkit.Trainer(Recipe.from_dict(recipe)).train()
    metrics = result.metrics
    _learnt(metrics)
    # llmkit's held-out loss is TRL's (16 pairs in two equal batches, so TRL's mean of batch means is the same)
    for suffix in ("_before", ""):
        assert metrics[f"eval_pairwise_loss{suffix}"] == pytest.approx(metrics[f"eval_loss{suffix}"], abs=1e-5)
        assert metrics[f"eval_pairwise_accuracy{suffix}"] == pytest.approx(metrics[f"eval_accuracy{suffix}"])
    ids = reward_ids("Say hi.", "good", result.tokenizer, encoder=True)
    assert result.tokenizer.convert_ids_to_tokens(ids).count("[SEP]") == 2, "[CLS] prompt [SEP] answer [SEP]"


def test_eval_and_predict_score_text_as_training_rendered_it(llama_run, pairs, tiny_dirs, tmp_path):
    run = str(llama_run.output_dir)  # eval and predict read the run's own recipe.yaml
    code, stdout, stderr = run_cli("eval", run, "--split", "validation")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["eval_pairwise_accuracy"] == llama_run.metrics["eval_pairwise_accuracy"]
    assert report["eval_mean_margin"] == pytest.approx(llama_run.metrics["eval_mean_margin"], abs=1e-5)

    rows = [
        {"prompt": "Say something about the moon.", "response": "kind warm love"},
        {"prompt": "Say something about the moon.", "response": "cruel cold hate"},
        {"prompt": "Say something about the tree.", "chosen": "sad poor", "rejected": "happy nice"},
    ]
    source, target = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    code, _stdout, stderr = run_cli("predict", run, "--input", str(source), "--output", str(target))
    assert code == 0, stderr
    out = [json.loads(line) for line in target.read_text().splitlines()]
    assert out[0]["score"] > out[1]["score"]
    assert out[2]["prefers"] == "rejected" and out[2]["rejected_score"] > out[2]["chosen_score"]
    trained = load_trained(run)  # the score is the model's output on prompt + answer + EOS, as in training
    ids = reward_ids(rows[0]["prompt"], rows[0]["response"], trained.tokenizer, encoder=False)
    assert ids[-1] == trained.tokenizer.eos_token_id
    assert out[0]["score"] == pytest.approx(
        score_ids(trained.model, [ids], trained.tokenizer.pad_token_id)[0], abs=1e-5
    )


def test_a_row_without_an_answer_to_score_is_named(llama_run, pairs, tiny_dirs, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "Say hi.", "response": "hi"}, {"prompt": "Say hi."}])
    code, _stdout, stderr = run_cli("predict", str(llama_run.output_dir), "--input", str(source), "--output",
                                    str(tmp_path / "out.jsonl"))  # fmt: skip
    assert code == 3 and "in.jsonl:2: row has no 'response' to score" in stderr


def test_an_encoder_is_not_given_a_chat_template(tiny_dirs, pairs, tmp_path):
    recipe = reward_recipe(tiny_dirs["bert"], pairs, tmp_path / "run", method="full")
    recipe["data"]["template"] = "chat"
    code, stderr = train_fails(tmp_path, recipe)
    assert code == 2 and "data.template: chat renders a chat template, which bert models do not have" in stderr
