"""lm-evaluation-harness on a model llmkit loaded: its `HFLM` wraps the model and tokenizer, its `simple_evaluate`
scores the tasks, with the seeds its own CLI uses. No scorer of our own: the numbers are the harness's, and a test
shows they equal `lm_eval --model hf --model_args pretrained=DIR` on the same model to every printed digit.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from llmkit.benchmark.tasks import Resolved

# `lm_eval`'s own CLI defaults (python, numpy, torch, few-shot sampler), so a figure can be reproduced there.
SEEDS = {"random_seed": 0, "numpy_random_seed": 1234, "torch_random_seed": 1234, "fewshot_random_seed": 1234}
BOOTSTRAP_ITERS = 100000  # the harness's default, for the stderr of metrics without a closed form


@dataclass(frozen=True)
class Settings:
    """How the harness runs, under its own names."""

    limit: float | None = None  # examples per task (a fraction if below 1); for quick checks, not for figures
    batch_size: int = 1
    apply_chat_template: bool = False
    fewshot_as_multiturn: bool | None = None  # None: on exactly when the chat template is applied, as in lm_eval
    log_samples: bool = False

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "seeds": SEEDS, "bootstrap_iters": BOOTSTRAP_ITERS}


def evaluate(model: Any, tokenizer: Any, resolved: Resolved, settings: Settings) -> dict[str, Any]:
    """The harness's results for every resolved task: one `simple_evaluate` per n-shot, merged."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    # HFLM warns that a model object (rather than a name) ignores its loading arguments: llmkit loaded it already.
    logging.getLogger("lm_eval.models.huggingface").setLevel(logging.ERROR)
    was_training = model.training
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size)
    multiturn = settings.fewshot_as_multiturn
    if multiturn is None:
        multiturn = settings.apply_chat_template
    merged: dict[str, Any] = {}
    for shots, tasks in resolved.by_fewshot().items():
        results = simple_evaluate(
            model=lm,
            tasks=tasks,
            num_fewshot=shots,
            limit=settings.limit,
            log_samples=settings.log_samples,
            apply_chat_template=settings.apply_chat_template,
            fewshot_as_multiturn=multiturn,
            bootstrap_iters=BOOTSTRAP_ITERS,
            task_manager=resolved.manager,
            **SEEDS,
        )
        for part in ("results", "groups", "n-shot", "n-samples", "higher_is_better", "samples", "group_subtasks"):
            merged.setdefault(part, {}).update(results.get(part) or {})
        merged["lm_eval_version"] = results.get("lm_eval_version")
    model.train(was_training)
    return merged
