"""The task registry: what each `task:` value needs from a recipe, torch-free so `validate` checks it.

A task is one runner module (`module`, imported only when a run starts: runners import torch and the trainers) and one
entry here: the families it runs on, the head it trains, the data formats it reads, the optional recipe sections it
uses, and its own cross-field rules. `llmkit.tasks.get(name)` finds the runner; docs/design.md shows the contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmkit.recipe import distill, rl
from llmkit.recipe.formats import LABEL_FORMATS, PAIR_FORMATS, PROMPT_FORMATS, TEXT_FORMATS

if TYPE_CHECKING:
    from llmkit.recipe.schema import Recipe

GENERATIVE = ("gpt2", "llama")


@dataclass(frozen=True)
class TaskSpec:
    module: str  # the runner, `llmkit.tasks.<module>`; it satisfies `llmkit.tasks.Task`
    families: tuple[str, ...]  # model families that can do this task
    head: str  # which Auto* class loads the model: causal_lm, seq_cls or seq2seq_lm
    formats: tuple[str, ...]  # data formats it reads
    doc: str
    sections: tuple[str, ...] = ()  # optional recipe sections the task reads (filled with defaults for it)
    packs: bool = False  # whether data.packing applies
    streams: bool = False  # whether data.streaming applies (the runner trains on an IterableDataset)
    # The task's own torch-free rules: on the recipe alone, and once the model's family is known (None if not yet).
    check: Callable[[Recipe], list[str]] | None = None
    check_family: Callable[[Recipe, str | None, str | None], list[str]] | None = None
    # When the head depends on the recipe and the family (a distillation student), instead of `head`.
    head_for: Callable[[Recipe, str | None], str] | None = None

    def model_head(self, recipe: Recipe, family: str | None) -> str:
        return self.head_for(recipe, family) if self.head_for else self.head


def _preference(name: str, doc: str) -> TaskSpec:
    """The preference tasks share a runner (TRL's trainers) and data; each reads its own TRL section."""
    return TaskSpec(
        module="preference",
        families=GENERATIVE,
        head="causal_lm",
        formats=PAIR_FORMATS,
        doc=doc,
        sections=(name, "evaluation"),  # evaluation: benchmarks after training
    )


def _online(name: str, doc: str) -> TaskSpec:
    """GRPO and RLOO share a runner (TRL's trainers), prompts and rewards; each reads its own section (and generation,
    for llmkit predict / generate)."""
    return TaskSpec(
        module="grpo",
        families=GENERATIVE,
        head="causal_lm",
        formats=PROMPT_FORMATS,
        doc=doc,
        sections=(name, "generation"),
        check=rl.check_online,
    )


TASKS: dict[str, TaskSpec] = {
    "sft": TaskSpec(
        module="sft",
        families=GENERATIVE,
        head="causal_lm",
        formats=TEXT_FORMATS,
        doc="supervised fine-tuning of a decoder on instructions, chats or plain text",
        sections=("generation", "evaluation"),  # evaluation: benchmarks after training
        packs=True,
        streams=True,
    ),
    "classification": TaskSpec(
        module="classification",
        families=("bert", "gpt2", "llama"),
        head="seq_cls",
        formats=LABEL_FORMATS,
        doc="label a text or a pair of texts; encoders pool [CLS], decoders pool the last token",
        sections=("classification", "evaluation"),
    ),
    "seq2seq": TaskSpec(
        module="seq2seq",
        families=("t5",),
        head="seq2seq_lm",
        formats=("seq2seq",),
        doc="map a source text to a target text (summarise, translate) with an encoder-decoder; ROUGE on generations",
        sections=("generation", "evaluation"),
    ),
    "dpo": _preference(
        "dpo", "direct preference optimisation on chosen / rejected pairs, against a frozen reference (TRL DPOTrainer)"
    ),
    "orpo": _preference(
        "orpo", "odds-ratio preference optimisation: SFT and preference in one loss, no reference (TRL ORPOTrainer)"
    ),
    "kto": _preference(
        "kto", "Kahneman-Tversky optimisation on answers marked good or bad (TRL KTOTrainer); pairs are unpaired"
    ),
    "reward": TaskSpec(
        module="reward",
        families=("bert", "gpt2", "llama"),
        head="seq_cls",
        formats=PAIR_FORMATS,
        doc="a reward model: one score per text, trained so chosen answers outscore rejected ones (TRL RewardTrainer)",
        sections=("reward",),
        check_family=rl.check_reward_family,
    ),
    "grpo": _online(
        "grpo",
        "online RL: each prompt's sampled completions are scored by rewards against their group (TRL GRPOTrainer)",
    ),
    "rloo": _online("rloo", "online RL with a leave-one-out baseline per prompt (TRL RLOOTrainer); rewards as grpo"),
    "distill": TaskSpec(
        module="distill",
        families=("bert", "gpt2", "llama", "t5"),
        head="causal_lm",
        formats=(*TEXT_FORMATS, *LABEL_FORMATS, "rationale"),
        doc="a student learns from a frozen teacher's soft targets, or from the teacher's rationales",
        sections=("distill", "classification", "evaluation"),  # classifier students: labels, extra metrics
        check=distill.check,
        check_family=distill.check_family,
        head_for=distill.student_head,
    ),
}


# Tasks whose evaluation computes metrics `evaluation.extra_metrics` can add to (a distillation's, for a classifier).
METRIC_TASKS = ("classification", "seq2seq", "distill")


def formats_for_task(task: str) -> list[str]:
    return list(TASKS[task].formats)


def tasks_using(section: str) -> list[str]:
    """The tasks that read an optional recipe section, for the error when another task's recipe sets it."""
    return [name for name, spec in TASKS.items() if section in spec.sections]


def head_task(head: str) -> str:
    """The first registered task that trains `head` (sft for causal_lm, ...), for the methods matrix."""
    return next(name for name, spec in TASKS.items() if spec.head == head)
