"""What a user looks at after a run: loss.png (training loss per logging step, held-out loss per evaluation), the
trackers transformers logs to (`training.report_to`, TensorBoard here, offline), and `llmkit eval --samples N`
(held-out prompts with the reference and the model's generation side by side)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, sft_recipe, write_recipe

from llmkit.plots import loss_points


def test_loss_points_are_the_logged_training_and_held_out_losses():
    history = [
        {"eval_loss": 2.5, "step": 0},
        {"loss": 2.4, "step": 2},
        {"loss": 2.0, "step": 4},
        {"eval_loss": 1.9, "step": 4},
        {"train_loss": 2.2, "step": 4},  # the run's summary: not a logging step
    ]
    assert loss_points(history) == ([(2, 2.4), (4, 2.0)], [(0, 2.5), (4, 1.9)])


def test_a_tracker_that_is_not_installed_is_one_sentence(tiny_dirs, instructions_small, tmp_path):
    path = write_recipe(tmp_path, sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run"))
    code, _, stderr = run_cli("validate", str(path), "training.report_to=[tensorboard,trackio]")
    assert code == 2 and "Traceback" not in stderr
    assert "training.report_to: 'trackio' needs the trackio package: pip install trackio (or remove it)" in stderr


@pytest.mark.e2e
def test_loss_png_tensorboard_and_samples(tiny_dirs, instructions_small, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = sft_recipe(tiny_dirs["llama"], instructions_small, tmp_path / "run")
    recipe["training"].update(max_steps=8, logging_steps=2, eval_steps=4, report_to="tensorboard")
    path = write_recipe(tmp_path, recipe)
    code, _, stderr = run_cli("train", str(path))
    assert code == 0, stderr
    run = tmp_path / "run"
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    train, held_out = loss_points(log)
    assert [s for s, _ in train] == [2, 4, 6, 8] and [s for s, _ in held_out] == [0, 4, 8]

    (events,) = {p.parent for p in (run / "checkpoints" / "runs").rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    logged = [(e.step, e.value) for e in accumulator.Scalars("eval/loss")]
    assert [s for s, _ in logged] == [0, 4, 8]
    assert [v for _, v in logged] == pytest.approx([v for _, v in held_out], rel=1e-6), "the same held-out loss"

    code, stdout, stderr = run_cli("eval", str(run), "--split", "validation", "--samples", "3")
    assert code == 0, stderr
    report = json.loads(stdout)
    samples = [json.loads(line) for line in (run / "samples-validation.jsonl").read_text().splitlines()]
    assert report["samples"] == str(run / "samples-validation.jsonl") and len(samples) == 3
    data = json.loads(instructions_small.read_text())
    rows = {f"{instructions_small}[row {i}]": row for i, row in enumerate(data, 1)}  # where: file[row N], from 1
    for sample in samples:
        row = rows[sample["where"]]
        assert sample["reference"] == row["output"] and sample["prompt"].startswith(row["instruction"])
        assert isinstance(sample["generation"], str)
    assert "reference:" in stderr and "generation:" in stderr

    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"text": r["output"]}) + "\n" for r in data))
    plain = {**recipe, "data": {**recipe["data"], "train": str(text), "format": "text"}}
    code, _, stderr = run_cli("eval", str(run), "--recipe", str(write_recipe(tmp_path, plain, "t.yaml")),
                              "--samples", "2")  # fmt: skip
    assert code != 0 and "format 'text' has none (formats alpaca, chat, seq2seq do); drop --samples" in stderr
