"""What a run shows while it trains and when it ends: one progress bar per phase on a terminal, plain lines elsewhere,
and a short summary table that has the same shape for every task.

Replaces transformers' ProgressCallback, which prints every log dict to stdout next to its bar, and (when stderr is
not a terminal) redraws bars with carriage returns and cursor-movement codes that clutter a log file.
"""

from __future__ import annotations

import sys
from typing import Any

import transformers

from llmkit.console import describe, is_main_process, say
from llmkit.metrics import measurements

TRAIN_KEYS = ("loss", "grad_norm", "learning_rate")


class Progress(transformers.TrainerCallback):
    """A bar for training and one for each evaluation when stderr is a terminal; a line per logging step otherwise."""

    def __init__(self, tty: bool | None = None):
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.bar: Any = None
        self.eval_bar: Any = None
        self.start_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start_step = state.global_step
        if self.tty and is_main_process():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", dynamic_ncols=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_prediction_step(self, args: Any, state: Any, control: Any, eval_dataloader: Any = None, **kw: Any) -> None:
        if self.tty and is_main_process() and eval_dataloader is not None and hasattr(eval_dataloader, "__len__"):
            if self.eval_bar is None:
                from tqdm.auto import tqdm

                self.eval_bar = tqdm(total=len(eval_dataloader), desc="evaluate", leave=False, dynamic_ncols=True)
            self.eval_bar.update(1)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.eval_bar is not None:
            self.eval_bar.close()
            self.eval_bar = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        logs = logs or {}
        step = f"step {state.global_step}/{state.max_steps}"
        if "loss" in logs:
            shown = {k: logs[k] for k in TRAIN_KEYS if isinstance(logs.get(k), (int, float))}
            if self.bar is not None:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
            else:
                say(f"{step}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        elif any(k.startswith("eval_") for k in logs) and state.global_step not in (self.start_step, state.max_steps):
            say(f"{step}: held-out {describe(measurements(logs))}")  # before / after training: llmkit.fit says them

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def summary(metrics: dict[str, Any]) -> str:
    """The end of `llmkit train`: held-out and test figures before / after training as a table, one row per metric,
    then one line on the training itself. Every task gives the same columns."""
    rows: dict[str, list[Any]] = {}
    for key, value in metrics.items():
        if key.startswith("eval_") and not key.endswith("_before"):
            name = key.removeprefix("eval_")
            rows[name] = [metrics.get(f"{key}_before"), value, metrics.get(f"test_{name}")]
        elif key.endswith("_before") and not key.startswith("eval_"):  # a task's own figure (preference accuracy)
            name = key.removesuffix("_before")
            rows[name] = [value, metrics.get(name), metrics.get(f"test_{name}")]
    for key, value in metrics.items():  # test figures without a held-out twin
        if key.startswith("test_") and key.removeprefix("test_") not in rows:
            rows[key.removeprefix("test_")] = [None, None, value]
    lines = []
    if rows:
        width = max(len("metric"), *(len(name) for name in rows))
        lines.append(f"{'metric':<{width}}  {'before':>10}  {'after':>10}  {'test':>10}")
        lines += [f"{name:<{width}}  " + "  ".join(_cell(v) for v in values) for name, values in rows.items()]
    lines.append(_training_line(metrics))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return f"{'-':>10}"
    return f"{value:>10.4f}" if isinstance(value, float) else f"{value!s:>10}"


def _training_line(m: dict[str, Any]) -> str:
    parts = [f"{m.get('train_steps', 0)} steps in {_duration(m.get('train_runtime_s') or 0)}"]
    if isinstance(m.get("train_loss"), (int, float)):
        parts.append(f"train_loss {m['train_loss']:.4f}")
    if m.get("train_tokens"):
        speed = f" ({m['tokens_per_second']:,.0f}/s)" if m.get("tokens_per_second") else ""
        parts.append(f"{m['train_tokens']:,} tokens{speed}")
    if m.get("total_params"):
        share = 100 * m["trainable_params"] / m["total_params"]
        parts.append(f"{m['trainable_params']:,} of {m['total_params']:,} parameters trained ({share:.2f}%)")
    if m.get("peak_memory_mb"):
        parts.append(f"peak memory {m['peak_memory_mb']:,.0f} MB")
    if m.get("processes", 1) > 1:
        parts.append(f"{m['processes']} processes")
    return "training: " + " · ".join(parts)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"
