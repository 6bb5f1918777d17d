"""What llmkit tells the user while it works: one line at a time on stderr, from the main process only."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

from llmkit.methods.heads import SEQ_CLS_HEADS


def is_main_process() -> bool:
    """True in a single-process run and in rank 0 of a torchrun / accelerate launch."""
    return os.environ.get("RANK", "0") == "0"


def say(message: str) -> None:
    """A line for the user on stderr; through tqdm so it does not break a progress bar that is being drawn."""
    if is_main_process():
        from tqdm.auto import tqdm

        tqdm.write(f"llmkit: {message}", file=sys.stderr)


def describe(metrics: dict[str, Any]) -> str:
    """`loss 0.7883, accuracy 0.9866`: numeric metrics without their split prefix, for one console line."""
    return ", ".join(f"{k.removeprefix('eval_')} {v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float)))


# Weights a loaded model is expected to lack (the task head llmkit puts on it) or not to use (the checkpoint's LM or
# pretraining head under a classifier).
EXPECTED_IN_LOAD_REPORT = (*SEQ_CLS_HEADS, "lm_head", "cls")


class _ExpectedLoadReport(logging.Filter):
    """transformers logs a load report on every classifier load: the new head is 'missing', the LM head 'unexpected'.
    llmkit puts that head there on purpose; a report naming any other weight is kept, since that one matters."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "LOAD REPORT" not in text:
            return True
        rows = [line.split("|")[0].strip() for line in text.splitlines() if line.count("|") >= 2]
        keys = [key for key in rows if key and key != "Key"]
        return not keys or not all(key.split(".")[0] in EXPECTED_IN_LOAD_REPORT for key in keys)


def set_verbosity() -> None:
    """Keep transformers' own logging to warnings; the progress bar and llmkit's lines say what is happening."""
    import transformers

    transformers.logging.set_verbosity_warning()
    reporter = logging.getLogger("transformers.modeling_utils")
    if not any(isinstance(f, _ExpectedLoadReport) for f in reporter.filters):
        reporter.addFilter(_ExpectedLoadReport())
    # Loading a checkpoint takes a second or two; its per-tensor bars are noise (GGUF dequantising says so once).
    transformers.utils.logging.disable_progress_bar()
    # peft calls a transformers method deprecated for v6; the warning is theirs to fix, not the user's.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # peft looks the base up on the hub at each save to see if the vocabulary grew; llmkit never resizes it.
    warnings.filterwarnings("ignore", message="Could not find a config file in .* vocabulary was not modified")
