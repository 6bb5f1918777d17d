"""Shared fixtures: offline always, tiny models of each family saved once per session, recipe helpers."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub: a hidden download must fail loudly, not hang for 50 s.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
INSTRUCTIONS = REPO / "data" / "instruction-data.json"
# model.name in a shipped recipe → the family of tiny model that stands in for it
FAMILY_OF_NAME = {
    "packaged:all-minilm-l6-v2": "bert",
    "packaged:smollm2-135m-instruct": "llama",
    "gpt2": "gpt2",
    "gpt2-medium": "gpt2",
    "t5-small": "t5",
    "google/bert_uncased_L-4_H-256_A-4": "bert",
}


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    """Every test runs in its own empty directory, so relative output_dirs never touch the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """family → directory of a saved tiny random model with its tokenizer."""
    from llmkit.testing import save_tiny

    root = tmp_path_factory.mktemp("tiny")
    return {fam: save_tiny(fam, root / fam) for fam in ("llama", "gpt2", "bert", "t5")}


@pytest.fixture(scope="session")
def instructions_small(tmp_path_factory) -> Path:
    """80 real instruction rows, short enough for tiny-model runs."""
    rows = [r for r in json.loads(INSTRUCTIONS.read_text()) if len(r["output"]) < 120][:80]
    path = tmp_path_factory.mktemp("data") / "instructions.json"
    path.write_text(json.dumps(rows))
    return path


def write_recipe(directory: Path, recipe: dict, name: str = "recipe.yaml") -> Path:
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def sft_recipe(model_dir: Path, data: Path, output_dir: Path, **overrides) -> dict:
    """A small SFT recipe for tiny models; keyword arguments replace whole sections."""
    recipe = {
        "task": "sft",
        "model": {"name": str(model_dir)},
        "data": {"train": str(data), "format": "alpaca", "max_length": 192, "validation_split": 0.2},
        "method": {"name": "lora", "r": 8, "lora_alpha": 16, "target_modules": "all-linear"},
        "training": {
            "max_steps": 20,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-2,
            "logging_steps": 4,
            "save_strategy": "no",
            "seed": 0,
        },
        "output_dir": str(output_dir),
    }
    recipe.update(overrides)
    return recipe


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run `llmkit ARGV` in-process through the real entry point; returns (exit code, stdout, stderr)."""
    from llmkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse errors
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def run_cli_fresh(*argv: str) -> tuple[int, str, str]:
    """Run `python -m llmkit ARGV` in a new process, as a user does: nothing set up by earlier in-process runs
    (accelerate's process state, warm caches) can hide a problem. Slower; for the commands run after training."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "llmkit", *argv], capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr


def train_fails(tmp_path: Path, recipe: dict, *overrides: str) -> tuple[int, str]:
    """`llmkit train` on a bad recipe: it must exit non-zero with no traceback and leave no run behind (the recipe's
    output_dir is tmp_path/run). Returns the exit code and stderr."""
    path = write_recipe(tmp_path, recipe)
    code, _stdout, stderr = run_cli("train", str(path), *overrides)
    assert code != 0
    assert "Traceback" not in stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.incomplete").exists(), "nothing written"
    return code, stderr


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train about 2× faster on one CPU thread (thread hand-offs dominate their small matmuls)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PREFERENCES = REPO / "data" / "instruction-data-with-preference.json"


@pytest.fixture(scope="session")
def preferences_small(tmp_path_factory) -> Path:
    """48 real preference rows (alpaca layout: instruction / input / chosen / rejected), short enough for tiny
    models, with no identical pairs."""
    rows = [
        r
        for r in json.loads(PREFERENCES.read_text())
        if len(r["chosen"]) < 150 and len(r["rejected"]) < 150 and r["chosen"] != r["rejected"]
    ][:48]
    path = tmp_path_factory.mktemp("data") / "preferences.json"
    path.write_text(json.dumps(rows))
    return path


def assert_manifest_records_the_data(run_dir: Path) -> dict:
    """A finished run's manifest names every split it read — train, the held-out split when there is one, the test
    split for the tasks that score it — each with its source, a sha256 and a row count."""
    recipe = yaml.safe_load((Path(run_dir) / "recipe.yaml").read_text())
    data = json.loads((Path(run_dir) / "manifest.json").read_text())["data"]
    section = recipe["data"]
    expected = {"train"}
    if section.get("validation") or section.get("validation_split", 0) > 0:
        expected.add("validation")
    labelled = section["format"] in ("classification", "sentence-pair")
    if section.get("test") and (recipe["task"] in ("classification", "seq2seq") or labelled):
        expected.add("test")
    splits = {key: value for key, value in data.items() if key != "teacher"}
    assert set(splits) == expected, f"manifest data {sorted(splits)} != splits read {sorted(expected)}"
    for split, record in splits.items():
        assert record["source"] and len(record["sha256"]) == 64 and record["rows"] > 0, (split, record)
    if recipe["task"] == "distill" and section["format"] != "rationale":
        assert data["teacher"] == recipe["distill"]["teacher"]
    return data


def count_model_loads(monkeypatch) -> list[str]:
    """The head of every model `llmkit.models.load_model` loads from now on (a reference copy shows as a second)."""
    from llmkit import models

    loads: list[str] = []
    real = models.load_model

    def counting(*args, **kwargs):
        loads.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "load_model", counting)
    return loads


@contextlib.contextmanager
def interrupted_at_step(monkeypatch, step: int):
    """Ctrl-C during training step `step` (counting from 1): the run must stop and leave its checkpoints to resume."""
    import transformers

    real_step = transformers.Trainer.training_step
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "training_step", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(transformers.Trainer, "training_step", real_step)
