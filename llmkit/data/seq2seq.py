"""Seq2seq examples: source (with the recipe's prefix, e.g. "summarize: ") → input ids, target → labels.

The tokenizer adds what its model expects (T5 appends </s>; BART wraps in <s> … </s>); labels are padded with -100
by the collator, and the model builds its decoder inputs by shifting them right.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmkit.data.sources import Rows
from llmkit.data.tokens import LengthPolicy, TokenStats, encode_rows
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
        limit = self.policy.max_length
        return self.tokenizer(self.prefix + row["source"], truncation=truncate, max_length=limit)["input_ids"]

    def _target_ids(self, row: Mapping[str, Any], truncate: bool = False) -> list[int]:
        limit = self.policy.target_limit
        return self.tokenizer(text_target=row["target"], truncation=truncate, max_length=limit)["input_ids"]

    def encode(self, row: Mapping[str, Any], origin: str, stats: TokenStats) -> dict[str, Any] | None:
        """{input_ids, labels} for one row, or None when data.overlong drops it."""
        source, target = self.source_ids(row), self._target_ids(row)
        decision = self.policy.decide(len(source), origin, stats, target_length=len(target))
        if decision == "drop":
            return None
        if decision == "truncate":
            source, target = self.source_ids(row, truncate=True), self._target_ids(row, truncate=True)
        stats.add(len(source) + len(target))
        # labels stay a list: DataCollatorForSeq2Seq pads them itself and is slow on a list of arrays
        return {"input_ids": np.asarray(source, dtype=np.int64), "labels": list(target)}

    def examples(self, rows: Rows) -> tuple[list[dict[str, Any]], list[str], TokenStats]:
        return encode_rows(rows, self.encode)
