"""The same recipe on 1 or N processes: a 2-process data-parallel run (gloo, CPU) must match a 1-process run, in its
weights and in its held-out loss (summed over both processes' batches, not one process's own)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import sft_recipe, write_recipe
from safetensors.torch import load_file

pytestmark = pytest.mark.e2e


def test_two_processes_equal_one_with_the_same_global_batch(tiny_dirs, instructions_small, tmp_path):
    """5 steps, logging every 4: the last step's loss is each process's own until llmkit reduces it (train_loss
    was rank 0's alone), and the summary is printed once, not once per process."""
    runs = {}
    for procs, per_device in ((1, 4), (2, 2)):
        recipe = sft_recipe(tiny_dirs["gpt2"], instructions_small, tmp_path / f"out{procs}", method="full")
        recipe["training"].update(per_device_train_batch_size=per_device, max_steps=5, learning_rate=5e-3)
        # 12 held-out examples in batches of 4: on 2 processes the last step gives the second one a batch of repeats,
        # which must not count.
        recipe["training"]["per_device_eval_batch_size"] = 4
        recipe["data"]["max_eval_samples"] = 12
        path = write_recipe(tmp_path, recipe, f"r{procs}.yaml")
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        done = subprocess.run(
            [*launch, "-m", "llmkit", "train", str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=600
        )
        assert done.returncode == 0, done.stderr[-4000:]
        assert done.stdout.count("output:") == 1 and done.stdout.count("metric ") == 1, done.stdout
        runs[procs] = tmp_path / f"out{procs}"
    one, two = (json.loads((runs[n] / "metrics.json").read_text()) for n in (1, 2))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["train_tokens"] == two["train_tokens"], "the two processes together saw the same examples"
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    assert two["eval_loss_before"] == pytest.approx(one["eval_loss_before"], rel=1e-5)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-4)
    a, b = load_file(runs[1] / "model.safetensors"), load_file(runs[2] / "model.safetensors")
    for name in a:  # gradients were averaged across processes: one model, not two diverging ones
        assert torch.allclose(a[name], b[name], atol=1e-4), name
    assert not (tmp_path / "out2.incomplete").exists()


PREPARE_AND_COUNT = """
import json, sys
from accelerate import PartialState

state = PartialState(cpu=True)  # the gloo process group a run sets up first
import llmkit.tasks.sft as sft
from llmkit import Recipe
from llmkit.prepare import prepare_recipe

tokenised = []
real = sft.build_examples
sft.build_examples = lambda rows, *args, **kwargs: tokenised.append(len(rows)) or real(rows, *args, **kwargs)
_, _, prepared = prepare_recipe(Recipe.from_yaml(sys.argv[1]))
out = {"tokenised": sum(tokenised), "examples": prepared.train.to_list(), "entry": str(prepared.entry)}
open(f"rank{state.process_index}.json", "w").write(json.dumps(out))
"""


def test_the_main_process_prepares_and_the_other_loads_its_cache(tiny_dirs, instructions_small, tmp_path):
    recipe = sft_recipe(tiny_dirs["gpt2"], instructions_small, tmp_path / "out")
    recipe["data"]["cache_dir"] = str(tmp_path / "cache")
    path = write_recipe(tmp_path, recipe)
    (tmp_path / "count.py").write_text(PREPARE_AND_COUNT)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "count.py"]
    done = subprocess.run([*launch, str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    main, other = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert main["tokenised"] >= 64 and other["tokenised"] == 0, "the tokenizer ran in the main process only"
    assert other["entry"] == main["entry"] and other["examples"] == main["examples"]
    assert done.stderr.count("cached in") == 1 and "read from the cache" not in done.stderr, "rank 1 says nothing"
