"""Classification examples: label names ↔ ids, and a text (or a text pair) tokenised for a sequence classifier.

Labels are names (`ham`, `spam`; integers in a file become "0", "1"), mapped to ids in a fixed order and saved as
`id2label` / `label2id` in the model config, so a prediction reads back as a name.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from llmkit.data.sources import Rows
from llmkit.data.tokens import LengthPolicy, TokenStats
from llmkit.errors import DataError, RecipeError
from llmkit.recipe import ClassificationSection

# Decoders have no separator token of their own; a blank line reads as a boundary to a model pre-trained on text
# (EOS would not: to GPT-2, <|endoftext|> means "a new, unrelated document starts").
PAIR_SEPARATOR = "\n\n"


class Labelled(Protocol):
    """Rows with a label column: `Rows` (lists) or a `Split` (Arrow)."""

    name: str

    def column(self, key: str) -> list[Any]: ...

    def where_of(self, i: int) -> str: ...


def label_of(row: Mapping[str, Any]) -> str:
    return str(row["label"])


def _order(names: set[str]) -> list[str]:
    """Numeric labels in numeric order (so label 3 gets id 3), names alphabetically."""
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def label_names(rows: Labelled, section: ClassificationSection) -> list[str]:
    """The labels the head predicts, in id order: `classification.labels` if given, else every training label."""
    counts = Counter(str(label) for label in rows.column("label"))
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


def check_known(rows: Labelled, names: Sequence[str], problem: str) -> None:
    """Every row's label must be one of `names`; the first stranger is named with its file and row."""
    known = set(names)
    unknown = [(i, str(label)) for i, label in enumerate(rows.column("label")) if str(label) not in known]
    if unknown:
        i, label = unknown[0]
        more = f" (and {len(unknown) - 1} more rows)" if len(unknown) > 1 else ""
        raise DataError(f"label {label!r} {problem} ({', '.join(names)}){more}", rows.where_of(i))


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

    def _encode(self, rows: Sequence[Mapping[str, Any]], truncate: bool) -> list[dict[str, list[int]]]:
        """The rows' model inputs from one tokenizer call (a call per row costs far more, for the same ids)."""
        if not rows:
            return []
        options = {"truncation": "longest_first" if truncate else False, "max_length": self.policy.max_length}
        texts = [row["text"] for row in rows]
        if not self.pair:
            batch = self.tokenizer(texts, **options)
        elif self.native_pair:
            batch = self.tokenizer(texts, [row["text_pair"] for row in rows], **options)
        else:
            batch = self.tokenizer(
                [t + PAIR_SEPARATOR + r["text_pair"] for t, r in zip(texts, rows, strict=True)], **options
            )
        return [{key: batch[key][i] for key in batch} for i in range(len(rows))]

    def encode_all(
        self, rows: Sequence[Mapping[str, Any]], origins: Sequence[str], stats: TokenStats
    ) -> list[dict[str, np.ndarray] | None]:
        """Model inputs for each row, or None where data.overlong drops it."""
        out: list[dict[str, np.ndarray] | None] = []
        for row, origin, encoded in zip(rows, origins, self._encode(rows, truncate=False), strict=True):
            decision = self.policy.decide(len(encoded["input_ids"]), origin, stats)
            if decision == "drop":
                out.append(None)
                continue
            if decision == "truncate":
                encoded = self._encode([row], truncate=True)[0]
            stats.add(len(encoded["input_ids"]))
            out.append({key: np.asarray(value, dtype=np.int64) for key, value in encoded.items()})
        return out

    def encode(self, row: Mapping[str, Any], origin: str, stats: TokenStats) -> dict[str, np.ndarray] | None:
        """Model inputs for one row, or None when data.overlong drops it."""
        return self.encode_all([row], [origin], stats)[0]

    def examples(self, rows: Rows, label_ids: Mapping[str, int]) -> tuple[list[dict[str, Any]], list[str], TokenStats]:
        """Labelled examples ({input_ids, attention_mask, [token_type_ids], labels}) and where each came from."""
        stats = TokenStats(rows=len(rows))
        examples, origins = [], []
        for row, origin, example in zip(
            rows.rows, rows.where, self.encode_all(rows.rows, rows.where, stats), strict=True
        ):
            if example is not None:
                examples.append({**example, "labels": label_ids[label_of(row)]})
                origins.append(origin)
        return examples, origins, stats


def oversample(examples: list[dict[str, Any]], origins: list[str], seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Repeat each rarer class's examples (whole copies, then a seeded random share) until every class has as many
    as the largest. Unlike a weighted sampler, every original example is kept and the result is reproducible."""
    chosen = oversampled([int(example["labels"]) for example in examples], seed)
    return [examples[i] for i in chosen], [origins[i] for i in chosen]


def oversampled(labels: Sequence[int], seed: int) -> list[int]:
    """The positions `oversample` keeps, in order, from the examples' labels (`Dataset.select` takes them)."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[int(label)].append(i)
    target = max(len(members) for members in by_class.values())
    rng = random.Random(seed)
    chosen: list[int] = []
    for members in by_class.values():
        copies, remainder = divmod(target, len(members))
        chosen += members * copies + rng.sample(members, remainder)
    return sorted(chosen)
