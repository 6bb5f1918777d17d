"""What tokenising a split shares across tasks: the counts printed afterwards, the `data.overlong` rule for one
sequence (classification, seq2seq), and the loop over rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmkit.data.sources import Rows
from llmkit.errors import DataError


@dataclass
class TokenStats:
    rows: int = 0
    kept: int = 0
    dropped_overlong: int = 0
    truncated: int = 0
    tokens: int = 0
    max_tokens: int = 0

    def add(self, n_tokens: int) -> None:
        self.kept += 1
        self.tokens += n_tokens
        self.max_tokens = max(self.max_tokens, n_tokens)

    def summary(self, name: str) -> str:
        return ", ".join(self.parts(name))

    def parts(self, name: str) -> list[str]:
        parts = [f"{self.kept} examples from {self.rows} rows of {name}"]
        parts.append(f"{self.tokens} tokens (longest {self.max_tokens})")
        if self.dropped_overlong:
            parts.append(f"{self.dropped_overlong} dropped as longer than max_length")
        if self.truncated:
            parts.append(f"{self.truncated} truncated")
        return parts


def fits(n_tokens: int, max_length: int, overlong: str, origin: str, key: str = "data.max_length") -> bool:
    """Whether a sequence of `n_tokens` is kept as it is. Longer ones: 'error' raises naming the row, 'drop' returns
    False (the caller skips the row), 'truncate' returns False too and the caller re-encodes with truncation."""
    if n_tokens <= max_length:
        return True
    if overlong == "error":
        raise DataError(
            f"is {n_tokens} tokens, longer than {key}={max_length}; raise it or set data.overlong to drop or truncate",
            origin,
        )
    return False


def encode_rows(
    rows: Rows, encode: Callable[[Mapping[str, Any], str, TokenStats], dict[str, Any] | None]
) -> tuple[list[dict[str, Any]], list[str], TokenStats]:
    """Encode every row with `encode(row, origin, stats)`; rows it returns None for (dropped) are left out."""
    stats = TokenStats(rows=len(rows))
    examples, origins = [], []
    for row, origin in zip(rows.rows, rows.where, strict=True):
        example = encode(row, origin, stats)
        if example is not None:
            examples.append(example)
            origins.append(origin)
    return examples, origins, stats
