"""Training a task's trainer: the method's callbacks, resume, held-out evaluation before and after, the test split
once at the end, and the train log. Every task trains through `fit`, so their figures mean the same thing: whole-run
figures (a resumed run carries the first attempt's counters in its checkpoints), reduced across processes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import transformers

from llmkit import checkpoints, precision
from llmkit.console import describe, is_main_process, say
from llmkit.metrics import evaluate_split, headline, measurements
from llmkit.plots import loss_curve
from llmkit.progress import Progress
from llmkit.run import BuiltModel, RunEnv
from llmkit.stopping import Diverged, Preempted, StopOnNonFinite, StopOnSignal


def fit(
    trainer: transformers.Trainer,
    env: RunEnv,
    built: BuiltModel,
    *,
    test: Sequence[Any] | None = None,
    headline_keys: Sequence[str] = (),
) -> dict[str, Any]:
    """Train (resuming from `env.resume_from`) with held-out evaluation before and after; score `test` once after;
    write the log; return the metrics. Stops early, with an error, on SIGTERM / SIGINT (after a checkpoint) and on a
    non-finite loss.

    The evaluation before training runs through `eval_on_start` (set by `training_args`), inside `train()`: an
    `evaluate()` call before `train()` marks the model as prepared by accelerate without DDP, and every process
    would then train on its own.
    """
    if trainer.eval_dataset is not None and not getattr(trainer, "weighs_eval_loss", False):
        raise TypeError("a task's trainer must go through llmkit.heldout.weigh_eval_loss (eval_loss over the split)")
    resumed = checkpoints.read_state(env.resume_from) if env.resume_from else None
    if resumed is not None:
        trainer.args.eval_on_start = False  # the evaluation before training is in the checkpoint
    record = _RunRecord(resumed, trainer.args.save_total_limit, at_resume=env.resume_from is not None)
    trainer.args.save_total_limit = None  # llmkit rotates, once a new checkpoint is complete (llmkit.checkpoints)
    signals, non_finite = StopOnSignal(), StopOnNonFinite()
    trainer.remove_callback(transformers.trainer_callback.ProgressCallback)
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    # Order matters at each step's end: the non-finite check has the last word on saving, the record sees the result;
    # the user's callbacks (llmkit.Trainer(callbacks=...)) come last and see what llmkit decided.
    for callback in (*built.callbacks, signals, non_finite, record, Progress(), *env.callbacks):
        trainer.add_callback(callback)
    say(precision.describe(trainer.model, trainer.args))
    if env.resume_from is not None:
        say(f"resuming from {env.resume_from}")
    result = trainer.train(resume_from_checkpoint=str(env.resume_from) if env.resume_from else None)
    if non_finite.step is not None:
        raise Diverged(non_finite.step, env.run.last_checkpoint())
    if signals.stopped_at is not None:
        raise Preempted(signals.received or 15, signals.stopped_at, env.run.last_checkpoint())

    state = trainer.state
    session_steps = state.global_step - record.start_step
    session_loss = _mean_across_processes(result.training_loss, trainer.args) * session_steps
    runtime = record.runtime_s + result.metrics.get("train_runtime", 0.0)
    tokens = int(state.num_input_tokens_seen)  # counted across processes, restored with the checkpoint
    metrics: dict[str, Any] = {
        "train_loss": (record.loss_sum + session_loss) / max(state.global_step, 1),
        "train_steps": state.global_step,
        "train_runtime_s": round(runtime, 2),
        "train_tokens": tokens or None,  # None: the trainer could not count them
        "tokens_per_second": round(tokens / runtime, 1) if runtime and tokens else None,
    }
    if record.start_step:
        metrics["resumed_at_step"] = record.start_step
    if record.before is not None:
        suffix = "at_resume" if record.before_step else "before"
        metrics.update({f"{k}_{suffix}": v for k, v in record.before.items()})
        final = record.latest if record.latest_step == state.global_step else None
        if final is None or trainer.args.load_best_model_at_end:  # the model changed since the last evaluation
            final = trainer.evaluate()
        after = measurements(final)
        metrics.update(after)
        say(f"held-out after training:  {describe(after)}")
    if is_main_process():
        history = state.log_history
        (env.run.work / "train_log.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in history))
        loss_curve(history, env.run.work / "loss.png", f"{env.recipe.task} · {env.recipe.model.name}")
    if test:
        metrics.update(evaluate_split(trainer, test, "test"))
        say(f"test: {headline(metrics, 'test', headline_keys)}")
    return metrics


def _mean_across_processes(value: float, args: Any) -> float:
    """transformers' `training_loss` adds each process's own losses since the last logging step: reduce it."""
    if args.world_size <= 1:
        return value
    from accelerate.utils import reduce

    return float(reduce(torch.tensor(value, device=args.device, dtype=torch.float64), reduction="mean").item())


class _RunRecord(transformers.TrainerCallback):
    """What a run measures once and a resumed run carries over: the held-out evaluation before training, the loss
    summed over every step, the training time. Each checkpoint gets them when it is complete (`llmkit.checkpoints`),
    with a logging step forced onto every save so the summed loss is exact up to the checkpoint.

    Also the latest evaluation, so one that training ended on is not run twice."""

    def __init__(self, resumed: dict[str, Any] | None, keep: int | None, at_resume: bool):
        resumed = resumed or {}
        self.before: dict[str, Any] | None = resumed.get("before")
        self.before_step = 0  # an old checkpoint without llmkit's record: the first evaluation is at the resume step
        self.at_resume = at_resume and not resumed
        self.loss_sum: float = resumed.get("loss_sum", 0.0)
        self.runtime_s: float = resumed.get("runtime_s", 0.0)
        self.keep = keep
        self.start_step = 0
        self.started = time.time()
        self.latest: dict[str, float] | None = None
        self.latest_step = -1

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start_step, self.started = state.global_step, time.time()
        if self.before is not None and self.start_step:
            say(f"held-out before training (step 0, from the checkpoint): {describe(self.before)}")

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float], **kwargs: Any) -> None:
        self.latest, self.latest_step = dict(metrics), state.global_step
        if self.before is None and state.global_step == self.start_step:
            self.before, self.before_step = measurements(metrics), (state.global_step if self.at_resume else 0)
            when = f"at the resume step {state.global_step}" if self.before_step else "before training"
            say(f"held-out {when}: {describe(self.before)}")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if control.should_save:
            control.should_log = True  # the summed loss must cover every step up to the checkpoint

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # every process has written its part (RNG states) before it counts
        if state.is_world_process_zero:
            directory = Path(args.output_dir)
            record = {
                "before": self.before if not self.before_step else None,
                "loss_sum": self._loss_sum_at(state),
                "runtime_s": self.runtime_s + time.time() - self.started,
                "step": state.global_step,
            }
            checkpoints.write_state(directory / f"{checkpoints.PREFIX}{state.global_step}", record)
            checkpoints.prune(directory, self.keep, state.best_model_checkpoint)
        PartialState().wait_for_everyone()

    def _loss_sum_at(self, state: Any) -> float:
        """The loss summed over every step so far: what was carried in, plus this session's logged windows (each
        `loss` entry is the mean over the steps since the previous one, already averaged across processes)."""
        total, previous = self.loss_sum, self.start_step
        for entry in state.log_history:
            if "loss" in entry and entry["step"] > self.start_step:
                total += entry["loss"] * (entry["step"] - previous)
                previous = entry["step"]
        return total
