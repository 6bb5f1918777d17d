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
    sections: tuple[str, ...] = ()  # optional recipe sections the task reads (see recipe.TASK_SECTIONS)


TASKS: dict[str, TaskSpec] = {
    "sft": TaskSpec(
        families=("gpt2", "llama"),
        head="causal_lm",
        doc="supervised fine-tuning of a decoder on instructions, chats or plain text",
        sections=("generation",),
    ),
    "classification": TaskSpec(
        families=("bert", "gpt2", "llama"),
        head="seq_cls",
        doc="label a text or a pair of texts; encoders pool [CLS], decoders pool the last token",
        sections=("classification", "evaluation"),
    ),
    "seq2seq": TaskSpec(
        families=("t5",),
        head="seq2seq_lm",
        doc="map a source text to a target text (summarise, translate) with an encoder-decoder; ROUGE on generations",
        sections=("generation", "evaluation"),
    ),
    "dpo": TaskSpec(
        families=("gpt2", "llama"),
        head="causal_lm",
        doc="direct preference optimisation on chosen / rejected pairs, against a frozen reference (TRL DPOTrainer)",
        sections=("dpo",),
    ),
    "orpo": TaskSpec(
        families=("gpt2", "llama"),
        head="causal_lm",
        doc="odds-ratio preference optimisation: SFT and preference in one loss, no reference (TRL ORPOTrainer)",
        sections=("orpo",),
    ),
    "kto": TaskSpec(
        families=("gpt2", "llama"),
        head="causal_lm",
        doc="Kahneman-Tversky optimisation on answers marked good or bad (TRL KTOTrainer); pairs are unpaired",
        sections=("kto",),
    ),
    "distill": TaskSpec(
        families=("bert", "gpt2", "llama", "t5"),
        head="causal_lm",  # the student's head follows data.format: see llmkit.tasks.distill.student_head
        doc="a student learns from a frozen teacher's soft targets, or from the teacher's rationales",
        sections=("distill", "classification", "evaluation"),  # a classifier student: labels and extra metrics
    ),
}


def tasks_using(section: str) -> list[str]:
    """The tasks that read an optional recipe section, for the error when another task's recipe sets it."""
    return [name for name, spec in TASKS.items() if section in spec.sections]


def runner(task: str) -> Callable[[Any], dict[str, Any]]:
    """The task's `run` function; the name was validated against TASKS, so this imports only our own modules."""
    return importlib.import_module(f"llmkit.tasks.{task}").run


def task_function(task: str, name: str) -> Callable[..., Any] | None:
    """A task module's optional entry point (`evaluate`, `predict`), or None if the task does not offer it."""
    return getattr(importlib.import_module(f"llmkit.tasks.{task}"), name, None)
