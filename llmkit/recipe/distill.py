"""The `distill:` section and the rules of `task: distill`, torch-free like the rest of the schema.

What a distillation student is follows from its data: a classifier on classification data, a text generator on text
data (a causal LM, or T5 with its decoder), a two-task student on rationales (`llmkit rationales` wrote them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmkit.errors import RecipeError
from llmkit.families import FAMILY_OF_MODEL_TYPE, looks_local, resolve_model, text_head
from llmkit.recipe.formats import LABEL_FORMATS

if TYPE_CHECKING:
    from llmkit.recipe.schema import Recipe

# Student families per kind of distillation (rationale students generate text: T5 or a decoder).
DISTILL_FAMILIES = {
    "causal_lm": ("gpt2", "llama"),
    "classification": ("bert", "gpt2", "llama"),
    "rationale": ("t5", "gpt2", "llama"),
}
TEACHER_FAMILIES = {"causal_lm": ("gpt2", "llama"), "classification": ("bert", "gpt2", "llama"), "rationale": ()}


class DistillSection(BaseModel):
    """Knowledge distillation: a frozen teacher's soft targets, or (data.format: rationale) the teacher's rationales."""

    model_config = ConfigDict(extra="forbid")

    teacher: str | None = Field(
        None, description="hub id, directory, .gguf, packaged:<alias>, or the output_dir of an llmkit run"
    )
    alpha: float = Field(0.5, description="weight of the hard-label loss; 1 - alpha weighs the teacher's soft targets")
    temperature: float = Field(2.0, description="softens both distributions; the soft loss is scaled by T²")
    cache_teacher_logits: bool = Field(
        False, description="score the data with the teacher once and keep the logits on disk for later runs"
    )
    rationale_weight: float = Field(
        1.0, ge=0, description="data.format rationale: loss = label loss + rationale_weight · rationale loss"
    )
    label_prefix: str = Field("[label] ", description="data.format rationale: task prefix for predicting the label")
    rationale_prefix: str = Field(
        "[rationale] ", description="data.format rationale: task prefix for generating the rationale"
    )

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError(f"must be between 0 and 1 (it weighs hard labels against soft targets); got {value}")
        return value

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float) -> float:
        if not 0 < value < math.inf:
            raise ValueError(f"must be a finite number greater than 0 (the logits are divided by it); got {value}")
        return value

    @field_validator("teacher")
    @classmethod
    def _teacher_exists(cls, value: str | None) -> str | None:
        if value is not None:
            teacher_family(value)
        return value


def distill_kind(fmt: str) -> str:
    """What is distilled from data of format `fmt`: 'rationale' (two tasks on teacher rationales), 'classification'
    or 'causal_lm' (token-level soft targets)."""
    if fmt == "rationale":
        return "rationale"
    return "classification" if fmt in LABEL_FORMATS else "causal_lm"


def student_task(kind: str, family: str | None) -> str:
    """The task whose head and method limits a distillation student shares."""
    if kind == "classification":
        return "classification"
    return "seq2seq" if kind == "rationale" and family is not None and text_head(family) == "seq2seq_lm" else "sft"


def student_head(recipe: Recipe, family: str | None) -> str:
    """The student's head follows its data: a classifier, or a text generator in its family's text head."""
    if distill_kind(recipe.data.format) == "classification":
        return "seq_cls"
    return text_head(family) if family is not None else "causal_lm"


def family_student_task(family: str) -> str:
    """What a distillation student of `family` is when its data does not say (the methods matrix): the first kind of
    distillation the family can be a student of."""
    kind = next(kind for kind, families in DISTILL_FAMILIES.items() if family in families)
    return student_task(kind, family)


def check(recipe: Recipe) -> list[str]:
    """Rules of task distill that the recipe alone shows."""
    section = recipe.distill or DistillSection()
    kind = distill_kind(recipe.data.format)
    if kind == "rationale" and section.teacher is not None:
        return [
            "distill.teacher: with data.format rationale the student learns from rationales the teacher already "
            "wrote (llmkit rationales); remove distill.teacher"
        ]
    if kind != "rationale" and section.teacher is None:
        return ["distill.teacher: required; name the model whose soft targets the student learns from"]
    if recipe.classification is not None and recipe.classification.balance != "none":
        return [
            "classification.balance: distillation follows the teacher's soft targets and does not reweight classes; "
            "remove it, or balance the teacher's own training (task: classification)"
        ]
    return []


def check_family(recipe: Recipe, family: str | None, model_type: str | None) -> list[str]:
    """Which student and teacher families each kind of distillation works for, and the method limits of the
    student's own task."""
    section = recipe.distill or DistillSection()
    fmt = recipe.data.format
    kind = distill_kind(fmt)
    problems = []
    students = DISTILL_FAMILIES[kind]
    if family is not None and family not in students:
        problems.append(
            f"task: distill with data.format {fmt} needs a student of family {', '.join(students)}, not {family}."
        )
    teacher = teacher_family(section.teacher) if section.teacher else None
    if teacher is not None and teacher not in TEACHER_FAMILIES[kind]:
        problems.append(
            f"distill.teacher: a {teacher} model cannot teach {kind.replace('_', ' ')} distillation; "
            f"use a {' or '.join(TEACHER_FAMILIES[kind])} model."
        )
    return problems + recipe.method.problems(family, student_task(kind, family), model_type)


def teacher_family(name: str) -> str | None:
    """The teacher's family if it can be known without loading it; a ValueError naming what is missing otherwise.
    An llmkit run directory says its family in llmkit.json (an adapter run has no config.json)."""
    meta = Path(name).expanduser() / "llmkit.json"
    if meta.is_file():
        return json.loads(meta.read_text()).get("family")
    try:
        ref = resolve_model(name)
    except RecipeError as exc:
        missing_path = looks_local(name) and not name.endswith(".gguf") and not Path(name).expanduser().exists()
        hint = " (an llmkit run's output_dir exists once that run has finished)" if missing_path else ""
        raise ValueError(exc.problems[0].replace("model.name: ", "", 1).rstrip(".") + hint) from None
    return FAMILY_OF_MODEL_TYPE.get(ref.model_type) if ref.model_type else None
