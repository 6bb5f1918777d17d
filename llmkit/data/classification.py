"""Classification examples: label names ↔ ids, and a text (or a text pair) tokenised for a sequence classifier.

Labels are names (`ham`, `spam`; integers in a file become "0", "1"), mapped to ids in a fixed order and saved as
`id2label` / `label2id` in the model config, so a prediction reads back as a name.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmkit.data.sources import Rows
from llmkit.data.tokens import LengthPolicy, TokenStats, encode_rows
from llmkit.errors import DataError, RecipeError
from llmkit.recipe import ClassificationSection

# Decoders have no separator token of their own; a blank line reads as a boundary to a model pre-trained on text
# (EOS would not: to GPT-2, <|endoftext|> means "a new, unrelated document starts").
PAIR_SEPARATOR = "\n\n"


def label_of(row: Mapping[str, Any]) -> str:
    return str(row["label"])


def _order(names: set[str]) -> list[str]:
    """Numeric labels in numeric order (so label 3 gets id 3), names alphabetically."""
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def label_names(rows: Rows, section: ClassificationSection) -> list[str]:
    """The labels the head predicts, in id order: `classification.labels` if given, else every training label."""
    counts = Counter(label_of(row) for row in rows.rows)
    if section.labels is not None:
        check_known(rows, section.labels, "is not in classification.labels")
        absent = [name for name in section.labels if name not in counts]
        if absent:
            raise RecipeError(
                f"classification.labels lists {absent[0]!r}, which never appears in the training data "
                f"({rows.name}), so the classifier could never learn it; remove it or add rows with that label."
            )
        names = list(section.labels)
    else:
        names = _order(set(counts))
    if len(names) < 2:
        raise DataError(f"has only the label {names[0]!r}; a classifier needs at least two labels", rows.name)
    if section.num_labels is not None and section.num_labels != len(names):
        raise RecipeError(
            f"classification.num_labels is {section.num_labels} but the training data has {len(names)} labels "
            f"({', '.join(names)}); set num_labels: {len(names)}, or fix the data's label column."
        )
    return names


def check_known(rows: Rows, names: Sequence[str], problem: str) -> None:
    """Every row's label must be one of `names`; the first stranger is named with its file and row."""
    known = set(names)
    pairs = zip(rows.rows, rows.where, strict=True)
    unknown = [(where, label_of(row)) for row, where in pairs if label_of(row) not in known]
    if unknown:
        where, label = unknown[0]
        more = f" (and {len(unknown) - 1} more rows)" if len(unknown) > 1 else ""
        raise DataError(f"label {label!r} {problem} ({', '.join(names)}){more}", where)


@dataclass
class Encoder:
    """Tokenises rows of format `classification` or `sentence-pair` the same way for training, eval and predict."""

    tokenizer: Any
    pair: bool
    policy: LengthPolicy

    @property
    def native_pair(self) -> bool:
        """Encoders have a pair template ([CLS] a [SEP] b [SEP], with segment ids); decoders get PAIR_SEPARATOR."""
        return getattr(self.tokenizer, "sep_token", None) is not None

    def _encode(self, row: Mapping[str, Any], truncate: bool) -> dict[str, list[int]]:
        options = {"truncation": "longest_first" if truncate else False, "max_length": self.policy.max_length}
        if not self.pair:
            return self.tokenizer(row["text"], **options)
        if self.native_pair:
            return self.tokenizer(row["text"], row["text_pair"], **options)
        return self.tokenizer(row["text"] + PAIR_SEPARATOR + row["text_pair"], **options)

    def encode(self, row: Mapping[str, Any], origin: str, stats: TokenStats) -> dict[str, np.ndarray] | None:
        """Model inputs for one row, or None when data.overlong drops it."""
        encoded = self._encode(row, truncate=False)
        decision = self.policy.decide(len(encoded["input_ids"]), origin, stats)
        if decision == "drop":
            return None
        if decision == "truncate":
            encoded = self._encode(row, truncate=True)
        stats.add(len(encoded["input_ids"]))
        return {key: np.asarray(value, dtype=np.int64) for key, value in encoded.items()}

    def examples(self, rows: Rows, label_ids: Mapping[str, int]) -> tuple[list[dict[str, Any]], list[str], TokenStats]:
        """Labelled examples ({input_ids, attention_mask, [token_type_ids], labels}) and where each came from."""

        def labelled(row: Mapping[str, Any], origin: str, stats: TokenStats) -> dict[str, Any] | None:
            example = self.encode(row, origin, stats)
            return None if example is None else {**example, "labels": label_ids[label_of(row)]}

        return encode_rows(rows, labelled)


def oversample(examples: list[dict[str, Any]], origins: list[str], seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Repeat each rarer class's examples (whole copies, then a seeded random share) until every class has as many
    as the largest. Unlike a weighted sampler, every original example is kept and the result is reproducible."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, example in enumerate(examples):
        by_class[int(example["labels"])].append(i)
    target = max(len(members) for members in by_class.values())
    rng = random.Random(seed)
    chosen: list[int] = []
    for members in by_class.values():
        copies, remainder = divmod(target, len(members))
        chosen += members * copies + rng.sample(members, remainder)
    chosen.sort()
    return [examples[i] for i in chosen], [origins[i] for i in chosen]
