"""Preference pairs: checked rows → TRL's prompt / chosen / rejected layout, with llmkit's length and pair policies.

TRL's trainers tokenise the pairs themselves (with the chat template for conversational rows); this module decides
*what* they see: how an alpaca row becomes a prompt (the same way SFT builds it, so a model is preference-tuned in
the format it was instruction-tuned in), which pairs are dropped, and why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from llmkit.data.sft import CHATML_TEMPLATE, alpaca_prompt, alpaca_user, uses_chat_template
from llmkit.data.sources import Rows
from llmkit.data.tokens import LengthPolicy, TokenStats
from llmkit.errors import DataError
from llmkit.recipe import DataSection

MAX_REPORTED = 5


def wants_chat(fmt: str, template: str, tokenizer: Any) -> bool:
    """Alpaca pairs follow SFT's rule (the chat template on 'auto' when the tokenizer has one); text pairs of format
    preference are used as written, as TRL does, unless data.template is 'chat'."""
    return uses_chat_template("alpaca", template, tokenizer) if fmt == "alpaca_preference" else template == "chat"


def to_trl(row: Mapping[str, Any], fmt: str, use_chat: bool, system_prompt: str | None) -> dict[str, Any]:
    """One checked row in TRL's layout: strings (standard) or lists of messages (conversational)."""
    if fmt == "alpaca_preference":
        prompt_text, user_text = alpaca_prompt(row), alpaca_user(row)
    elif isinstance(row["chosen"], str):
        prompt_text = user_text = row["prompt"]
    else:  # conversational already; an implicit prompt (the turns both share) is made explicit, as TRL does
        from trl.data_utils import extract_prompt

        out = dict(row) if row.get("prompt") is not None else extract_prompt(row)
        out = {key: list(out[key]) for key in ("prompt", "chosen", "rejected")}
        if system_prompt and out["prompt"][0]["role"] != "system":
            out["prompt"].insert(0, {"role": "system", "content": system_prompt})
        return out
    if not use_chat:
        return {"prompt": prompt_text, "chosen": row["chosen"], "rejected": row["rejected"]}
    prompt = [{"role": "user", "content": user_text}]
    if system_prompt:
        prompt.insert(0, {"role": "system", "content": system_prompt})
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": row["chosen"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"]}],
    }


def identical(row: Mapping[str, Any]) -> bool:
    chosen, rejected = row["chosen"], row["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        return chosen.strip() == rejected.strip()
    return chosen == rejected


def sequence_ids(prompt: str | list[dict[str, str]], answer: str | list[dict[str, str]], tokenizer: Any) -> list[int]:
    """Prompt + answer as TRL's preference trainers tokenise it: a conversation through the chat template, text with
    EOS appended to the answer."""
    if isinstance(prompt, list):
        return _chat_ids(tokenizer, prompt + answer)
    eos = tokenizer.eos_token
    return tokenizer(prompt + answer + ("" if answer.endswith(eos) else eos))["input_ids"]


def _chat_ids(tokenizer: Any, messages: list[dict[str, str]], **kwargs: Any) -> list[int]:
    return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"]


def tokenize_pair(pair: Mapping[str, Any], tokenizer: Any) -> dict[str, list[int]]:
    """prompt_ids / chosen_ids / rejected_ids as TRL's DPOTrainer tokenises a pair (`sequence_ids`); an answer starts
    where the tokenised prompt and prompt + answer first differ. llmkit needs the same ids before the trainer exists,
    to apply data.overlong and to score held-out pairs."""
    if isinstance(pair["prompt"], list):
        prompt = _chat_ids(tokenizer, pair["prompt"], add_generation_prompt=True)
    else:
        prompt = tokenizer(pair["prompt"])["input_ids"]
    full = {key: sequence_ids(pair["prompt"], pair[key], tokenizer) for key in ("chosen", "rejected")}
    start = min(_common_prefix(prompt, full[key]) for key in ("chosen", "rejected"))
    return {
        "prompt_ids": prompt[:start],
        "chosen_ids": full["chosen"][start:],
        "rejected_ids": full["rejected"][start:],
    }


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def pair_lengths(pair: Mapping[str, Any], tokenizer: Any) -> tuple[int, int]:
    """(prompt + the longer answer, the prompt) in tokens, as TRL's DPOTrainer will see the pair."""
    ids = tokenize_pair(pair, tokenizer)
    prompt_len = len(ids["prompt_ids"])
    return prompt_len + max(len(ids["chosen_ids"]), len(ids["rejected_ids"])), prompt_len


def build_pairs(
    rows: Rows,
    data: DataSection,
    tokenizer: Any,
    lengths: Callable[[dict[str, Any]], tuple[int, int]] | None = None,
    check: bool = True,
) -> tuple[list[dict[str, Any]], list[str], TokenStats]:
    """Pairs in TRL's layout, where each came from, and what happened to the rows. Identical pairs and overlong pairs
    follow data.identical_pairs and data.overlong; either way the user is told how many. `lengths(pair)` gives
    (tokens the pair needs, of which the prompt), by default as DPO tokenises it. Identical pairs are refused
    (`check_identical`) here, or — with `check=False`, for one batch of a split — by the caller."""
    use_chat = wants_chat(data.format, data.template, tokenizer)
    if len({isinstance(row["chosen"], str) for row in rows.rows}) > 1:
        raise DataError("mixes rows with text answers and rows with chat messages; use one layout per file", rows.name)
    if (use_chat or isinstance(rows.rows[0].get("chosen"), list)) and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    pairs, origins = [], []
    stats = TokenStats(rows=len(rows), unit="pairs")
    for row, where in zip(rows.rows, rows.where, strict=True):
        if identical(row):
            stats.identical += 1
            stats.flag("identical", where)
    if check:
        check_identical(stats, data.identical_pairs)
    policy = LengthPolicy.of(data)
    for row, where in zip(rows.rows, rows.where, strict=True):
        if identical(row):
            continue
        pair = to_trl(row, data.format, use_chat, data.system_prompt)
        length, prompt_len = (lengths or (lambda p: pair_lengths(p, tokenizer)))(pair)
        if policy.decide(length, where, stats, truncatable=prompt_len < policy.max_length) == "drop":
            continue
        pairs.append(pair)
        origins.append(where)
        stats.add(min(length, policy.max_length))
    return pairs, origins, stats


def check_identical(stats: TokenStats, mode: str) -> None:
    """With data.identical_pairs: error, rows whose chosen equals rejected are refused, the first few named."""
    count = stats.flag_counts.get("identical", 0)
    if count and mode == "error":
        more = f" (and {count - MAX_REPORTED} more)" if count > MAX_REPORTED else ""
        raise DataError(
            f"{count} rows have chosen identical to rejected, so there is no preference to learn{more}:\n  "
            + "\n  ".join(stats.flagged["identical"][:MAX_REPORTED])
            + "\n  fix or remove them, or set data.identical_pairs: drop"
        )
