"""What every task's tokenisation shares: the ignored label id, the one length policy, the counts printed afterwards,
and the loop over rows.

The length policy (`data.max_length`, `data.max_target_length`, `data.overlong`) is decided here, for every task, by
`LengthPolicy.decide`; each data module then does what the decision says in its own terms (slices ids, re-encodes
with the tokenizer's truncation, splits a document into windows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from llmkit.errors import DataError

if TYPE_CHECKING:
    from llmkit.data.sources import Rows
    from llmkit.recipe import DataSection

IGNORE_INDEX = -100  # a label that is not trained (prompt tokens, padding): PyTorch's cross-entropy skips it

Decision = Literal["keep", "drop", "truncate", "split"]


@dataclass
class TokenStats:
    """What happened to the rows of one split, for the line printed after tokenising it."""

    rows: int = 0
    kept: int = 0
    dropped_overlong: int = 0
    truncated: int = 0
    split_pieces: int = 0  # extra examples made by data.overlong: split
    dropped_no_target: int = 0  # examples with no trainable token left
    identical: int = 0  # preference pairs dropped with chosen identical to rejected
    tokens: int = 0
    target_tokens: int | None = None  # trained tokens, where the task counts them
    max_tokens: int = 0
    unit: str = "examples"

    def add(self, n_tokens: int) -> None:
        self.kept += 1
        self.tokens += n_tokens
        self.max_tokens = max(self.max_tokens, n_tokens)

    def summary(self, name: str) -> str:
        parts = [f"{self.kept} {self.unit} from {self.rows} rows of {name}"]
        if self.unit == "pairs":
            parts.append(f"longest {self.max_tokens} tokens")
        else:
            parts.append(f"{self.tokens} tokens (longest {self.max_tokens})")
        if self.target_tokens is not None:
            parts.insert(2, f"{self.target_tokens} trained")
        counts = (
            (self.identical, "dropped with chosen identical to rejected"),
            (self.dropped_overlong, "dropped as longer than max_length"),
            (self.truncated, "truncated"),
            (self.dropped_no_target, "dropped with no trainable token left"),
        )
        parts += [f"{n} {what}" for n, what in counts if n]
        return ", ".join(parts)


@dataclass(frozen=True)
class LengthPolicy:
    """data.max_length (the input, or prompt + answer), data.max_target_length (a seq2seq target; default
    max_length) and data.overlong: what happens to an example that does not fit."""

    max_length: int
    overlong: str
    max_target_length: int | None = None

    @classmethod
    def of(cls, data: DataSection) -> LengthPolicy:
        return cls(data.max_length, data.overlong, data.max_target_length)

    @property
    def target_limit(self) -> int:
        return self.max_target_length or self.max_length

    def decide(
        self,
        length: int,
        origin: str,
        stats: TokenStats,
        target_length: int | None = None,
        truncatable: bool = True,
    ) -> Decision:
        """'keep' an example that fits; otherwise 'drop', 'truncate' or 'split' as data.overlong says, counted in
        `stats` (a split is counted by the caller, which knows how many pieces it made); 'error' raises, naming the
        row and the limit it passed. `truncatable=False`: cutting would leave nothing to train (a preference pair
        whose prompt fills max_length), so 'truncate' drops it."""
        limits = [(length, self.max_length, "data.max_length")]
        if target_length is not None:
            limits.append((target_length, self.target_limit, "data.max_target_length"))
        over = [(n, limit, key) for n, limit, key in limits if n > limit]
        if not over:
            return "keep"
        if self.overlong == "error":
            n, limit, key = over[0]
            raise DataError(
                f"is {n} tokens, longer than {key}={limit}; raise it or set data.overlong to drop or truncate", origin
            )
        if self.overlong == "drop" or (self.overlong == "truncate" and not truncatable):
            stats.dropped_overlong += 1
            return "drop"
        if self.overlong == "truncate":
            stats.truncated += 1
        return self.overlong  # type: ignore[return-value]


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
