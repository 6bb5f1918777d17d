"""GRPO's and RLOO's rewards: the recipe's `grpo.rewards` (or `rloo.rewards`) → callables with TRL's reward
signature, each guarded so that a reward that raises or returns the wrong thing stops the run with one sentence
naming it and the batch.

Built at train time: user functions are imported and reward runs' tokenizers checked here, before any weights load.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmkit.errors import LlmkitError, first_line
from llmkit.recipe.rl import OnlineSection, Reward
from llmkit.rewards import builtin
from llmkit.rewards.model import RewardModel
from llmkit.rewards.user import load_function

DEFAULT_MAX_COMPLETION = 512  # GRPOConfig.max_completion_length's default, for a length penalty without max_tokens


class Checked:
    """A reward with TRL's signature that fails loudly: an exception, or anything but one number (or None: no
    reward for that completion, as TRL allows) per completion, becomes one sentence naming the reward and the batch."""

    def __init__(self, function: Callable[..., Any], label: str, origin: str):
        self.function = function
        self.origin = origin  # how the recipe named it, for the error
        self.__name__ = label  # TRL logs rewards/<label>/mean and /std

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        try:
            values = self.function(prompts=prompts, completions=completions, **kwargs)
        except LlmkitError:
            raise
        except Exception as exc:  # the user's code may raise anything
            raise LlmkitError(
                f"reward {self.origin} raised {type(exc).__name__}: {first_line(exc)} — {_batch(prompts, kwargs)}"
            ) from None
        problem = _problem(values, len(completions))
        if problem:
            raise LlmkitError(f"reward {self.origin} {problem} — {_batch(prompts, kwargs)}")
        return [None if v is None else float(v) for v in values]


def _problem(values: Any, expected: int) -> str | None:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        return f"returned a {type(values).__name__}; it must return a list of {expected} floats, one per completion"
    if len(values) != expected:
        return f"returned {len(values)} values for {expected} completions; it must return one float per completion"
    for i, value in enumerate(values):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            return f"returned {value!r} for completion {i}; each reward must be a float (or None)"
    return None


def _batch(prompts: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """Which batch: the training step (when TRL passes its state) and the batch's first prompt."""
    state = kwargs.get("trainer_state")
    step = f"at training step {state.global_step + 1}, " if state is not None else "while evaluating, "
    first = builtin.completion_text(prompts[0]) if prompts else ""
    first = first if len(first) <= 60 else first[:57] + "..."
    return f"{step}on a batch of {len(prompts)} completions whose first prompt is {first!r}"


@dataclass
class Rewards:
    functions: list[Checked]
    weights: list[float]
    records: list[dict[str, Any]] = field(default_factory=list)  # for the manifest: what each reward ran

    @property
    def labels(self) -> list[str]:
        return [f.__name__ for f in self.functions]


def build(section: OnlineSection, tokenizer: Any, task: str = "grpo") -> Rewards:
    """Every reward of the recipe's `task` section, ready for TRL; user code is imported and reward runs are checked
    first, then the reward models load."""
    functions, records, models = [], [], []
    for i, reward in enumerate(section.rewards):
        key = f"{task}.rewards.{i}"
        function, record = _one(reward, key, section, tokenizer)
        if isinstance(function, RewardModel):
            models.append(function)
        functions.append(Checked(function, reward.label(), _origin(reward)))
        records.append({"name": reward.label(), **record})
    for model in models:
        model.load()
    return Rewards(functions, [reward.weight for reward in section.rewards], records)


def _one(reward: Reward, key: str, section: OnlineSection, tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    if reward.exact_match is not None:
        return builtin.exact_match(reward.exact_match, reward.extract), {"exact_match": reward.exact_match}
    if reward.regex is not None:
        return builtin.regex(reward.regex), {"regex": reward.regex}
    if reward.length_penalty is not None:
        penalty = reward.length_penalty
        limit = penalty.max_tokens or section.max_completion_length or DEFAULT_MAX_COMPLETION
        return builtin.length_penalty(limit, penalty.ramp), {
            "length_penalty": {"max_tokens": limit, "ramp": penalty.ramp}
        }
    if reward.function is not None:
        return load_function(reward.function, key)
    assert reward.reward_model is not None
    model = RewardModel(reward.reward_model, tokenizer, key)
    return model, model.record()


def _origin(reward: Reward) -> str:
    value = getattr(reward, reward.kind)
    shown = f" {value}" if isinstance(value, str) else ""
    return f"'{reward.label()}' ({reward.kind}{shown})" if reward.name else f"{reward.kind}{shown}"


def mean(values: Sequence[float | None]) -> float:
    """The mean of the values a reward gave (None: not applicable to that completion); NaN if it gave none."""
    given = [v for v in values if v is not None and not math.isnan(v)]
    return sum(given) / len(given) if given else math.nan
