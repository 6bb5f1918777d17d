"""What a reward model reads: one prompt + answer as token ids, the same way in training, evaluation, `llmkit
predict` and when a GRPO run scores its completions with it.

Decoders (last-token pooling) read prompt + answer as TRL's RewardTrainer tokenises it — the chat template for a
conversation, EOS appended to text — so the score is read at the end of the answer. Encoders (pooling [CLS]) read the
two texts as a pair, `[CLS] prompt [SEP] answer [SEP]`. llmkit tokenises the pairs itself (TRL skips pairs that come
tokenised) because TRL appends `eos_token` to every text, which encoders do not have.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmkit.data.preference import build_pairs, sequence_ids
from llmkit.data.sources import Rows
from llmkit.data.tokens import TokenStats
from llmkit.errors import DataError
from llmkit.recipe import DataSection

Text = str | list[dict[str, str]]


def reward_ids(prompt: Text, answer: Text, tokenizer: Any, encoder: bool) -> list[int]:
    """The tokens a reward model scores for one answer to one prompt (uncut)."""
    if not encoder:
        return list(sequence_ids(prompt, answer, tokenizer))
    if not isinstance(prompt, str) or not isinstance(answer, str):
        raise DataError("an encoder reward model reads text; chat-message pairs need a decoder with a chat template")
    return list(tokenizer(prompt, answer)["input_ids"])


def build_reward_pairs(
    rows: Rows, data: DataSection, tokenizer: Any, encoder: bool, check: bool = True
) -> tuple[list[dict[str, Any]], list[str], TokenStats]:
    """Pairs as `chosen_ids` / `rejected_ids` (TRL's tokenised layout) of at most data.max_length tokens, after the
    preference data's checks (identical pairs, data.overlong; `check=False`: the caller refuses identical pairs
    once per split)."""

    def lengths(pair: dict[str, Any]) -> tuple[int, int]:
        answers = [reward_ids(pair["prompt"], pair[key], tokenizer, encoder) for key in ("chosen", "rejected")]
        return max(len(ids) for ids in answers), 0  # a reward model scores whatever is left: always truncatable

    pairs, origins, stats = build_pairs(rows, data, tokenizer, lengths, check=check)
    return [encode_pair(pair, tokenizer, encoder, data.max_length) for pair in pairs], origins, stats


def encode_pair(pair: Mapping[str, Any], tokenizer: Any, encoder: bool, max_length: int) -> dict[str, Any]:
    """One pair in TRL's tokenised layout, each answer cut to max_length tokens."""
    return {
        f"{key}_ids": reward_ids(pair["prompt"], pair[key], tokenizer, encoder)[:max_length]
        for key in ("chosen", "rejected")
    }
