"""Data formats: which fields a row must have, and how each row is checked. Torch-free, so `validate` can check them.

A format names the *layout of a row*; which tasks read it is the task's declaration (`llmkit.recipe.tasks`), and how
a row becomes tokens is the job of the data modules (`llmkit.data.sft` for text generation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Format:
    required: tuple[str, ...]
    optional: tuple[str, ...]
    doc: str
    check_row: Callable[[Mapping[str, Any]], str | None]
    # `llmkit predict` rows carry only the inputs (no output, label or target); None: check them like training rows
    check_input: Callable[[Mapping[str, Any]], str | None] | None = None

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


def _check_label(row: Mapping[str, Any]) -> str | None:
    label = row.get("label")
    if label is None:
        return "row has no 'label' field (or it is null)"
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        return f"'label' must be a string or an integer, got {type(label).__name__}"
    if isinstance(label, str) and not label.strip():
        return "'label' is empty"
    return None


def _with_label(*text_fields: str) -> Callable[[Mapping[str, Any]], str | None]:
    check_text = _strings(*text_fields)

    def check(row: Mapping[str, Any]) -> str | None:
        return check_text(row) or _check_label(row)

    return check


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


def _check_chat_row(row: Mapping[str, Any]) -> str | None:
    if not isinstance(row.get("messages"), list) or not row["messages"]:
        return "row has no 'messages' list (chat format wants [{role, content}, ...])"
    return _check_messages(row["messages"], "messages")


def _check_chat(row: Mapping[str, Any]) -> str | None:
    problem = _check_chat_row(row)
    if problem is None and not any(m["role"] == "assistant" for m in row["messages"]):
        return "no assistant message, so there is nothing to train on"
    return problem


def _check_chat_prompt(row: Mapping[str, Any]) -> str | None:
    """A conversation to continue: well-formed messages whose last turn is not the assistant's."""
    problem = _check_chat_row(row)
    if problem is None and row["messages"][-1]["role"] == "assistant":
        return "the last message is the assistant's; a prompt to continue ends with a user (or system) message"
    return problem


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


def _check_prompt(row: Mapping[str, Any]) -> str | None:
    """A prompt to answer: a non-empty string, or chat messages that end with the user's (or system's) turn. Any
    other column passes through to the reward functions."""
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        problem = _check_messages(prompt, "prompt")
        if problem is None and prompt[-1]["role"] == "assistant":
            return "the last message of 'prompt' is the assistant's; a prompt ends with a user (or system) message"
        return problem
    return _strings("prompt")(row)


def _scored(check_prompt: Callable[[Mapping[str, Any]], str | None]) -> Callable[[Mapping[str, Any]], str | None]:
    """`llmkit predict` on a reward model: the prompt, and a `response` to score or a `chosen` / `rejected` pair to
    compare."""

    def check(row: Mapping[str, Any]) -> str | None:
        answers = ("response",) if row.get("response") is not None else ("chosen", "rejected")
        if any(row.get(name) is None for name in answers):
            return "row has no 'response' to score (nor a 'chosen' and 'rejected' pair to compare)"
        if any(isinstance(row[name], list) for name in answers):  # chat messages: checked as a pair is
            return _check_preference({**row, "chosen": row[answers[0]], "rejected": row[answers[-1]]})
        return check_prompt(row) or _strings(*answers)(row)

    return check


FORMATS: dict[str, Format] = {
    "alpaca": Format(
        required=("instruction", "output"),
        optional=("input",),
        doc="instruction / optional input / output; the prompt is masked, the output and EOS are trained",
        check_row=_strings("instruction", "output", optional=("input",)),
        check_input=_strings("instruction", optional=("input",)),
    ),
    "chat": Format(
        required=("messages",),
        optional=(),
        doc="a list of {role, content} messages rendered with the tokenizer's chat template; assistant turns train",
        check_row=_check_chat,
        check_input=_check_chat_prompt,
    ),
    "text": Format(
        required=("text",),
        optional=(),
        doc="plain text for continued pre-training; every token trains",
        check_row=_strings("text"),
    ),
    "classification": Format(
        required=("text", "label"),
        optional=(),
        doc="a text and its label (a name or an integer); names are mapped to ids and saved in the model config",
        check_row=_with_label("text"),
        check_input=_strings("text"),
    ),
    "sentence-pair": Format(
        required=("text", "text_pair", "label"),
        optional=(),
        doc="two texts and a label (entailment, paraphrase, answer quality); encoders join them with [SEP]",
        check_row=_with_label("text", "text_pair"),
        check_input=_strings("text", "text_pair"),
    ),
    "seq2seq": Format(
        required=("source", "target"),
        optional=(),
        doc="a source text and the target text to generate from it (summary, translation)",
        check_row=_strings("source", "target"),
        check_input=_strings("source"),
    ),
    "preference": Format(
        required=("chosen", "rejected"),
        optional=("prompt", "response"),
        doc="prompt / chosen / rejected as text, or as chat messages (TRL's layout); the model learns to prefer chosen",
        check_row=_check_preference,
        check_input=_scored(_strings("prompt")),
    ),
    "alpaca_preference": Format(
        required=("instruction", "chosen", "rejected"),
        optional=("input", "response"),
        doc="instruction / optional input / chosen / rejected; the prompt is built as for alpaca",
        check_row=_strings("instruction", "chosen", "rejected", optional=("input",)),
        check_input=_scored(_strings("instruction", optional=("input",))),
    ),
    "prompt": Format(
        required=("prompt",),
        optional=(),
        doc="a prompt (text or chat messages) for the model to answer; other columns (an answer) go to the rewards",
        check_row=_check_prompt,
    ),
    "rationale": Format(
        required=("input", "label", "rationale"),
        optional=(),
        doc="input / label / rationale, as `llmkit rationales` writes them; the student learns both label and why",
        check_row=_strings("input", "label", "rationale"),
    ),
}

# Formats by what a row holds: text to generate, a labelled text, a preference pair (data.identical_pairs applies),
# a prompt for the model to answer (online RL).
TEXT_FORMATS = ("alpaca", "chat", "text")
LABEL_FORMATS = ("classification", "sentence-pair")
PAIR_FORMATS = ("preference", "alpaca_preference")
PROMPT_FORMATS = ("prompt",)
