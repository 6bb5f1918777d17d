"""Task runners: one module per task, found by name through the registry in `llmkit.recipe.tasks`.

Every runner module satisfies `Task`; `llmkit eval` needs `Evaluates` too, `llmkit predict` / `generate` `Predicts`.
Modules share functions (`llmkit.run`, `llmkit.fit`, `llmkit.data`), never a base class.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from llmkit.errors import LlmkitError
from llmkit.recipe.tasks import TASKS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from llmkit.data.prepared import Prepared
    from llmkit.data.sources import Rows
    from llmkit.models import Trained
    from llmkit.recipe import Recipe
    from llmkit.run import RunEnv, TaskResult


@runtime_checkable
class Task(Protocol):
    """What every task module provides."""

    def prepare(self, env: RunEnv, tokenizer: PreTrainedTokenizerBase) -> Prepared:
        """Rows → model-ready examples for every split the task reads, each split's source recorded (`Prepared`);
        `llmkit inspect-data` shows them."""
        ...

    def run(self, env: RunEnv) -> TaskResult:
        """Prepare the data, build the model, train it through `llmkit.fit.fit`, and return what was produced. Saving
        and the run directory are the caller's (`llmkit.trainer.train`)."""
        ...


@runtime_checkable
class Evaluates(Protocol):
    def evaluate(self, env: RunEnv, trained: Trained, rows: Rows, prefix: str) -> dict[str, float]:
        """The task's metrics of a trained model on `rows`, named `<prefix>_<metric>` (`llmkit eval`)."""
        ...


@runtime_checkable
class Predicts(Protocol):
    def predict(
        self, recipe: Recipe, trained: Trained, rows: list[dict[str, Any]], origins: list[str]
    ) -> list[dict[str, Any]]:
        """One output per row: labels and probabilities, or a generation (`llmkit predict`, `llmkit generate`)."""
        ...


def get(name: str) -> Task:
    """The runner module of task `name` (validated against the registry; imports torch and the trainers)."""
    module = importlib.import_module(f"llmkit.tasks.{TASKS[name].module}")
    if not isinstance(module, Task):
        raise TypeError(f"llmkit.tasks.{TASKS[name].module} does not provide prepare() and run()")
    return module


def evaluator(name: str, command: str = "eval") -> Evaluates:
    task = get(name)
    if not isinstance(task, Evaluates):
        raise LlmkitError(f"llmkit {command} does not support task '{name}'.")
    return task


def predictor(name: str, command: str = "predict") -> Predicts:
    task = get(name)
    if not isinstance(task, Predicts):
        raise LlmkitError(f"llmkit {command} does not support task '{name}'.")
    return task
