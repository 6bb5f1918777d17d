"""A finished run as a Python object: what `llmkit.Trainer(...).train()` returns and `llmkit.load(run_dir)` gives back.

`generate` and `predict` are the CLI's own code (`llmkit.predict`), so they give exactly what `llmkit generate` and
`llmkit predict` give on the same run. After training they use the trained model still in memory; `load` reads the
model only when something first needs it (`model`, `tokenizer`, `generate`, `predict`). Decisions:
docs/python-api.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmkit.evaluation import Checkpoint, find_checkpoint, run_recipe
from llmkit.models import Trained
from llmkit.predict import generate_texts, generation_recipe, located_rows, predict_rows
from llmkit.recipe import Recipe


class RunResult:
    """A run's directory and metrics (`metrics.json`), its recipe as saved, and its model and tokenizer."""

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        metrics: dict[str, Any],
        model: Any = None,
        tokenizer: Any = None,
        checkpoint: str | os.PathLike[str] | None = None,
    ):
        self.output_dir = Path(output_dir)
        self.metrics = metrics
        self._model, self._tokenizer = model, tokenizer
        self._checkpoint = Path(checkpoint) if checkpoint is not None else None
        self._trained: Trained | None = None
        self._recipe: Recipe | None = None

    def __repr__(self) -> str:
        shown = {k: round(v, 4) for k, v in self.metrics.items() if k.startswith(("eval_", "test_")) and _number(v)}
        return f"RunResult(output_dir={str(self.output_dir)!r}, metrics={shown})"

    @property
    def found(self) -> Checkpoint:
        return find_checkpoint(self._checkpoint or self.output_dir)

    @property
    def recipe(self) -> Recipe:
        """The resolved recipe the run saved (its relative data paths read from where it was trained)."""
        if self._recipe is None:
            self._recipe = run_recipe(self.found)
        return self._recipe

    @property
    def trained(self) -> Trained:
        """The model in eval mode, its tokenizer and llmkit.json: the trained model still in memory after `train()`,
        else loaded from the run as `llmkit generate` / `llmkit predict` load it."""
        if self._trained is None:
            found = self.found
            if self._model is not None and self._tokenizer is not None:
                self._trained = Trained(self._model.eval(), self._tokenizer, found.info)
            else:
                self._trained = found.load()
        return self._trained

    @property
    def model(self) -> Any:
        return self._model if self._model is not None else self.trained.model

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer if self._tokenizer is not None else self.trained.tokenizer

    def generate(self, prompts: str | Sequence[str], **generation: Any) -> Any:
        """The model's answer to each prompt (sft, seq2seq, grpo and rloo runs), rendered with the run's template;
        `generation` overrides the recipe's decoding settings (max_new_tokens=64, do_sample=True, ...). A single
        prompt gives a single string."""
        recipe = generation_recipe(self.recipe, self.output_dir, generation)
        texts = generate_texts(recipe, self.trained, [prompts] if isinstance(prompts, str) else list(prompts))
        return texts[0] if isinstance(prompts, str) else texts

    def predict(self, rows: Any, batch_size: int = 16) -> list[dict[str, Any]]:
        """Each row (a datasets.Dataset, a pandas DataFrame or a list of dicts) with the run's prediction added:
        `prediction` and `probabilities` for a classifier, `score` for a reward model, `generation` otherwise."""
        checked = located_rows(self.recipe, rows)
        return predict_rows(self.recipe, self.trained, checked, batch_size)


def load(run_dir: str | os.PathLike[str]) -> RunResult:
    """A finished run (or one of its checkpoints, `<run>/checkpoints/checkpoint-N`) as a `RunResult`; the model
    loads on first use."""
    found = find_checkpoint(run_dir)
    metrics_file = found.run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return RunResult(found.run_dir, metrics, checkpoint=run_dir if found.weights is not None else None)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
