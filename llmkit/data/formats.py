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


def _check_chat(row: Mapping[str, Any]) -> str | None:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return "row has no 'messages' list (chat format wants [{role, content}, ...])"
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or "role" not in msg or "content" not in msg:
            return f"messages[{i}] must be an object with 'role' and 'content'"
        if msg["role"] not in CHAT_ROLES:
            return f"messages[{i}].role is '{msg['role']}'; use one of {', '.join(CHAT_ROLES)}"
        if not isinstance(msg["content"], str):
            return f"messages[{i}].content must be a string"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant message, so there is nothing to train on"
    return None


FORMATS: dict[str, Format] = {
    "alpaca": Format(
        required=("instruction", "output"),
        optional=("input",),
        tasks=("sft",),
        doc="instruction / optional input / output; the prompt is masked, the output and EOS are trained",
        check_row=_strings("instruction", "output", optional=("input",)),
    ),
    "chat": Format(
        required=("messages",),
        optional=(),
        tasks=("sft",),
        doc="a list of {role, content} messages rendered with the tokenizer's chat template; assistant turns train",
        check_row=_check_chat,
    ),
    "text": Format(
        required=("text",),
        optional=(),
        tasks=("sft",),
        doc="plain text for continued pre-training; every token trains",
        check_row=_strings("text"),
    ),
}


def formats_for_task(task: str) -> list[str]:
    return [name for name, fmt in FORMATS.items() if task in fmt.tasks]
