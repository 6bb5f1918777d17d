"""A task's model-ready examples for every split it reads, and where they came from.

`sources` records each split's source, content hash and row count as the splits are read, so what a run used is
written to its manifest without a runner having to remember it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmkit.console import say
from llmkit.data.load import load_source, load_splits
from llmkit.data.sources import Rows
from llmkit.data.tokens import TokenStats
from llmkit.errors import DataError
from llmkit.recipe import DataSection

Encode = Callable[[Rows], tuple[list[Any], list[str], TokenStats]]


@dataclass
class Prepared:
    train: list[Any]
    train_where: list[str]
    held_out: list[Any] | None = None
    held_out_where: list[str] | None = None
    test: list[Any] | None = None  # data.test, scored once after training by the tasks that score it
    sources: dict[str, Any] = field(default_factory=dict)  # split → {source, sha256, rows}: the manifest's `data`


def prepare_examples(
    train_rows: Rows, held_out_rows: Rows | None, encode: Encode, empty: str, unit: str = "training examples"
) -> Prepared:
    """Encode the training and held-out rows with the task's `encode(rows) -> (examples, where, stats)`, saying what
    happened to each split. No training example left is an error; `empty` says why and what to change."""
    train, where, stats = encode(train_rows)
    say(f"train: {stats.summary(train_rows.name)}")
    if not train:
        raise DataError(f"no {unit} are left {empty}", train_rows.name)
    prepared = Prepared(train, where, sources={"train": train_rows.describe()})
    if held_out_rows is not None:
        prepared.held_out, prepared.held_out_where, stats = encode(held_out_rows)
        prepared.sources["validation"] = held_out_rows.describe()
        say(f"held-out: {stats.summary(held_out_rows.name)}")
    return prepared


def prepare_splits(data: DataSection, encode: Encode, empty: str, unit: str = "training examples") -> Prepared:
    """The recipe's training and held-out rows (data.validation or a seeded data.validation_split), encoded."""
    train_rows, held_out_rows = load_splits(data)
    return prepare_examples(train_rows, held_out_rows, encode, empty, unit)


def add_test(
    prepared: Prepared, data: DataSection, encode: Encode, check: Callable[[Rows], None] | None = None
) -> None:
    """data.test's examples and source, for the tasks that score a test split after training; nothing without one.
    `check(rows)` runs before encoding (a classifier refuses labels it never saw)."""
    if data.test is None:
        return
    rows = load_source(data.test, data)
    if check is not None:
        check(rows)
    prepared.test, _, stats = encode(rows)
    prepared.sources["test"] = rows.describe()
    say(f"test: {stats.summary(rows.name)}")
