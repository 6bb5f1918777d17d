"""Whether rows fit their format, and the one-sentence errors when they do not: a column no row has, and the first
few bad rows named with their file and line. Shared by the Arrow path (`llmkit.data.table`) and the list path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llmkit.errors import DataError
from llmkit.recipe.formats import FORMATS

MAX_REPORTED = 5


def check_columns(columns: Sequence[str], fmt: str, name: str, mixed: bool = False) -> None:
    """A field of the format that no row has is a missing column: one sentence, not one per row. In a mixture
    (`mixed`), the format the columns do fit is named: a source of another format is the usual cause."""
    required = FORMATS[fmt].required
    absent = [field for field in required if field not in columns]
    if not absent:
        return
    names = " or ".join(f"'{field}'" for field in absent)
    listed = f"its columns are {', '.join(columns)}; " if columns else ""
    fits = [other for other, spec in FORMATS.items() if other != fmt and set(spec.required) <= set(columns)]
    fits.sort(key=lambda other: -len(FORMATS[other].required))  # the most specific: chat before text
    looks = ""
    if mixed and fits:
        looks = f"; it looks like format '{fits[0]}', and every source of a mixture is read in data.format"
    raise DataError(
        f"has no {names} column, which format '{fmt}' needs ({', '.join(required)}); {listed}"
        f"map yours with data.columns, e.g. columns: {{{absent[0]}: <your column>}}{looks}",
        name,
    )


def row_problems(rows: Iterable[tuple[Mapping[str, Any], Any]], fmt: str) -> list[tuple[Any, str, Mapping[str, Any]]]:
    """(where, problem, row) for every row that does not fit `fmt`."""
    check = FORMATS[fmt].check_row
    return [(where, problem, row) for row, where in rows if (problem := check(row))]


def bad_rows_error(
    bad: Sequence[tuple[str, str, Mapping[str, Any]]], count: int, fmt: str, columns: Sequence[str]
) -> DataError:
    """`N rows do not fit format 'x'`, the first few with file and line, and a hint when a field the format needs is
    a name the file never uses (likely a column to map)."""
    lines = [f"{where}: {problem}" for where, problem, _ in bad[:MAX_REPORTED]]
    more = f" (and {count - MAX_REPORTED} more)" if count > MAX_REPORTED else ""
    hint = ""
    missing = {name for _, _, row in bad for name in FORMATS[fmt].required if row.get(name) is None}
    if columns and missing - set(columns):
        hint = f"\n  the file's columns are {', '.join(columns)}; map them with data.columns"
    return DataError(f"{count} rows do not fit format '{fmt}'{more}:\n  " + "\n  ".join(lines) + hint)
