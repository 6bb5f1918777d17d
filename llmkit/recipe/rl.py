"""The reinforcement-learning tasks' sections: `reward:` (trl.RewardConfig keys), and `grpo:` / `rloo:` (trl.GRPOConfig
/ RLOOConfig keys plus the rewards the policy is trained on). Torch-free, like the rest of the schema.

A reward is a built-in that needs no code (exact match of the final answer, a regex, a length penalty), a user's
function by reference, or a finished `task: reward` run. A user's function is imported when training starts, never
here: `llmkit validate` only checks that the reference is well formed and its file exists.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from llmkit.errors import RecipeError
from llmkit.methods import read_run
from llmkit.recipe.trl import OWNED_TRL_KEYS, TrlSection

if TYPE_CHECKING:
    from llmkit.recipe.schema import Recipe

# GRPOConfig.loss_type values in trl 1.16 (its help text); TRL itself only rejects an unknown one mid-training.
GRPO_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
REWARD_KINDS = ("exact_match", "regex", "length_penalty", "function", "reward_model")
FUNCTION_REF = re.compile(r"^(?P<target>[^:]+):(?P<name>[A-Za-z_]\w*)$")
MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class LengthPenalty(BaseModel):
    """DAPO's soft overlong punishment (TRL's `get_soft_overlong_punishment`): 0 up to max_tokens − ramp, then falling
    linearly to −1 at max_tokens."""

    model_config = ConfigDict(extra="forbid")
    ramp: int = Field(gt=0, description="tokens over which the penalty grows from 0 to −1")
    max_tokens: int | None = Field(None, gt=0, description="where the penalty reaches −1 (grpo.max_completion_length)")


class Reward(BaseModel):
    """One reward, and its weight in the sum GRPO normalises per group. Give exactly one of exact_match, regex,
    length_penalty, function or reward_model."""

    model_config = ConfigDict(extra="forbid")
    exact_match: str | None = Field(
        None,
        description="dataset column holding the expected final answer: 1 if the completion's final answer equals it",
    )
    extract: str | None = Field(
        None, description="with exact_match: a regex whose first group is the final answer (default: docs/rl.md)"
    )
    regex: str | None = Field(None, description="a format reward: 1 if the completion matches this pattern, else 0")
    length_penalty: LengthPenalty | None = Field(None, description="a penalty for completions near the length limit")
    function: str | None = Field(
        None, description="your function, `path/to/file.py:name` or `module:name`, with TRL's reward signature"
    )
    reward_model: str | None = Field(
        None, description="a finished `task: reward` run directory; its score is the reward"
    )
    weight: float = Field(1.0, description="weight of this reward in the sum (TRL's reward_weights)")
    name: str | None = Field(None, description="name in the logs and metrics (default: the kind, or the function's)")

    @model_validator(mode="after")
    def _one_kind(self, info: ValidationInfo) -> Reward:
        given = [kind for kind in REWARD_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            got = " and ".join(given) or "none"
            raise ValueError(f"give exactly one of {', '.join(REWARD_KINDS)} in each reward (got {got})")
        if self.extract is not None and self.exact_match is None:
            raise ValueError("extract applies to an exact_match reward only; remove it")
        for pattern in (self.regex, self.extract):
            if pattern is not None:
                try:
                    compiled = re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"'{pattern}' is not a valid regular expression ({exc})") from None
                if pattern is self.extract and compiled.groups < 1:
                    raise ValueError("extract needs a group around the answer, e.g. 'Answer: (\\S+)'")
        saved_run = bool(info.context and info.context.get("saved_run"))
        if self.function is not None:
            _check_function(self.function, saved_run)
        if self.reward_model is not None and not saved_run:
            _check_reward_run(self.reward_model)
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in REWARD_KINDS if getattr(self, kind) is not None)

    def label(self) -> str:
        """The reward's name in TRL's logs (`rewards/<label>/mean`)."""
        if self.name:
            return self.name
        if self.function is not None:
            return self.function.rsplit(":", 1)[1]
        return self.kind


def _check_function(reference: str, saved_run: bool) -> None:
    match = FUNCTION_REF.match(reference)
    if match is None:
        raise ValueError(f"function '{reference}' must be 'path/to/file.py:name' or 'module:name'")
    target = match["target"]
    if target.endswith(".py"):
        if not saved_run and not Path(target).expanduser().is_file():
            raise ValueError(f"function file '{target}' does not exist (relative paths start at {Path.cwd()})")
    elif not MODULE_NAME.match(target):
        raise ValueError(f"function '{reference}': '{target}' is neither a .py file nor a module name")


def _check_reward_run(run: str) -> None:
    try:
        info, _method = read_run(Path(run).expanduser())
    except RecipeError as exc:
        raise ValueError(f"reward_model: {exc.problems[0].rstrip('.')}") from None
    if info.get("task") != "reward":
        raise ValueError(
            f"reward_model '{run}' is a task {info.get('task')} run; use the output_dir of a task reward run"
        )


class RewardSection(TrlSection):
    """trl.RewardConfig: a reward model (a one-output classifier) learns to score the chosen answer above the rejected
    one. Any other RewardConfig key passes through by its TRL name; unset keys keep TRL's defaults."""

    upstream: ClassVar[tuple[str, str]] = ("trainer/reward_config.py", "RewardConfig")
    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="pull the rewards towards mean 0 (Eisenstein et al., 2023); TRL suggests 0.01"
    )


class OnlineSection(TrlSection):
    """What GRPO and RLOO share: the rewards, and the keys of their TRL configs that llmkit types."""

    default_generations: ClassVar[int]  # TRL's num_generations default for this config
    owned: ClassVar[dict[str, str]] = {
        **{k: v for k, v in OWNED_TRL_KEYS.items() if k != "max_completion_length"},
        "max_length": "set data.max_length (the prompt) and max_completion_length in this section (the completion)",
        "reward_weights": "give each reward its weight in rewards",
    }
    rewards: list[Reward] = Field(default_factory=list, description="what a completion is scored by; see below")
    num_generations: int | None = Field(None, ge=2, description="completions sampled per prompt, a group")
    max_completion_length: int | None = Field(None, gt=0, description="tokens per completion at most (TRL: 512)")
    beta: float | None = Field(None, ge=0, description="weight of the KL penalty to the reference; 0 loads none")
    temperature: float | None = Field(None, gt=0, description="sampling temperature of the completions (TRL: 1.0)")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling of the completions (TRL: 1.0, off)")
    top_k: int | None = Field(None, ge=0, description="sample among the k most likely tokens (TRL: 0, off)")
    num_iterations: int | None = Field(None, gt=0, description="updates per generated batch, μ (TRL: 1)")
    epsilon: float | None = Field(None, gt=0, description="clipping range of the policy ratio (TRL: 0.2)")
    generation_batch_size: int | None = Field(
        None, gt=0, description="completions generated at once (TRL: the global train batch × steps_per_generation)"
    )
    steps_per_generation: int | None = Field(None, gt=0, description="optimizer micro-steps per generated batch")

    @field_validator("rewards")
    @classmethod
    def _distinct_names(cls, rewards: list[Reward]) -> list[Reward]:
        labels = [reward.label() for reward in rewards]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"two rewards are named '{repeated[0]}'; give them distinct `name`s")
        return rewards


class GrpoSection(OnlineSection):
    """trl.GRPOConfig: Group Relative Policy Optimization (Shao et al., 2024). Each prompt gets num_generations sampled
    completions (TRL: 8); each is scored by the rewards, and its advantage is its reward against its group's; beta
    defaults to 0 (no reference model). Any other GRPOConfig key passes through by its TRL name."""

    upstream: ClassVar[tuple[str, str]] = ("trainer/grpo_config.py", "GRPOConfig")
    default_generations: ClassVar[int] = 8
    loss_type: Literal[GRPO_LOSS_TYPES] | None = Field(None, description="how token losses are averaged (TRL: dapo)")  # type: ignore[valid-type]
    scale_rewards: Literal["group", "batch", "none"] | None = Field(
        None, description="divide advantages by the group's reward std, the batch's, or not at all (TRL: group)"
    )


class RlooSection(OnlineSection):
    """trl.RLOOConfig: REINFORCE Leave-One-Out (Ahmadian et al., 2024). Each completion's baseline is the mean reward
    of the other num_generations − 1 completions of its prompt (TRL: 2); beta (TRL: 0.05) penalises the sequence's KL
    to the reference in the reward. Any other RLOOConfig key passes through by its TRL name."""

    upstream: ClassVar[tuple[str, str]] = ("trainer/rloo_config.py", "RLOOConfig")
    default_generations: ClassVar[int] = 2
    normalize_advantages: bool | None = Field(None, description="scale advantages to unit variance (TRL: false)")


def check_online(recipe: Recipe) -> list[str]:
    """GRPO's and RLOO's rules across sections: there is a reward, the generation batch holds whole groups, and the
    length penalty fits the completion length."""
    task, training, data = recipe.task, recipe.training, recipe.data
    section: OnlineSection = getattr(recipe, task)
    problems = []
    if not section.rewards:
        problems.append(
            f"{task}.rewards: task {task} needs at least one reward, e.g. rewards: [{{exact_match: answer}}]"
        )
    if data.overlong == "truncate":
        problems.append(f"data.overlong: truncate would cut prompts short; use drop or error for task {task}")
    group = section.num_generations or section.default_generations
    if section.generation_batch_size is not None and section.steps_per_generation is not None:
        problems.append(f"{task}: set generation_batch_size or steps_per_generation, not both")
    elif section.generation_batch_size is None:
        per_step = (training.per_device_train_batch_size or 8) * _world_size()
        steps = section.steps_per_generation or training.gradient_accumulation_steps or 1
        if (per_step * steps) % group:
            processes = f" × {_world_size()} processes" if _world_size() > 1 else ""
            problems.append(
                f"{task}.num_generations: {group} completions per prompt do not divide the generation batch of "
                f"{per_step * steps} completions (training.per_device_train_batch_size {per_step // _world_size()}"
                f"{processes} × steps_per_generation {steps}); make that batch a multiple of {group}, or change "
                "num_generations"
            )
    elif section.generation_batch_size % group:
        problems.append(
            f"{task}.generation_batch_size: {section.generation_batch_size} is not a multiple of num_generations "
            f"({group}); each prompt's completions must be generated together"
        )
    limit = section.max_completion_length or 512  # TRL's default
    for i, reward in enumerate(section.rewards):
        penalty = reward.length_penalty
        if penalty is not None and penalty.ramp > (penalty.max_tokens or limit):
            problems.append(
                f"{task}.rewards.{i}.length_penalty: ramp {penalty.ramp} is longer than max_tokens "
                f"{penalty.max_tokens or limit}; shorten the ramp"
            )
    return problems


def check_reward_family(recipe: Recipe, family: str | None, model_type: str | None) -> list[str]:
    """An encoder reward model reads (prompt, answer) as a text pair; it has no chat template to render."""
    if family == "bert" and recipe.data.template == "chat":
        return [f"data.template: chat renders a chat template, which {family} models do not have; use auto or alpaca."]
    return []


def _world_size() -> int:
    """Processes of a launched job (torchrun, accelerate launch); 1 when `llmkit validate` runs on its own."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def columns_needed(section: OnlineSection) -> dict[str, Any]:
    """Dataset columns the built-in rewards read, and the reward that reads each (checked on every row)."""
    return {reward.exact_match: reward.label() for reward in section.rewards if reward.exact_match is not None}
