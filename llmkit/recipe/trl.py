"""The preference tasks' sections, `dpo:`, `orpo:` and `kto:`: keys of TRL's own config classes by their TRL names.

Torch-free, like the rest of the schema. `dpo.beta` is `DPOConfig.beta`; a few keys are typed so `validate` checks
their values, any other key of that config passes through after a name check, and keys of TrainingArguments belong
under `training:`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmkit.errors import did_you_mean
from llmkit.recipe.wording import unknown_keys
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
    owned: ClassVar[dict[str, str]] = OWNED_TRL_KEYS  # keys llmkit sets from elsewhere, and where

    @model_validator(mode="after")
    def _known_keys(self) -> TrlSection:
        problems = self.key_problems(self.model_extra or {})
        if problems:
            raise unknown_keys(problems)
        return self

    @classmethod
    def key_problems(cls, keys: Any) -> dict[str, str]:
        """For each key that is not one of this TRL config's own (or that llmkit sets), the sentence that fixes it."""
        own = config_fields("trl", *cls.upstream)
        training = config_fields("transformers", "training_args.py", "TrainingArguments") or frozenset()
        problems = {}
        for key in keys:
            if key in cls.owned:
                problems[key] = cls.owned[key]
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


TRL_SECTIONS = {"dpo": DpoSection, "orpo": OrpoSection, "kto": KtoSection}
