"""Prompt rows for online RL: checked rows → TRL's prompt layout, every other column kept for the reward functions.

TRL's GRPOTrainer renders and tokenises the prompts itself (the chat template for conversational prompts); this
module decides *what* it sees: a text prompt on an instruct model becomes a user turn, as SFT renders an alpaca row
(so a model is trained in the format it is prompted in), and prompts longer than `data.max_length` are dropped or
refused before any model loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from llmkit.data.sft import CHATML_TEMPLATE
from llmkit.data.sources import Rows
from llmkit.data.tokens import LengthPolicy, TokenStats
from llmkit.errors import DataError
from llmkit.recipe import DataSection

MAX_REPORTED = 5
# How a JSON value's type is named to the user; integers and floats are one kind, as they are to Arrow.
KINDS = {"str": "text", "int": "number", "float": "number", "bool": "true/false", "dict": "mapping"}


def prompt_uses_chat(template: str, tokenizer: Any) -> bool:
    """Text prompts become a user turn on 'chat', and on 'auto' when the tokenizer has a chat template."""
    return template == "chat" or (template == "auto" and bool(getattr(tokenizer, "chat_template", None)))


def to_trl(row: Mapping[str, Any], use_chat: bool, system_prompt: str | None) -> dict[str, Any]:
    """One checked row in TRL's layout: `prompt` a string (used as written) or messages; the other columns as read."""
    prompt = row["prompt"]
    if isinstance(prompt, str) and use_chat:
        prompt = [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        prompt = [dict(message) for message in prompt]
        if system_prompt and prompt[0]["role"] != "system":
            prompt.insert(0, {"role": "system", "content": system_prompt})
    return {**row, "prompt": prompt}


def prompt_ids(prompt: str | list[dict[str, str]], tokenizer: Any) -> list[int]:
    """The prompt's tokens as TRL's GRPOTrainer tokenises it (the generation prompt appended to a conversation)."""
    if isinstance(prompt, list):
        rendered = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(rendered["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def check_columns(rows: Rows, needed: Mapping[str, str]) -> None:
    """Every row has each column a built-in reward reads (`needed`: column → reward), or the rows that lack it are
    named before any model loads."""
    for column, reward in needed.items():
        missing = [where for row, where in zip(rows.rows, rows.where, strict=True) if row.get(column) is None]
        if not missing:
            continue
        more = f" (and {len(missing) - MAX_REPORTED} more)" if len(missing) > MAX_REPORTED else ""
        columns = f"; its columns are {', '.join(rows.columns)}" if rows.columns else ""
        raise DataError(
            f"{len(missing)} rows have no '{column}', which the {reward} reward compares the answer with{more}:\n  "
            + "\n  ".join(missing[:MAX_REPORTED])
            + f"\n  add the column, or point the reward at another one{columns}",
            rows.name if len(missing) == len(rows) else None,
        )


def check_types(rows: Iterable[tuple[Mapping[str, Any], str]]) -> None:
    """Each column other than the prompt holds one type (numbers count as one) in `rows` ((row, where) pairs): the
    rows become one Arrow table, which cannot hold an answer that is a number in one row and text in another."""
    kinds: dict[str, dict[str, str]] = {}
    for row, where in rows:
        for column, value in row.items():
            if column != "prompt" and value is not None:
                kind = KINDS.get(type(value).__name__, type(value).__name__)
                kinds.setdefault(column, {}).setdefault(kind, where)
    for column, seen in kinds.items():
        if len(seen) > 1:
            (first, _), (other, where) = list(seen.items())[:2]
            raise DataError(
                f"'{column}' is a {other} here but a {first} in earlier rows; give the column one type in every row "
                f"(e.g. quote the numbers)",
                where,
            )


def build_prompts(
    rows: Rows, data: DataSection, tokenizer: Any, needed: Mapping[str, str]
) -> tuple[list[dict[str, Any]], list[str], TokenStats]:
    """Prompts in TRL's layout and where each came from; prompts longer than data.max_length follow data.overlong
    (drop or error: a cut prompt would ask another question)."""
    check_columns(rows, needed)
    check_types(zip(rows.rows, rows.where, strict=True))
    use_chat = prompt_uses_chat(data.template, tokenizer)
    chat_rows = any(isinstance(row["prompt"], list) for row in rows.rows)
    if (use_chat or chat_rows) and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    policy = LengthPolicy.of(data)
    stats = TokenStats(rows=len(rows))
    examples, origins = [], []
    for row, where in zip(rows.rows, rows.where, strict=True):
        example = to_trl(row, use_chat, data.system_prompt)
        length = len(prompt_ids(example["prompt"], tokenizer))
        if policy.decide(length, where, stats, truncatable=False) == "drop":
            continue
        stats.add(length)
        examples.append(example)
        origins.append(where)
    return examples, origins, stats
