"""Recipe sections that only one task reads: `dpo:`, `orpo:`, `kto:` (TRL configs) and `distill:`.

Torch-free, like the rest of the schema. The preference sections hold the keys of TRL's own config class by their
TRL names (`dpo.beta` is `DPOConfig.beta`); a few are typed so `validate` checks their values, any other key of that
config passes through after a name check, and keys of TrainingArguments belong under `training:`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmkit.errors import RecipeError, did_you_mean
from llmkit.families import FAMILY_OF_MODEL_TYPE, resolve_model
from llmkit.upstream import config_fields

# DPOConfig.loss_type values in trl 1.16 (its docstring); TRL itself only rejects an unknown one mid-training.
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)

# Keys of the TRL configs that llmkit sets from elsewhere in the recipe, and the sentence that says where.
OWNED_TRL_KEYS = {
    "max_length": "set data.max_length; it bounds prompt + answer for every task",
    "max_completion_length": "set data.max_length; it bounds prompt + answer for every task",
    "model_init_kwargs": "llmkit loads the model from the model section",
    "trust_remote_code": "set model.trust_remote_code",
    "pad_token": "llmkit sets the tokenizer's pad token",
    "padding_value": "llmkit sets the tokenizer's pad token",
    "is_encoder_decoder": "llmkit reads it from the model",
    "dataset_num_proc": "llmkit prepares the data itself",
}


class TrlSection(BaseModel):
    """Keys of one TRL config class, by their TRL names; unset keys keep TRL's defaults."""

    model_config = ConfigDict(extra="allow")
    upstream: ClassVar[tuple[str, str]]  # (file inside trl, config class)

    @model_validator(mode="after")
    def _known_keys(self) -> TrlSection:
        problems = self.key_problems(self.model_extra or {})
        if problems:
            raise ValueError("; ".join(f"{key}: {msg}" for key, msg in problems.items()))
        return self

    @classmethod
    def key_problems(cls, keys: Any) -> dict[str, str]:
        """For each key that is not one of this TRL config's own (or that llmkit sets), the sentence that fixes it."""
        own = config_fields("trl", *cls.upstream)
        training = config_fields("transformers", "training_args.py", "TrainingArguments") or frozenset()
        problems = {}
        for key in keys:
            if key in OWNED_TRL_KEYS:
                problems[key] = OWNED_TRL_KEYS[key]
            elif key in training:
                problems[key] = "a training argument; put it under training"
            elif own is not None and key not in own and key not in cls.model_fields:
                problems[key] = f"unknown key{did_you_mean(key, set(own) - training)}"
        return problems

    def kwargs(self) -> dict[str, Any]:
        """The keys the recipe set, ready for the TRL config."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class DpoSection(TrlSection):
    """trl.DPOConfig: Direct Preference Optimisation (Rafailov et al., 2023). Any other DPOConfig key (ld_alpha,
    use_weighting, f_divergence_type, ...) passes through by its TRL name; unset keys keep TRL's defaults."""

    upstream: ClassVar[tuple[str, str]] = ("trainer/dpo_config.py", "DPOConfig")
    beta: float | None = Field(None, gt=0, description="how far the model may move from the reference (TRL: 0.1)")
    loss_type: str | list[str] | None = Field(
        None, description="sigmoid (DPO), ipo, hinge, robust, ... or a list to combine (TRL: sigmoid)"
    )
    label_smoothing: float | None = Field(None, ge=0, lt=0.5, description="robust / cDPO: chance a label is flipped")
    precompute_ref_log_probs: bool | None = Field(
        None, description="score the data with the reference once, before training, so it need not stay in memory"
    )

    @field_validator("loss_type")
    @classmethod
    def _known_loss(cls, value: str | list[str] | None) -> str | list[str] | None:
        for name in [value] if isinstance(value, str) else value or []:
            if name not in DPO_LOSS_TYPES:
                raise ValueError(f"unknown loss_type '{name}'{did_you_mean(name, DPO_LOSS_TYPES)}")
        return value


class OrpoSection(TrlSection):
    """trl.experimental.orpo.ORPOConfig: odds-ratio preference optimisation, no reference model (Hong et al., 2024).
    Any other ORPOConfig key passes through by its TRL name."""

    upstream: ClassVar[tuple[str, str]] = ("experimental/orpo/orpo_config.py", "ORPOConfig")
    beta: float | None = Field(None, gt=0, description="weight of the odds-ratio term, λ in the paper (TRL: 0.1)")


class KtoSection(TrlSection):
    """trl.KTOConfig: Kahneman-Tversky optimisation on answers marked good or bad (Ethayarajh et al., 2024); each
    preference pair becomes one good and one bad answer. Any other KTOConfig key passes through by its TRL name."""

    upstream: ClassVar[tuple[str, str]] = ("trainer/kto_config.py", "KTOConfig")
    beta: float | None = Field(None, gt=0, description="how far the model may move from the reference (TRL: 0.1)")
    loss_type: Literal["kto", "apo_zero_unpaired"] | None = Field(None, description="TRL: kto")
    desirable_weight: float | None = Field(None, gt=0, description="weight of the chosen answers' loss")
    undesirable_weight: float | None = Field(None, gt=0, description="weight of the rejected answers' loss")


# ---------------------------------------------------------------------- distillation


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

    def kind(self, fmt: str) -> str:
        """What is distilled: 'rationale' (multi-task on teacher rationales), 'classification' or 'causal_lm'."""
        if fmt == "rationale":
            return "rationale"
        return "classification" if fmt in ("classification", "sentence-pair") else "causal_lm"

    def data_problem(self, fmt: str) -> str | None:
        if self.kind(fmt) == "rationale":
            if self.teacher is not None:
                return (
                    "distill.teacher: with data.format rationale the student learns from rationales the teacher "
                    "already wrote (llmkit rationales); remove distill.teacher"
                )
        elif self.teacher is None:
            return "distill.teacher: required; name the model whose soft targets the student learns from"
        return None

    def family_problems(self, fmt: str, family: str | None) -> list[str]:
        """Which student and teacher families each kind of distillation works for."""
        kind = self.kind(fmt)
        students = DISTILL_FAMILIES[kind]
        problems = []
        if family is not None and family not in students:
            problems.append(
                f"task: distill with data.format {fmt} needs a student of family {', '.join(students)}, not {family}."
            )
        teacher = teacher_family(self.teacher) if self.teacher else None
        if teacher is not None and teacher not in TEACHER_FAMILIES[kind]:
            problems.append(
                f"distill.teacher: a {teacher} model cannot teach {kind.replace('_', ' ')} distillation; "
                f"use a {' or '.join(TEACHER_FAMILIES[kind])} model."
            )
        return problems


def student_task(kind: str, family: str | None) -> str:
    """The task whose head and method limits a distillation student shares."""
    if kind == "classification":
        return "classification"
    return "seq2seq" if kind == "rationale" and family == "t5" else "sft"


# Student families per kind of distillation (rationale students generate text: T5 or a decoder).
DISTILL_FAMILIES = {
    "causal_lm": ("gpt2", "llama"),
    "classification": ("bert", "gpt2", "llama"),
    "rationale": ("t5", "gpt2", "llama"),
}
TEACHER_FAMILIES = {"causal_lm": ("gpt2", "llama"), "classification": ("bert", "gpt2", "llama"), "rationale": ()}


def teacher_family(name: str) -> str | None:
    """The teacher's family if it can be known without loading it; a RecipeError naming distill.teacher if the
    teacher is missing. An llmkit run directory says its family in llmkit.json (an adapter run has no config.json)."""
    meta = Path(name).expanduser() / "llmkit.json"
    if meta.is_file():
        return json.loads(meta.read_text()).get("family")
    try:
        ref = resolve_model(name)
    except RecipeError as exc:
        hint = " (an llmkit run's output_dir exists once that run has finished)" if "local path" in str(exc) else ""
        raise ValueError(exc.problems[0].replace("model.name: ", "", 1).rstrip(".") + hint) from None
    return FAMILY_OF_MODEL_TYPE.get(ref.model_type) if ref.model_type else None


TRAINER_SECTIONS = {"dpo": DpoSection, "orpo": OrpoSection, "kto": KtoSection, "distill": DistillSection}
