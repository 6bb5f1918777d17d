"""What every task's tokenisation shares: the ignored label id, the one length policy, and the counts printed
afterwards.

The length policy (`data.max_length`, `data.max_target_length`, `data.overlong`) is decided here, for every task, by
`LengthPolicy.decide`; each data module then does what the decision says in its own terms (slices ids, re-encodes
with the tokenizer's truncation, splits a document into windows).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Literal

from llmkit.errors import DataError

if TYPE_CHECKING:
    from llmkit.recipe import DataSection

IGNORE_INDEX = -100  # a label that is not trained (prompt tokens, padding): PyTorch's cross-entropy skips it

Decision = Literal["keep", "drop", "truncate", "split"]
FLAGGED_KEPT = 5  # rows named in an error about a whole split


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
    # rows a check over the whole split flags (a stop token never trained, an identical pair): how many, and the
    # first few by where they are, so the check can raise once for the whole split however it was batched
    flag_counts: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, list[str]] = field(default_factory=dict)

    def add(self, n_tokens: int) -> None:
        self.kept += 1
        self.tokens += n_tokens
        self.max_tokens = max(self.max_tokens, n_tokens)

    def flag(self, kind: str, origin: str) -> None:
        self.flag_counts[kind] = self.flag_counts.get(kind, 0) + 1
        if len(self.flagged.setdefault(kind, [])) < FLAGGED_KEPT:
            self.flagged[kind].append(origin)

    @classmethod
    def merged(cls, parts: Iterable[TokenStats]) -> TokenStats:
        """The counts of a split from the counts of its batches, in order."""
        total = cls()
        for i, part in enumerate(parts):
            if i == 0:
                total.unit, total.target_tokens = part.unit, part.target_tokens
            elif part.target_tokens is not None:
                total.target_tokens = (total.target_tokens or 0) + part.target_tokens
            for f in fields(cls):
                if f.type == "int" and f.name != "max_tokens":
                    setattr(total, f.name, getattr(total, f.name) + getattr(part, f.name))
            total.max_tokens = max(total.max_tokens, part.max_tokens)
            for kind, count in part.flag_counts.items():
                total.flag_counts[kind] = total.flag_counts.get(kind, 0) + count
                kept = total.flagged.setdefault(kind, [])
                kept += part.flagged.get(kind, [])[: FLAGGED_KEPT - len(kept)]
        return total

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
