"""Trainer checkpoints as llmkit keeps them: complete or ignored, pruned to what resume needs, and the counters a
resumed run carries over so its figures describe the whole run.

transformers writes a checkpoint file by file and rotates old ones before the new one is known to be whole, so a
kill during a save can leave a directory that `resume_from_checkpoint` would pick and fail on (or silently load half
of). llmkit writes its own `llmkit-state.json` into a checkpoint last, atomically, after every process has saved:
only a checkpoint with that file counts. Torch-free: `RunDir` reads these at the start of every run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

STATE = "llmkit-state.json"
PREFIX = "checkpoint-"
# What only resuming reads: a finished run drops these from its checkpoints (the weights stay, for `llmkit eval`).
RESUME_ONLY = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")
# What a checkpoint does not need at all: the tokenizer (the run saves its own once) and peft's model card.
NOT_NEEDED = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "tokenizer.model",
    "README.md",
)


def step_of(checkpoint: Path) -> int | None:
    suffix = checkpoint.name.removeprefix(PREFIX)
    return int(suffix) if checkpoint.name.startswith(PREFIX) and suffix.isdigit() else None


def all_checkpoints(directory: Path) -> list[Path]:
    """Every `checkpoint-N` directory, complete or not, oldest step first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0)


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / STATE).is_file()


def last_complete(directory: Path) -> Path | None:
    complete = [p for p in all_checkpoints(directory) if is_complete(p)]
    return complete[-1] if complete else None


def read_state(checkpoint: Path) -> dict[str, Any] | None:
    """llmkit's record in a checkpoint, or None for one an older llmkit (or a bare transformers run) wrote."""
    try:
        return json.loads((checkpoint / STATE).read_text())
    except (OSError, ValueError):
        return None


def write_state(checkpoint: Path, state: dict[str, Any]) -> None:
    """Mark `checkpoint` complete, with what a resumed run carries over. Call after every process has saved."""
    for name in NOT_NEEDED:
        (checkpoint / name).unlink(missing_ok=True)
    tmp = checkpoint / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(checkpoint / STATE)


def prune(directory: Path, keep: int | None, protect: str | None = None) -> None:
    """Keep the newest `keep` complete checkpoints (and `protect`, the best one); remove the rest and any incomplete
    one older than the newest complete. Done after a checkpoint is marked complete, never before (transformers'
    own rotation runs before that, which can leave no complete checkpoint at all)."""
    complete = [p for p in all_checkpoints(directory) if is_complete(p)]
    if not complete:
        return
    newest = step_of(complete[-1]) or 0
    stale = [p for p in all_checkpoints(directory) if not is_complete(p) and (step_of(p) or 0) < newest]
    if keep is not None:
        stale += complete[: max(0, len(complete) - keep)]
    for path in stale:
        if protect is None or Path(protect).resolve() != path.resolve():
            shutil.rmtree(path, ignore_errors=True)


def remove_incomplete(directory: Path) -> None:
    """Before a run resumes: a checkpoint a killed save left half-written is not one to resume, keep or rotate."""
    for path in all_checkpoints(directory):
        if not is_complete(path):
            shutil.rmtree(path, ignore_errors=True)


def strip_resume_state(directory: Path) -> None:
    """A finished run keeps its checkpoints' weights (for `llmkit eval RUN/checkpoints/checkpoint-N`), not the
    optimizer state that only resuming needs: for Adam that is twice the trained weights."""
    for checkpoint in all_checkpoints(directory):
        for pattern in RESUME_ONLY:
            for path in checkpoint.glob(pattern):
                path.unlink()
