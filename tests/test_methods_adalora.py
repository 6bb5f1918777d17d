"""AdaLoRA: ranks really move when the callback runs every step, the schedule fits the run, and a held-out loss is
the task loss alone."""

from __future__ import annotations

import pytest
import torch
from methods_harness import Case, batch, method, train

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 12


def _case(tiny_dirs, **keys) -> Case:
    keys = {"init_r": 6, "target_r": 2, "tinit": 2, "tfinal": 3, "lora_dropout": 0.0, **keys}
    return Case(method("adalora", **keys), tiny_dirs["llama"], "causal_lm")


def _ranks(model) -> dict[str, int]:
    """Per adapted matrix, how many singular values are still non-zero."""
    return {n: int(p.count_nonzero()) for n, p in model.named_parameters() if ".lora_E." in n}


def test_ranks_are_reallocated_over_the_schedule(tiny_dirs):
    case = _case(tiny_dirs)
    model = case.method.apply(case.load_base(), case.ctx(STEPS))
    assert model.peft_config["default"].total_step == STEPS
    train(model, case, batch(case), steps=STEPS)
    ranks = _ranks(model)
    pattern = model.peft_config["default"].rank_pattern
    assert pattern, "update_and_allocate never ran"
    budget = 2 * len(ranks)  # target_r on average
    assert sum(sum(mask) for mask in pattern.values()) == budget
    assert sum(ranks.values()) <= budget < 6 * len(ranks)
    assert len(set(ranks.values())) > 1, f"every matrix kept the same rank: {ranks}"


def test_without_the_callback_ranks_would_stay_put(tiny_dirs):
    """What the callback fixes: a bare loop (or Trainer) that never calls update_and_allocate prunes nothing."""
    case = _case(tiny_dirs)
    model = case.method.apply(case.load_base(), case.ctx(STEPS))
    train(model, case, batch(case), steps=STEPS, callbacks=False)
    assert model.peft_config["default"].rank_pattern is None
    assert all(r == 6 for r in _ranks(model).values())


def test_schedule_fractions_and_a_run_too_short(tiny_dirs):
    case = _case(tiny_dirs, tinit=0.1, tfinal=0.25)
    config = case.method.upstream_config(case.ctx(100))
    assert (config.tinit, config.tfinal, config.total_step) == (10, 25, 100)
    with pytest.raises(ValueError, match=r"tinit \+ tfinal \(2 \+ 3 steps\) leave no step of this 5-step run"):
        _case(tiny_dirs).method.upstream_config(_case(tiny_dirs).ctx(5))


def test_held_out_loss_is_the_task_loss_alone(tiny_dirs):
    case = _case(tiny_dirs, orth_reg_weight=0.5)
    model = case.method.apply(case.load_base(), case.ctx(STEPS))
    data = batch(case)
    with torch.no_grad():
        model.train()
        train_loss = model(**data).loss
        model.eval()
        out = model(**data)
    logits, labels = out.logits[:, :-1], data["labels"][:, 1:]
    task_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    assert torch.allclose(out.loss, task_loss, atol=1e-6)
    assert train_loss > out.loss + 1e-3, "training adds the orthogonality regulariser"
