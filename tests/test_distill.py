"""Knowledge distillation: the loss against a hand-computed value, the teacher frozen, the cache exact, and one
sentence for each bad distill config."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import REPO, run_cli, sft_recipe, write_recipe

import llmkit
from llmkit import Recipe
from llmkit.data.collate import Collator
from llmkit.distill.loss import distillation_loss, scored_positions
from llmkit.distill.trainer import LossTrainer, SoftTargets, TeacherCollator
from llmkit.testing import save_tiny, tiny_model, tiny_tokenizer


def _softmax(row: list[float], t: float) -> list[float]:
    exps = [math.exp(x / t) for x in row]
    return [e / sum(exps) for e in exps]


def test_distillation_loss_equals_a_hand_computed_value():
    student = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]]
    teacher = [[1.0, 1.0, 0.0], [-1.0, 2.0, 0.5]]
    targets = [0, 2]
    alpha, t = 0.3, 2.0
    ce = sum(-math.log(_softmax(s, 1.0)[y]) for s, y in zip(student, targets, strict=True))
    kl = sum(
        sum(p * math.log(p / q) for p, q in zip(_softmax(tr, t), _softmax(s, t), strict=True))
        for s, tr in zip(student, teacher, strict=True)
    )
    expected = (alpha * ce + (1 - alpha) * t * t * kl) / 2
    out = distillation_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(targets), alpha, t)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.ce.item() == pytest.approx(ce, rel=1e-6) and out.kl.item() == pytest.approx(kl, rel=1e-6)
    # Normalised by the count it is given (the whole accumulated batch's), not this batch's.
    given = distillation_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(targets), alpha, t, 8)
    assert given.loss.item() == pytest.approx(expected * 2 / 8, rel=1e-6)


def test_causal_positions_predict_the_next_label():
    logits = torch.arange(2 * 4 * 3, dtype=torch.float).reshape(2, 4, 3)
    labels = torch.tensor([[-100, -100, 1, 2], [-100, 0, 1, -100]])
    student, teacher, targets = scored_positions(logits, logits + 1, labels, causal=True)
    # Row 0: logits at 1 and 2 predict labels at 2 and 3; row 1: logits at 0 and 1 predict labels at 1 and 2.
    assert torch.equal(student, logits[[0, 0, 1, 1], [1, 2, 0, 1]])
    assert torch.equal(teacher, student + 1) and targets.tolist() == [1, 2, 0, 1]


def _batch(family: str = "llama"):
    from llmkit.data.sft import build_examples
    from llmkit.data.tokens import LengthPolicy

    tokenizer = tiny_tokenizer(family)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    rows = [
        {"instruction": "Name a colour.", "output": "Blue."},
        {"instruction": "Give an antonym of hot.", "input": "", "output": "Cold, as in a winter morning."},
    ]
    options = dict(fmt="alpaca", template="alpaca", system_prompt=None, policy=LengthPolicy(128, "error"))
    examples, _, _ = build_examples(rows, ["a", "b"], tokenizer=tokenizer, stop_ids=set(), **options)
    return tokenizer, examples, Collator(tokenizer.pad_token_id)(examples)


def _trainer(student, teacher, tokenizer, examples, tmp_path, alpha, temperature):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    collate = TeacherCollator(Collator(tokenizer.pad_token_id))
    return LossTrainer(
        model=student,
        args=args,
        train_dataset=examples,
        data_collator=collate,
        processing_class=tokenizer,
        loss=SoftTargets(teacher, alpha, temperature, causal=True),
    )


def test_trainer_loss_on_a_fixed_batch_matches_the_formula(tmp_path):
    """The trainer's loss on a real batch, recomputed here position by position from the two models' logits."""
    tokenizer, examples, batch = _batch()
    student, teacher = tiny_model("llama", seed=1), tiny_model("llama", seed=2)
    alpha, t = 0.25, 3.0
    trainer = _trainer(student, teacher, tokenizer, examples, tmp_path, alpha, t)
    loss = trainer.compute_loss(student, dict(batch))
    with torch.no_grad():
        s_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    total, count = 0.0, 0
    for row in range(len(batch["labels"])):
        for pos in range(batch["labels"].shape[1] - 1):
            target = int(batch["labels"][row, pos + 1])
            if target == -100:
                continue
            s, tt = s_logits[row, pos].double(), t_logits[row, pos].double()
            ce = -torch.log_softmax(s, -1)[target]
            p, log_p, log_q = torch.softmax(tt / t, -1), torch.log_softmax(tt / t, -1), torch.log_softmax(s / t, -1)
            total += float(alpha * ce + (1 - alpha) * t * t * (p * (log_p - log_q)).sum())
            count += 1
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_alpha_one_is_the_models_own_loss_and_the_teacher_gets_no_gradient(tmp_path):
    tokenizer, examples, batch = _batch()
    student, teacher = tiny_model("llama", seed=1), tiny_model("llama", seed=2).eval().requires_grad_(False)
    trainer = _trainer(student, teacher, tokenizer, examples, tmp_path, alpha=1.0, temperature=2.0)
    loss = trainer.compute_loss(student, dict(batch))
    assert loss.item() == pytest.approx(student(**batch).loss.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())


# ---------------------------------------------------------------- end to end


def distill_recipe(student_dir, teacher, data, output_dir, **distill) -> dict:
    recipe = sft_recipe(student_dir, data, output_dir, method="full")
    recipe["task"] = "distill"
    recipe["distill"] = {"teacher": str(teacher), "alpha": 0.5, "temperature": 2.0, **distill}
    recipe["data"].update(max_length=128, max_train_samples=32, max_eval_samples=16)
    recipe["training"].update(max_steps=10, learning_rate=5e-3)
    return recipe


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    """A smaller student than the tiny teacher (1 layer against 2) with the same tokenizer."""
    return save_tiny("llama", tmp_path_factory.mktemp("student") / "llama", seed=1, num_hidden_layers=1)


@pytest.fixture(scope="module")
def trained_teacher(tiny_dirs, instructions_small, tmp_path_factory):
    """An llmkit SFT run (full fine-tuning) on the instruction data: a teacher with something to teach."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, out, method="full")
    recipe["training"].update(max_steps=15, learning_rate=5e-3)
    llmkit.Trainer(Recipe.from_dict(recipe)).train()
    return out


@pytest.mark.e2e
def test_causal_lm_distillation_moves_the_student_to_a_frozen_teacher(
    trained_teacher, student_dir, instructions_small, tmp_path, monkeypatch
):
    from llmkit.tasks import distill as runner

    seen = {}
    real = runner.load_teacher

    def capture(*args, **kwargs):
        seen["teacher"] = real(*args, **kwargs)
        seen["before"] = {k: v.clone() for k, v in seen["teacher"].state_dict().items()}
        return seen["teacher"]

    monkeypatch.setattr(runner, "load_teacher", capture)
    out = tmp_path / "run"
    path = write_recipe(tmp_path, distill_recipe(student_dir, trained_teacher, instructions_small, out))
    code, _stdout, stderr = run_cli("train", str(path))
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_kl"] < metrics["eval_kl_before"] / 2, "the student moved towards the teacher"
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    teacher = seen["teacher"]
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in seen["before"].items()), "teacher unchanged"
    info = json.loads((out / "llmkit.json").read_text())
    assert info["task"] == "distill" and info["head"] == "causal_lm" and info["teacher"] == str(trained_teacher)
    assert "held-out after training:  loss" in stderr and "kl" in stderr
    reloaded = llmkit.models.load_trained(out)
    assert reloaded.model.config.num_hidden_layers == 1


@pytest.mark.e2e
def test_an_llmkit_run_teaches_and_cached_logits_give_the_same_run(
    tiny_dirs, student_dir, instructions_small, tmp_path, monkeypatch
):
    """The teacher is the output_dir of an llmkit LoRA run; its logits are cached by the first distillation, and
    the second reads them without loading the teacher at all — with bit-identical results."""
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path / "cache"))
    teacher_run = tmp_path / "teacher"
    sft = sft_recipe(tiny_dirs["llama"], instructions_small, teacher_run)
    sft["training"]["max_steps"] = 3
    llmkit.Trainer(Recipe.from_dict(sft)).train()

    first = distill_recipe(student_dir, teacher_run, instructions_small, tmp_path / "a", cache_teacher_logits=True)
    first["training"]["max_steps"] = 4
    a = llmkit.Trainer(Recipe.from_dict(first)).train()
    assert len(list((tmp_path / "cache" / "teacher-logits").glob("*.safetensors"))) == 2  # train and held-out

    from llmkit.tasks import distill as runner

    def no_teacher(*args, **kwargs):
        raise AssertionError("the cached run must not load the teacher")

    monkeypatch.setattr(runner, "load_teacher", no_teacher)
    second = {**first, "output_dir": str(tmp_path / "b")}
    b = llmkit.Trainer(Recipe.from_dict(second)).train()
    for key in ("eval_loss_before", "eval_kl_before", "eval_loss", "eval_kl", "train_loss"):
        assert a.metrics[key] == b.metrics[key], key


# ---------------------------------------------------------------- bad input: one sentence, non-zero, nothing written


def _bad(tmp_path, recipe, command="train"):
    code, _stdout, stderr = run_cli(command, str(write_recipe(tmp_path, recipe)))
    assert code == 2 and "Traceback" not in stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.incomplete").exists(), "nothing written"
    return stderr


def test_bad_temperature_alpha_and_teacher_are_one_sentence_each(tiny_dirs, instructions_small, tmp_path):
    recipe = distill_recipe(tiny_dirs["llama"], tmp_path / "no-teacher", instructions_small, tmp_path / "run")
    recipe["distill"].update(alpha=1.5, temperature=0)
    err = _bad(tmp_path, recipe, "validate")
    assert "distill.alpha: must be between 0 and 1" in err and "got 1.5" in err
    assert "distill.temperature: must be a finite number greater than 0" in err
    recipe["distill"].update(alpha=0.5, temperature=float("inf"))
    assert "distill.temperature: must be a finite number greater than 0" in _bad(tmp_path, recipe, "validate")
    assert "distill.teacher: the local path" in err and "does not exist" in err
    recipe["distill"] = {"alpha": 0.5}
    assert "distill.teacher: required" in _bad(tmp_path, recipe)
    recipe["distill"] = {"teacher": str(tiny_dirs["bert"])}
    assert "distill.teacher: a bert model cannot teach causal lm distillation" in _bad(tmp_path, recipe)


@pytest.mark.e2e
def test_a_teacher_with_another_vocabulary_is_refused(tiny_dirs, instructions_small, tmp_path):
    teacher = save_tiny("llama", tmp_path / "other-vocab")
    tokenizer = tiny_tokenizer("llama")
    tokenizer.add_tokens(["<extra_token>"])
    tokenizer.save_pretrained(teacher)
    err = _bad(tmp_path, distill_recipe(tiny_dirs["llama"], teacher, instructions_small, tmp_path / "run"))
    assert "distill.teacher:" in err and "has a different vocabulary from the student" in err
    assert "601 vs 600 tokens" in err


def test_the_shipped_distillation_recipes_validate_once_their_inputs_exist(tiny_dirs, tmp_path, monkeypatch):
    """Both read what an earlier command writes (the quickstart run; step-1 rationales); with those in place the
    rest of each recipe must be valid as shipped."""
    monkeypatch.chdir(REPO)
    rationales = tmp_path / "rationales.jsonl"
    rationales.write_text(json.dumps({"input": "Win a prize!", "label": "spam", "rationale": "It sells."}) + "\n")
    for name, override in (
        ("smollm2-distill.yaml", f"distill.teacher={tiny_dirs['llama']}"),
        ("smollm2-rationale-student.yaml", f"data.train={rationales}"),
    ):
        try:
            recipe = Recipe.from_yaml(REPO / "recipes" / name, [override])
        except llmkit.RecipeError as exc:
            if "needs the PyPI package" in str(exc):
                pytest.skip(str(exc))
            raise
        assert recipe.task == "distill"


def test_packing_is_refused_for_distillation(tiny_dirs, instructions_small, tmp_path):
    recipe = distill_recipe(tiny_dirs["llama"], tiny_dirs["llama"], instructions_small, tmp_path / "run")
    recipe["data"]["packing"] = True
    with pytest.raises(llmkit.RecipeError, match=r"data\.packing: task distill does not pack examples"):
        Recipe.from_dict(recipe)


def test_the_logit_cache_key_changes_with_the_teachers_dtype(tiny_dirs):
    from llmkit.distill.teacher import resolve_teacher

    fp32, bf16 = (resolve_teacher(str(tiny_dirs["llama"]), dtype).fingerprint() for dtype in ("float32", "bfloat16"))
    assert fp32 != bf16 and fp32 == resolve_teacher(str(tiny_dirs["llama"]), "float32").fingerprint()
