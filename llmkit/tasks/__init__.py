"""Task registry: what each `task:` value needs, torch-free so `validate` can check it.

A task's runner lives in `llmkit/tasks/<name>.py` and exposes `run(job) -> dict` of metrics; it is imported only
when a run starts, because runners import torch and the trainers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    families: tuple[str, ...]  # model families that can do this task
    head: str  # which Auto* class loads the model: causal_lm, seq_cls or seq2seq_lm
    doc: str


TASKS: dict[str, TaskSpec] = {
    "sft": TaskSpec(
        families=("gpt2", "llama"),
        head="causal_lm",
        doc="supervised fine-tuning of a decoder on instructions, chats or plain text",
    ),
    "dpo": TaskSpec(
        families=("gpt2", "llama"),
        head="causal_lm",
        doc="direct preference optimisation on chosen / rejected pairs, against a frozen reference (TRL DPOTrainer)",
    ),
    "orpo": TaskSpec(
        families=("gpt2", "llama"),
        head="causal_lm",
        doc="odds-ratio preference optimisation: SFT and preference in one loss, no reference (TRL ORPOTrainer)",
    ),
    "kto": TaskSpec(
        families=("gpt2", "llama"),
        head="causal_lm",
        doc="Kahneman-Tversky optimisation on answers marked good or bad (TRL KTOTrainer); pairs are unpaired",
    ),
    "distill": TaskSpec(
        families=("bert", "gpt2", "llama", "t5"),
        head="causal_lm",  # the student's head follows data.format: see llmkit.tasks.distill.student_head
        doc="a student learns from a frozen teacher's soft targets, or from the teacher's rationales",
    ),
}


def runner(task: str) -> Callable[[Any], dict[str, Any]]:
    """The task's `run` function; the name was validated against TASKS, so this imports only our own modules."""
    return importlib.import_module(f"llmkit.tasks.{task}").run
