"""A recipe's splits as lists of checked rows (`Rows`), for `llmkit eval` and the tests.

They are read exactly as training reads them — the same reading, mixture and seeded carve-out (`llmkit.data.splits`)
— and then turned into Python rows; training itself keeps them in Arrow (`llmkit.data.prepared`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from llmkit.data.sources import Rows
from llmkit.data.splits import read_split, read_splits, split_sources
from llmkit.data.table import fingerprint
from llmkit.errors import DataError
from llmkit.recipe import DataSection, DataSource


def load_source(source: DataSource, section: DataSection) -> Rows:
    """One source's rows, renamed by the recipe's columns map and checked against its format."""
    with tempfile.TemporaryDirectory(prefix="llmkit-rows-") as scratch:
        return read_split([source], section, [fingerprint(source)], Path(scratch) / "rows").to_rows()


def load_split(section: DataSection, split: str) -> Rows:
    """One named split: 'train' and 'validation' exactly as training saw them (same seeded carve-out), or 'test'."""
    if split == "test":
        if section.test is None:
            raise DataError("the recipe has no data.test; add one, or evaluate --split validation")
        return load_source(section.test, section)
    train, held_out = load_splits(section)
    if split == "validation":
        if held_out is None:
            raise DataError("the recipe has no validation data (data.validation_split is 0 and no data.validation)")
        return held_out
    return train


def load_splits(section: DataSection) -> tuple[Rows, Rows | None]:
    """Training rows and held-out rows (from `validation`, or a seeded `validation_split` of train)."""
    sources = split_sources(section)
    prints = {split: [fingerprint(s) for s in group] for split, group in sources.items()}
    with tempfile.TemporaryDirectory(prefix="llmkit-rows-") as scratch:
        splits = read_splits(section, prints, Path(scratch))
        held = splits.get("validation")
        return splits["train"].to_rows(), held.to_rows() if held is not None else None
