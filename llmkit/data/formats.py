"""Data formats: which fields a row must have, and which tasks can use it. Torch-free, so `validate` can check them.

A format names the *layout of a row*; how that row becomes tokens is the job of the task's data module
(`llmkit.data.sft` for text generation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Format:
    required: tuple[str, ...]
    optional: tuple[str, ...]
    tasks: tuple[str, ...]
    doc: str
    check_row: Callable[[Mapping[str, Any]], str | None]

    @property
    def fields(self) -> tuple[str, ...]:
        return self.required + self.optional


def _strings(*required: str, optional: tuple[str, ...] = ()) -> Callable[[Mapping[str, Any]], str | None]:
    """A row check: every required field is a non-empty string; optional ones are strings or missing/null."""

    def check(row: Mapping[str, Any]) -> str | None:
        for name in required:
            value = row.get(name)
            if value is None:
                return f"row has no '{name}' field (or it is null)"
            if not isinstance(value, str):
                return f"'{name}' must be a string, got {type(value).__name__}"
            if not value.strip():
                return f"'{name}' is empty"
        for name in optional:
            value = row.get(name)
            if value is not None and not isinstance(value, str):
                return f"'{name}' must be a string, got {type(value).__name__}"
        return None

    return check


CHAT_ROLES = ("system", "user", "assistant")


def _check_messages(messages: Any, name: str) -> str | None:
    """One sentence about the first thing wrong with a list of {role, content} messages, or None."""
    if not isinstance(messages, list) or not messages:
        return f"'{name}' must be a non-empty list of {{role, content}} messages"
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or "role" not in msg or "content" not in msg:
            return f"{name}[{i}] must be an object with 'role' and 'content'"
        if msg["role"] not in CHAT_ROLES:
            return f"{name}[{i}].role is '{msg['role']}'; use one of {', '.join(CHAT_ROLES)}"
        if not isinstance(msg["content"], str):
            return f"{name}[{i}].content must be a string"
    return None


def _check_chat(row: Mapping[str, Any]) -> str | None:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return "row has no 'messages' list (chat format wants [{role, content}, ...])"
    problem = _check_messages(messages, "messages")
    if problem:
        return problem
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant message, so there is nothing to train on"
    return None


def _check_preference(row: Mapping[str, Any]) -> str | None:
    """prompt / chosen / rejected: all strings (prompt required), or all chat messages (TRL's conversational layout;
    without a prompt, the turns that chosen and rejected share are the prompt). Identical pairs are checked in
    `llmkit.data.preference`, because `data.identical_pairs: drop` may drop them."""
    for name in ("chosen", "rejected"):
        if row.get(name) is None:
            return f"row has no '{name}' field (or it is null)"
    if isinstance(row["chosen"], str) or isinstance(row["rejected"], str):
        problem = _strings("prompt", "chosen", "rejected")(row)
        return problem + " (with text answers, prompt, chosen and rejected are all strings)" if problem else None
    for name in ("prompt", "chosen", "rejected"):
        if name != "prompt" or row.get("prompt") is not None:
            problem = _check_messages(row[name], name)
            if problem:
                return problem
    for name in ("chosen", "rejected"):
        if row[name][-1]["role"] != "assistant":
            return f"the last message of '{name}' must be the assistant's answer"
    first = row["chosen"][0]
    if row.get("prompt") is None and (first != row["rejected"][0] or first["role"] == "assistant"):
        return "without a 'prompt', chosen and rejected must start with the same user (or system) turns"
    return None


PREFERENCE_TASKS = ("dpo", "orpo", "kto")

FORMATS: dict[str, Format] = {
    "alpaca": Format(
        required=("instruction", "output"),
        optional=("input",),
        tasks=("sft", "distill"),
        doc="instruction / optional input / output; the prompt is masked, the output and EOS are trained",
        check_row=_strings("instruction", "output", optional=("input",)),
    ),
    "chat": Format(
        required=("messages",),
        optional=(),
        tasks=("sft", "distill"),
        doc="a list of {role, content} messages rendered with the tokenizer's chat template; assistant turns train",
        check_row=_check_chat,
    ),
    "text": Format(
        required=("text",),
        optional=(),
        tasks=("sft", "distill"),
        doc="plain text for continued pre-training; every token trains",
        check_row=_strings("text"),
    ),
    "preference": Format(
        required=("chosen", "rejected"),
        optional=("prompt",),
        tasks=PREFERENCE_TASKS,
        doc="prompt / chosen / rejected as text, or as chat messages (TRL's layout); the model learns to prefer chosen",
        check_row=_check_preference,
    ),
    "alpaca_preference": Format(
        required=("instruction", "chosen", "rejected"),
        optional=("input",),
        tasks=PREFERENCE_TASKS,
        doc="instruction / optional input / chosen / rejected; the prompt is built as for alpaca",
        check_row=_strings("instruction", "chosen", "rejected", optional=("input",)),
    ),
    "rationale": Format(
        required=("input", "label", "rationale"),
        optional=(),
        tasks=("distill",),
        doc="input / label / rationale, as `llmkit rationales` writes them; the student learns both label and why",
        check_row=_strings("input", "label", "rationale"),
    ),
}


def formats_for_task(task: str) -> list[str]:
    return [name for name, fmt in FORMATS.items() if task in fmt.tasks]
