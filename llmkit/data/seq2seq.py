"""Seq2seq examples: source (with the recipe's prefix, e.g. "summarize: ") → input ids, target → labels.

The tokenizer adds what its model expects (T5 appends </s>; BART wraps in <s> … </s>); labels are padded with -100
by the collator, and the model builds its decoder inputs by shifting them right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmkit.data.sources import Rows
from llmkit.data.tokens import LengthPolicy, TokenStats
from llmkit.recipe import DataSection


@dataclass
class Encoder:
    tokenizer: Any
    prefix: str
    policy: LengthPolicy

    @classmethod
    def for_data(cls, tokenizer: Any, data: DataSection, prefix: str | None = None) -> Encoder:
        """The recipe's encoder; `prefix` replaces data.source_prefix (rationale students prefix each task)."""
        return cls(tokenizer, (data.source_prefix or "") if prefix is None else prefix, LengthPolicy.of(data))

    def source_ids(self, row: Mapping[str, Any], truncate: bool = False) -> list[int]:
        return self._sources([row], truncate)[0]

    def _sources(self, rows: Sequence[Mapping[str, Any]], truncate: bool = False) -> list[list[int]]:
        limit = self.policy.max_length
        texts = [self.prefix + row["source"] for row in rows]
        return self.tokenizer(texts, truncation=truncate, max_length=limit)["input_ids"] if rows else []

    def _targets(self, rows: Sequence[Mapping[str, Any]], truncate: bool = False) -> list[list[int]]:
        limit = self.policy.target_limit
        texts = [row["target"] for row in rows]
        return self.tokenizer(text_target=texts, truncation=truncate, max_length=limit)["input_ids"] if rows else []

    def encode_all(
        self, rows: Sequence[Mapping[str, Any]], origins: Sequence[str], stats: TokenStats
    ) -> list[dict[str, Any] | None]:
        """{input_ids, labels} for each row, or None where data.overlong drops it; the rows go to the tokenizer in
        one call each for sources and targets (a call per row costs far more, for the same ids)."""
        out: list[dict[str, Any] | None] = []
        pairs = zip(rows, origins, self._sources(rows), self._targets(rows), strict=True)
        for row, origin, source, target in pairs:
            decision = self.policy.decide(len(source), origin, stats, target_length=len(target))
            if decision == "drop":
                out.append(None)
                continue
            if decision == "truncate":
                source, target = self._sources([row], True)[0], self._targets([row], True)[0]
            stats.add(len(source) + len(target))
            # labels stay a list: DataCollatorForSeq2Seq pads them itself and is slow on a list of arrays
            out.append({"input_ids": np.asarray(source, dtype=np.int64), "labels": list(target)})
        return out

    def encode(self, row: Mapping[str, Any], origin: str, stats: TokenStats) -> dict[str, Any] | None:
        """{input_ids, labels} for one row, or None when data.overlong drops it."""
        return self.encode_all([row], [origin], stats)[0]

    def examples(self, rows: Rows) -> tuple[list[dict[str, Any]], list[str], TokenStats]:
        stats = TokenStats(rows=len(rows))
        encoded = self.encode_all(rows.rows, rows.where, stats)
        kept = [(example, origin) for example, origin in zip(encoded, rows.where, strict=True) if example is not None]
        return [example for example, _ in kept], [origin for _, origin in kept], stats
