"""Rewards that need no code: the final answer against a dataset column, a format pattern, a length penalty.

Each has TRL's reward signature, `f(prompts, completions, completion_ids, **columns) -> list[float]`. TRL ships an
`accuracy_reward`, but it parses LaTeX with math_verify against a `solution` column; this one compares a plain final
answer with any column. The length penalty is TRL's own (`get_soft_overlong_punishment`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
MARKER = re.compile(r"(?:answer\s*(?:is)?\s*[:=]|####)\s*([^\n]+)", re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def completion_text(completion: Any) -> str:
    """A completion as text: TRL passes a string, or (for chat prompts) a list holding the assistant's message."""
    if isinstance(completion, list):
        return "".join(str(message.get("content", "")) for message in completion if isinstance(message, dict))
    return str(completion)


def final_answer(text: str, extract: re.Pattern[str] | None = None) -> str | None:
    """The answer a completion ends on: `extract`'s first group (its last match); by default the last `\\boxed{…}`,
    else what follows the last 'answer:' / 'answer is' / '####', else the last number, else the whole text."""
    if extract is not None:
        found = [m.group(1) for m in extract.finditer(text)]
        return found[-1] if found else None
    for pattern in (BOXED, MARKER):
        found = pattern.findall(text)
        if found:
            return found[-1]
    numbers = NUMBER.findall(text)
    return numbers[-1] if numbers else text


def normalise(answer: Any) -> str:
    """Case, surrounding space, markdown emphasis, '$' and trailing punctuation do not count; nor do thousands
    separators or a trailing '.0' in a number."""
    text = str(answer).strip().strip("*$` ").rstrip(".,;!").strip().lower()
    number = text.replace(",", "")
    try:
        value = float(number)
    except ValueError:
        return " ".join(text.split())
    return str(int(value)) if value.is_integer() else repr(value)


def exact_match(column: str, extract: str | None = None) -> Callable[..., list[float]]:
    """1.0 where the completion's final answer equals the row's `column`, else 0.0."""
    pattern = re.compile(extract) if extract else None

    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        expected = kwargs[column]
        return [
            float(answer is not None and normalise(answer) == normalise(want))
            for answer, want in zip(
                (final_answer(completion_text(c), pattern) for c in completions), expected, strict=True
            )
        ]

    return reward


def regex(pattern: str) -> Callable[..., list[float]]:
    """1.0 where the pattern is found in the completion (`.` matches newlines too; anchor with ^ and $), else 0.0."""
    compiled = re.compile(pattern, re.DOTALL)

    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [float(compiled.search(completion_text(c)) is not None) for c in completions]

    return reward


def length_penalty(max_tokens: int, ramp: int) -> Callable[..., list[float]]:
    """0 up to max_tokens − ramp tokens, then linearly down to −1 at max_tokens (TRL's soft overlong punishment)."""
    from trl.rewards import get_soft_overlong_punishment

    return get_soft_overlong_punishment(max_completion_len=max_tokens, soft_punish_cache=ramp)
