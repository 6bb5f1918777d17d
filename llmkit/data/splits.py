"""Which rows each split holds: the training sources read and mixed, held-out rows carved from them, the max-samples
limits. Every split is an Arrow table of checked rows (`llmkit.data.table`) that knows where its rows came from.

A mixture (data.train as a list) is read like one file: each source is read and checked on its own, then the
sources are concatenated, or — with weights — interleaved by `datasets.interleave_datasets` (seeded with
data.split_seed, stopping when the first source runs out, so no row repeats and each source is its weight's share);
held-out rows are then carved from the mixture as from a single file.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmkit.data.sources import Rows
from llmkit.data.table import ROW, SOURCE, Locator, nested_columns, read, rows_of, source_kind, source_name, values
from llmkit.errors import DataError
from llmkit.recipe import DataSection, DataSource


@dataclass
class Split:
    """Checked rows of one split (a `datasets.Dataset` with `_row` / `_source`), its sources and where rows are."""

    rows: Any
    sources: list[DataSource]
    locators: list[Locator]
    fingerprints: list[str]

    @property
    def name(self) -> str:
        return " + ".join(locate.name for locate in self.locators)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, key: str) -> list[Any]:
        return values(self.rows, key)

    def where_of(self, i: int) -> str:
        row = self.rows[int(i)]
        return self.locators[row[SOURCE]](row[ROW])

    def describe(self) -> dict[str, Any]:
        """For the run manifest: the source, its content hash and how many of its rows this split holds; for a
        mixture, the same for every source (with its weight or max_samples) under `sources`."""
        if len(self.sources) == 1 and self.sources[0].in_memory is not None:
            kind = f"in-memory {self.sources[0].in_memory}"
            return {"source": self.name, "kind": kind, "fingerprint": self.fingerprints[0], "rows": len(self)}
        if len(self.sources) == 1:
            return {"source": self.name, "sha256": self.fingerprints[0], "rows": len(self)}
        counts = np.bincount(values(self.rows, SOURCE), minlength=len(self.sources))
        parts = [
            {"source": locate.name, "sha256": fp, "rows": int(n)}
            | ({"weight": s.weight} if s.weight is not None else {})
            | ({"max_samples": s.max_samples} if s.max_samples is not None else {})
            for s, locate, fp, n in zip(self.sources, self.locators, self.fingerprints, counts, strict=True)
        ]
        combined = hashlib.sha256("".join(self.fingerprints).encode()).hexdigest()
        return {"source": f"mixture of {len(self.sources)}", "sha256": combined, "rows": len(self), "sources": parts}

    def select(self, indices: list[int]) -> Split:
        rows = self.rows if indices == list(range(len(self.rows))) else self.rows.select(indices)
        return Split(rows, self.sources, self.locators, self.fingerprints)

    def to_rows(self) -> Rows:
        """The split as a list of rows (`llmkit eval` and the tests), read as the line reader reads them."""
        rows = rows_of(self.rows[:], nested_columns(self.rows)) if len(self) else []
        where = [self.locators[s](r) for s, r in zip(values(self.rows, SOURCE), values(self.rows, ROW), strict=True)]
        described = self.describe()
        fingerprint = described.get("sha256", described.get("fingerprint"))
        return Rows(rows, where, self.name, fingerprint, list(rows[0]) if rows else [])


def locators(sources: Sequence[DataSource]) -> list[Locator]:
    """Where rows are, without reading any: for loading a cached split."""
    return [Locator(source_name(s), source_kind(s)) for s in sources]


def read_split(sources: list[DataSource], data: DataSection, fingerprints: list[str], workdir: Path) -> Split:
    """A split's sources read, checked and mixed (a single source is a mixture of one)."""
    parts = [
        read(s, data.format, data.columns_of(s), workdir / f"{workdir.name}-{i}", i, data.num_proc, len(sources) > 1)
        for i, s in enumerate(sources)
    ]
    return Split(
        mix([ds for ds, _ in parts], sources, data.split_seed), sources, [loc for _, loc in parts], fingerprints
    )


def mix(parts: list[Any], sources: list[DataSource], seed: int) -> Any:
    """The sources' rows as one table: each cut to its max_samples, then interleaved by weight or concatenated."""
    import datasets

    parts = [
        ds.select(range(min(s.max_samples, len(ds)))) if s.max_samples else ds
        for ds, s in zip(parts, sources, strict=True)
    ]
    if len(parts) == 1:
        return parts[0]
    parts = _aligned(parts, [source_name(s) for s in sources])
    if sources[0].weight is not None:
        weights = [s.weight for s in sources]
        return datasets.interleave_datasets(
            parts, probabilities=weights, seed=seed, stopping_strategy="first_exhausted"
        )
    return datasets.concatenate_datasets(parts)


def _aligned(parts: list[Any], names: list[str]) -> list[Any]:
    """The same columns with the same types in every source: an optional field one file lacks is null there, and
    a column another file holds as another type is cast (a label read as an integer from one file, text from
    another); what cannot be cast is one sentence naming both files."""
    import datasets

    target: dict[str, Any] = {}
    for ds in parts:
        for column, feature in ds.features.items():
            target.setdefault(column, feature)
    features = datasets.Features(target)
    out = []
    for ds, name in zip(parts, names, strict=True):
        for column in target:
            if column not in ds.column_names:
                ds = ds.add_column(column, [None] * len(ds), feature=target[column])
        ds = ds.select_columns(list(target))
        if ds.features != features:
            try:
                ds = ds.cast(features)
            except (ValueError, TypeError, NotImplementedError) as exc:
                column = next(c for c in target if ds.features[c] != target[c])
                raise DataError(
                    f"holds column '{column}' as {ds.features[column]}, but {names[0]} holds it as {target[column]}; "
                    f"the sources of a mixture need the same layout ({type(exc).__name__})",
                    name,
                ) from None
        out.append(ds)
    return out


def carve(n: int, data: DataSection, name: str) -> tuple[list[int], list[int] | None]:
    """Training and held-out row positions: a seeded `validation_split` of the rows (when there is no
    data.validation), then the first max_train_samples / max_eval_samples of each."""
    held: list[int] | None = None
    train = list(range(n))
    if data.validation is None and data.validation_split > 0:
        order = list(range(n))
        random.Random(data.split_seed).shuffle(order)
        n_eval = max(1, round(n * data.validation_split))
        if n_eval >= n:
            raise DataError(
                f"has {n} rows, too few to hold out {data.validation_split:.0%}; "
                "add rows, give data.validation, or set data.validation_split: 0",
                name,
            )
        held, train = sorted(order[:n_eval]), sorted(order[n_eval:])
    if data.max_train_samples:
        train = train[: data.max_train_samples]
    if held is not None and data.max_eval_samples:
        held = held[: data.max_eval_samples]
    return train, held


def read_splits(
    data: DataSection, fingerprints: dict[str, list[str]], workdir: Path, test: bool = False
) -> dict[str, Split]:
    """Every split a task reads: train, held-out (data.validation or carved from train) and, with `test`, data.test."""
    train = read_split(data.required_train(), data, fingerprints["train"], workdir / "train")
    train_rows, held_rows = carve(len(train), data, train.name)
    splits = {"train": train.select(train_rows)}
    if data.validation is not None:
        held = read_split([data.validation], data, fingerprints["validation"], workdir / "validation")
        limit = data.max_eval_samples or len(held)
        splits["validation"] = held.select(list(range(min(limit, len(held)))))
    elif held_rows is not None:
        splits["validation"] = train.select(held_rows)
    if test and data.test is not None:
        splits["test"] = read_split([data.test], data, fingerprints["test"], workdir / "test")
    return splits


def split_sources(data: DataSection, test: bool = False) -> dict[str, list[DataSource]]:
    """The sources each split reads (held-out carved from train reads train's)."""
    out = {"train": data.required_train()}
    out["validation"] = [data.validation] if data.validation is not None else out["train"]
    if test and data.test is not None:
        out["test"] = [data.test]
    return out
