"""Training a task's trainer: the method's callbacks, resume, held-out evaluation before and after, the test split
once at the end, and the train log. Every task trains through `fit`, so their figures mean the same thing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import transformers

from llmkit.console import describe, is_main_process, say
from llmkit.metrics import evaluate_split, headline, measurements
from llmkit.plots import loss_curve
from llmkit.run import BuiltModel, RunEnv


def fit(
    trainer: transformers.Trainer,
    env: RunEnv,
    built: BuiltModel,
    *,
    test: Sequence[Any] | None = None,
    headline_keys: Sequence[str] = (),
) -> dict[str, Any]:
    """Train (resuming if the recipe asks) with held-out evaluation before and after; score `test` once after; write
    the log; return the metrics.

    The evaluation before training runs through `eval_on_start` (set by `training_args`), inside `train()`: an
    `evaluate()` call before `train()` marks the model as prepared by accelerate without DDP, and every process
    would then train on its own.
    """
    if trainer.eval_dataset is not None and not getattr(trainer, "weighs_eval_loss", False):
        raise TypeError("a task's trainer must go through llmkit.heldout.weigh_eval_loss (eval_loss over the split)")
    for callback in built.callbacks:
        trainer.add_callback(callback)
    start = _StartOfTraining()
    trainer.add_callback(start)
    result = trainer.train(resume_from_checkpoint=env.recipe.training.resume_from_checkpoint)
    runtime = result.metrics.get("train_runtime", 0.0)
    tokens = int(trainer.state.num_input_tokens_seen - start.tokens)  # this session's tokens, if resumed
    metrics: dict[str, Any] = {
        "train_loss": result.training_loss,
        "train_steps": trainer.state.global_step,
        "train_runtime_s": round(runtime, 2),
        "train_tokens": tokens or None,  # None: the trainer could not count them
        "tokens_per_second": round(tokens / runtime, 1) if runtime and tokens else None,
    }
    if start.evaluation is not None:
        suffix = "before" if start.step == 0 else "at_resume"
        metrics.update({f"{k}_{suffix}": v for k, v in measurements(start.evaluation).items()})
        final = start.latest if start.latest_step == trainer.state.global_step else None
        if final is None or trainer.args.load_best_model_at_end:  # the model changed since the last evaluation
            final = trainer.evaluate()
        after = measurements(final)
        metrics.update(after)
        say(f"held-out after training:  {describe(after)}")
    if is_main_process():
        history = trainer.state.log_history
        (env.run.work / "train_log.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in history))
        loss_curve(history, env.run.work / "loss.png", f"{env.recipe.task} · {env.recipe.model.name}")
    if test:
        metrics.update(evaluate_split(trainer, test, "test"))
        say(f"test: {headline(metrics, 'test', headline_keys)}")
    return metrics


class _StartOfTraining(transformers.TrainerCallback):
    """Tokens already seen when training (re)starts, so a resumed run's tokens/s counts only its own work, and the
    evaluation `eval_on_start` runs before the first step; the latest evaluation, so one that training ended on is
    not run twice."""

    tokens = 0
    step = 0
    evaluation: dict[str, float] | None = None
    latest: dict[str, float] | None = None
    latest_step = -1

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.tokens, self.step = state.num_input_tokens_seen, state.global_step

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float], **kwargs: Any) -> None:
        self.latest, self.latest_step = dict(metrics), state.global_step
        if self.evaluation is None and state.global_step == self.step:
            self.evaluation = dict(metrics)
            say(f"held-out before training: {describe(measurements(metrics))}")
