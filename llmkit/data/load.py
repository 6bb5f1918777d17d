"""Read the recipe's sources, check every row against its format, split off held-out data.

Turning rows into model inputs is task-specific (`llmkit.data.sft`, ...); this module ends at checked rows.
"""

from __future__ import annotations

import random

from llmkit.data.sources import Rows, read_source, rename_columns
from llmkit.errors import DataError
from llmkit.recipe import DataSection, DataSource
from llmkit.recipe.formats import FORMATS

MAX_REPORTED = 5


def load_source(source: DataSource, section: DataSection) -> Rows:
    rows = read_source(source.path, source.hub, source.split, source.subset, source.revision)
    rows = rename_columns(rows, section.columns)
    check_rows(rows, section.format)
    return rows


def check_rows(rows: Rows, fmt: str) -> None:
    """Every row must fit the format; the first few bad ones are reported together with file and row. A field that
    no row has is a missing column, and is reported as one sentence rather than once per row."""
    required = FORMATS[fmt].required
    absent = [name for name in required if not any(name in row for row in rows.rows)]
    if absent:
        names = " or ".join(f"'{name}'" for name in absent)
        columns = f"its columns are {', '.join(rows.columns)}; " if rows.columns else ""
        raise DataError(
            f"has no {names} column, which format '{fmt}' needs ({', '.join(required)}); {columns}"
            f"map yours with data.columns, e.g. columns: {{{absent[0]}: <your column>}}",
            rows.name,
        )
    check = FORMATS[fmt].check_row
    pairs = zip(rows.rows, rows.where, strict=False)
    bad = [(row, where, problem) for row, where in pairs if (problem := check(row))]
    if not bad:
        return
    lines = [f"{where}: {problem}" for _, where, problem in bad[:MAX_REPORTED]]
    more = f" (and {len(bad) - MAX_REPORTED} more)" if len(bad) > MAX_REPORTED else ""
    hint = ""
    missing = {name for row, _, _ in bad for name in required if row.get(name) is None}
    if rows.columns and missing - set(rows.columns):  # a name the file never uses: likely a column to map
        hint = f"\n  the file's columns are {', '.join(rows.columns)}; map them with data.columns"
    raise DataError(f"{len(bad)} rows do not fit format '{fmt}'{more}:\n  " + "\n  ".join(lines) + hint)


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
    train = load_source(section.train, section)
    held_out = None
    if section.validation is not None:
        held_out = load_source(section.validation, section)
    elif section.validation_split > 0:
        order = list(range(len(train)))
        random.Random(section.split_seed).shuffle(order)
        n_eval = max(1, round(len(train) * section.validation_split))
        if n_eval >= len(train):
            raise DataError(
                f"has {len(train)} rows, too few to hold out {section.validation_split:.0%}; "
                "add rows, give data.validation, or set data.validation_split: 0",
                train.name,
            )
        held_out = train.select(sorted(order[:n_eval]))
        train = train.select(sorted(order[n_eval:]))
    if section.max_train_samples:
        train = train.select(list(range(min(section.max_train_samples, len(train)))))
    if held_out is not None and section.max_eval_samples:
        held_out = held_out.select(list(range(min(section.max_eval_samples, len(held_out)))))
    return train, held_out
