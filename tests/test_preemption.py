"""A run's life around the training loop: real signals sent to a real `llmkit train` process stop it after a whole
step with a checkpoint and the exact command that resumes it; that command (with `resume_from_checkpoint: auto`)
then ends with the weights and the whole-run figures of a run never interrupted. A kill during a save leaves no
checkpoint that resume picks; a run killed before its first checkpoint reruns as is; a diverged run says where."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import run_cli, sft_recipe, write_recipe
from safetensors.torch import load_file

import llmkit
from llmkit import Recipe
from llmkit.checkpoints import STATE, is_complete

pytestmark = pytest.mark.e2e

STEPS = 40


def _recipe(tiny_dirs, data, out, **training):
    recipe = sft_recipe(tiny_dirs["gpt2"], data, out)
    recipe["method"]["lora_dropout"] = 0.0
    recipe["training"].update({"max_steps": STEPS, "resume_from_checkpoint": "auto", **training})
    return recipe


@pytest.fixture(scope="module")
def straight(tiny_dirs, instructions_small, tmp_path_factory):
    """The same run, never interrupted."""
    out = tmp_path_factory.mktemp("straight") / "run"
    return llmkit.Trainer(Recipe.from_dict(_recipe(tiny_dirs, instructions_small, out))).train()


def _launch(path, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models step faster on one thread
    command = [sys.executable, "-m", "llmkit", "train", str(path)]
    return subprocess.Popen(command, cwd=cwd, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _same_run(result, straight):
    a, b = load_file(straight.output_dir / "adapter_model.safetensors"), load_file(result / "adapter_model.safetensors")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    mine, theirs = json.loads((result / "metrics.json").read_text()), straight.metrics
    assert mine["train_steps"] == theirs["train_steps"] == STEPS
    assert mine["train_tokens"] == theirs["train_tokens"], "tokens of the whole run, not of the resumed part"
    assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-6), "the loss over every step"
    assert mine["eval_loss_before"] == theirs["eval_loss_before"], "the real before-training figure, carried"
    assert mine["eval_loss"] == pytest.approx(theirs["eval_loss"], rel=1e-6)
    return mine


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_after_a_checkpoint_and_the_same_command_resumes(signum, straight, tiny_dirs,
                                                                        instructions_small, tmp_path):  # fmt: skip
    path = write_recipe(tmp_path, _recipe(tiny_dirs, instructions_small, tmp_path / "run"))
    process = _launch(path, tmp_path)
    for line in process.stderr:  # no terminal: one plain line per logging step
        if f"step 8/{STEPS}:" in line:
            process.send_signal(signum)
            break
    rest = process.stderr.read()
    assert process.wait(timeout=600) == 128 + signum, rest[-3000:]
    last = rest.strip().splitlines()[-1]
    stopped = int(last.split(" after step ")[1].split(";")[0])
    checkpoint = tmp_path / "run.incomplete" / "checkpoints" / f"checkpoint-{stopped}"
    name = signal.Signals(signum).name
    assert last == (f"error: stopped by {name} after step {stopped}; wrote {checkpoint}; resume with: llmkit train "
                    f"{path} training.resume_from_checkpoint=true")  # fmt: skip
    assert 8 <= stopped < STEPS and is_complete(checkpoint) and not (tmp_path / "run").exists()

    code, _, stderr = run_cli("train", str(path))  # the same command again: auto resumes
    assert code == 0, stderr
    metrics = _same_run(tmp_path / "run", straight)
    assert metrics["resumed_at_step"] == stopped
    assert "held-out before training (step 0, from the checkpoint): loss" in stderr
    assert "held-out before training: loss" not in stderr, "the figure at the resume step is not 'before training'"
    assert not list((tmp_path / "run" / "checkpoints").glob("*/optimizer.pt")), "a finished run keeps no optimizer"


def test_a_kill_during_a_save_leaves_no_checkpoint_that_resume_picks(straight, tiny_dirs, instructions_small,
                                                                     tmp_path):  # fmt: skip
    """SIGKILL the moment the second checkpoint's directory appears, mid-save (or, if the save won the race, just
    after): either way resume must pick only a checkpoint whose save completed."""
    recipe = _recipe(tiny_dirs, instructions_small, tmp_path / "run", save_strategy="steps", save_steps=5)
    path = write_recipe(tmp_path, recipe)
    process = _launch(path, tmp_path)
    second = tmp_path / "run.incomplete" / "checkpoints" / "checkpoint-10"
    while not second.exists() and process.poll() is None:
        time.sleep(0.002)
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    if not (second / STATE).exists():  # caught mid-save: it must not count
        assert not is_complete(second)
    partial = tmp_path / "run.incomplete" / "checkpoints" / "checkpoint-35"  # and one a kill left half-written
    partial.mkdir()
    (partial / "trainer_state.json").write_text('{"global_step": 3')

    code, _, stderr = run_cli("train", str(path))
    assert code == 0, stderr
    _same_run(tmp_path / "run", straight)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["checkpoint-35", "checkpoint-40"]


def test_a_run_killed_before_its_first_checkpoint_reruns_without_deleting_anything(tiny_dirs, instructions_small,
                                                                                   tmp_path):  # fmt: skip
    work = tmp_path / "run.incomplete"
    work.mkdir()
    (work / "recipe.yaml").write_text("what a killed run left")
    recipe = _recipe(tiny_dirs, instructions_small, tmp_path / "run", max_steps=2)
    code, _, stderr = run_cli("train", str(write_recipe(tmp_path, recipe)))
    assert code == 0, stderr
    assert "no complete checkpoint" in stderr and "starting over" in stderr
    assert not work.exists() and (tmp_path / "run" / "metrics.json").is_file()


def test_a_diverged_run_names_the_step_and_the_last_good_checkpoint(tiny_dirs, instructions_small, tmp_path):
    recipe = _recipe(tiny_dirs, instructions_small, tmp_path / "run", max_steps=6, learning_rate=1e30,
                     save_strategy="steps", save_steps=1)  # fmt: skip
    recipe["data"]["validation_split"] = 0
    code, _, stderr = run_cli("train", str(write_recipe(tmp_path, recipe)))
    good = tmp_path / "run.incomplete" / "checkpoints" / "checkpoint-1"
    assert code == 1 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"error: training diverged: the loss or gradient norm is not finite at step 2; the last good checkpoint is "
        f"{good}; lower training.learning_rate (or check the data near that step) and train again."
    )
    assert [p.name for p in good.parent.iterdir()] == ["checkpoint-1"], "nothing after the divergence is saved"
