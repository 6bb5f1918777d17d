"""Why a run stops early, as TrainerCallbacks: a scheduler's SIGTERM (or a Ctrl-C) and a loss that has diverged.

transformers has neither: a signal kills the run between checkpoints and loses every step since the last one, and a
NaN loss is averaged away in the log (`logging_nan_inf_filter`) while training continues on NaN weights. Both stop at
the end of an optimizer step here, so what is saved is a whole step; `llmkit.fit.fit` turns them into errors.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import torch
import transformers

from llmkit.console import is_main_process
from llmkit.errors import LlmkitError


class Preempted(LlmkitError):
    """The run stopped on a signal after writing a checkpoint; the exit code is the shell's for that signal."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, resume: str | None = None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        saved = f"wrote {checkpoint}" if checkpoint else "no checkpoint could be written"
        how = f"resume with: {resume}" if resume else "resume with training.resume_from_checkpoint=true (or auto)"
        super().__init__(f"stopped by {name} after step {step}; {saved}; {how}")


class Diverged(LlmkitError):
    """The loss or the gradient norm stopped being a number; nothing after the last good checkpoint is kept."""

    def __init__(self, step: int, checkpoint: Path | None):
        last = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written before it"
        super().__init__(
            f"training diverged: the loss or gradient norm is not finite at step {step}; {last}; lower "
            "training.learning_rate (or check the data near that step) and train again."
        )


class StopOnSignal(transformers.TrainerCallback):
    """SIGTERM or SIGINT during training: finish the optimizer step, save a checkpoint, stop. A second signal of the
    same kind acts as it would without llmkit (the previous handler is back), for a user who will not wait."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self.stopped_at: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        signal.signal(signum, self._previous.pop(signum, signal.SIG_DFL))
        if is_main_process():  # not through tqdm: a handler may run while a bar holds its lock
            name = signal.Signals(signum).name
            sys.stderr.write(f"\nllmkit: {name}: finishing this step, then writing a checkpoint (again: stop now)\n")

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if threading.current_thread() is threading.main_thread():  # Python allows handlers there only
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._any_process_received(args):
            self.stopped_at = state.global_step
            self.received = self.received or signal.SIGTERM  # another process got it (torchrun forwards SIGTERM)
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _any_process_received(self, args: Any) -> bool:
        """Every process stops at the same step, or the others would wait for it forever at the next collective."""
        if args.world_size <= 1:
            return self.received is not None
        from accelerate.utils import reduce

        flag = torch.tensor(float(self.received is not None), device=args.device)
        return bool(reduce(flag, reduction="sum").item() > 0)


class StopOnNonFinite(transformers.TrainerCallback):
    """A non-finite gradient norm (a NaN or infinite loss makes one too) stops the run before the step is saved.

    Checked on the gradients every optimizer step, since the log shows the loss only every `logging_steps` and by
    then a checkpoint may hold NaN weights. Under fp16 loss scaling an infinite gradient is routine (the scaler skips
    that step), so fp16 runs are not checked."""

    def __init__(self) -> None:
        self.step: int | None = None

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if args.fp16 or self.step is not None or model is None:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            self.step = state.global_step + 1
            control.should_training_stop = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.step is not None:  # after any callback that asked to save: nothing diverged is kept
            control.should_save = False
            control.should_evaluate = False
