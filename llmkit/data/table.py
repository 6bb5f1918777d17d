"""A data source's rows as an Arrow table read by `datasets`, checked against the format, with where each row came from.

`datasets` reads local files without holding every row as a Python object (pyarrow for JSON lines and parquet,
pandas in chunks for CSV / TSV) into a memory-mapped table. Its errors name no line, so when it refuses a file,
llmkit's own line reader (`llmkit.data.sources`) reads the file to name the bad line. Where a row is (`file:line`)
is worked out only when it is needed (an error, `llmkit inspect-data`), from the row's position in its file.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkit.data.checks import MAX_REPORTED, bad_rows_error, check_columns, row_problems
from llmkit.data.sources import SUFFIXES, iter_rows, sha256_file, starts_with_bracket
from llmkit.errors import DataError, first_line
from llmkit.recipe import DataSource
from llmkit.recipe.formats import FORMATS, PROMPT_FORMATS

ROW, SOURCE = "_row", "_source"  # each row's position in its source, and which source of a mixture it is from
ROWS_PER_WORKER = 10_000  # a worker process costs about a second to start; below this many rows it does not pay
MAX_WORKERS = 8


@dataclass
class Locator:
    """Where row i of one source is: `file:line` in a file read line by line, `file[row N]` in a JSON array or
    parquet file, `hub:name[split] row N` in a hub dataset, `row i of train (in-memory list)` in rows passed from
    Python (i as the user indexes them). Line numbers are read from the file on first use."""

    name: str
    kind: str  # one of SUFFIXES' values, "json-array", "hub" or "memory"
    lines: array | None = field(default=None, repr=False)

    def __call__(self, i: int) -> str:
        if self.kind == "hub":
            return f"{self.name} row {i + 1}"
        if self.kind == "memory":
            return f"row {i} of {self.name}"
        if self.kind in ("json-array", "parquet", "stream"):  # a stream's rows are numbered as they are read
            return f"{self.name}[row {i + 1}]"
        if self.kind == "line":  # a stream read by the line reader: `i` is the line itself
            return f"{self.name}:{i}"
        if self.lines is None:
            self.lines = _line_numbers(Path(self.name), self.kind)
        return f"{self.name}:{self.lines[i]}"

    def ready(self) -> Locator:
        """Read the line numbers now (before the locator is copied into worker processes)."""
        if self.kind not in ("hub", "memory", "json-array", "parquet", "stream", "line") and self.lines is None:
            self.lines = _line_numbers(Path(self.name), self.kind)
        return self


def _line_numbers(path: Path, kind: str) -> array:
    """The line each row starts on, as llmkit's line reader counts rows (blank lines and rows are skipped alike)."""
    lines = array("q")
    if kind in ("csv", "tsv"):
        # A quoted field may span lines, so only the CSV reader knows where rows start; it also refuses a row with
        # too few fields, which pandas would fill in.
        for _, where in iter_rows(path):
            lines.append(int(where.rsplit(":", 1)[1]))
        return lines
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if raw.strip():
                lines.append(lineno)
    return lines


def workers(n_rows: int, asked: int | None = None) -> int | None:
    """Processes for `Dataset.map`: data.num_proc, else one per ROWS_PER_WORKER rows up to the CPUs this process
    may use (and MAX_WORKERS); None for one (no pool)."""
    if asked:
        n = min(asked, n_rows)
    else:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        n = min(cpus, MAX_WORKERS, n_rows // ROWS_PER_WORKER)
    return n if n > 1 else None


def source_kind(source: DataSource) -> str:
    if source.hub is not None:
        return "hub"
    if source.in_memory is not None:
        return "memory"
    path = Path(source.path or "").expanduser()
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"unsupported file type '{path.suffix}'; use one of {', '.join(SUFFIXES)}", str(path))
    return "json-array" if kind == "json" and starts_with_bracket(path) else kind


def source_name(source: DataSource) -> str:
    if source.in_memory is not None:
        return source.held_name or source.describe()
    return str(Path(source.path).expanduser()) if source.path else f"hub:{source.hub}[{source.split or 'train'}]"


def fingerprint(source: DataSource) -> str:
    """The content hash of a file, for a hub dataset its name, revision and the fingerprint `datasets` gives it, and
    for rows passed from Python the fingerprint of their Dataset (`datasets` hashes an in-memory table's content)."""
    if source.fingerprint is not None:
        return source.fingerprint
    if source.path is not None:
        return sha256_file(Path(source.path).expanduser())
    return _read_hub(source)._fingerprint


def read(
    source: DataSource,
    fmt: str,
    mapping: dict[str, str],
    workdir: Path,
    index: int = 0,
    num_proc: int | None = None,
    mixed: bool = False,
) -> tuple[Any, Locator]:
    """The source's rows in the format's fields (renamed by `mapping`: format field → the file's column), with
    `_row` and `_source` (= `index`), every row checked: a `datasets.Dataset`, and where its rows are. `workdir`
    (this source's own) holds the Arrow copy of the file while it is needed; `num_proc` is data.num_proc."""
    import datasets
    import numpy as np

    kind, name = source_kind(source), source_name(source)
    locate = Locator(name, kind)
    workdir.mkdir(parents=True, exist_ok=True)
    with _quiet():
        if kind == "memory":
            ds = _held(source, name)
        else:
            ds = _read_hub(source) if kind == "hub" else _read_file(Path(name), kind, fmt, mapping, workdir)
        if len(ds) == 0:
            raise DataError("has no rows; a dataset needs at least one example", name)
        if kind in ("csv", "tsv"):
            locate.ready()  # the CSV reader's pass: a row with too few fields is named here
        ds = _rename(ds, mapping, name)
        columns = list(ds.column_names)
        check_columns(columns, fmt, name, mixed)
        if fmt not in PROMPT_FORMATS:  # a prompt's other columns (its answer) are what the rewards read
            ds = ds.select_columns([f for f in FORMATS[fmt].fields if f in columns])
        ds = ds.add_column(ROW, np.arange(len(ds)), feature=datasets.Value("int64"))
        ds = ds.add_column(SOURCE, np.full(len(ds), index, np.int16), feature=datasets.Value("int16"))
    check(ds, fmt, locate, columns, workdir / "check.arrow", workers(len(ds), num_proc))
    return ds, locate


def _held(source: DataSource, name: str) -> Any:
    """The rows of an in-memory source; a saved run's recipe records them by fingerprint only."""
    if source.held_rows is None:
        raise DataError(
            f"was passed from Python (fingerprint {source.fingerprint}) to the session that trained this run and is "
            "not saved with it; pass the rows again with llmkit.Trainer(recipe, train=...), or point this split at a "
            "file (e.g. data.test=FILE)",
            name,
        )
    return source.held_rows


def _read_file(path: Path, kind: str, fmt: str, mapping: dict[str, str], workdir: Path) -> Any:
    import datasets

    builder, options = _builder(path, kind)
    try:
        ds = datasets.load_dataset(
            builder, data_files=str(path), split="train", cache_dir=str(workdir / "read"), **options
        )
    except Exception as exc:  # datasets raises many types, none naming the line: the line reader names it
        diagnose(path, fmt, mapping)
        raise DataError(f"cannot be read as {kind.replace('-array', '')} ({_cause(exc)})", str(path)) from None
    if kind in ("csv", "tsv", "txt"):
        # the line reader skips blank rows; pandas keeps rows of blank fields, and the text reader blank lines
        ds = ds.filter(_not_blank, batched=True, cache_file_name=str(workdir / "not-blank.arrow"))
        ds = contiguous(ds, workdir / "rows.arrow")
    return ds


def _builder(path: Path, kind: str) -> tuple[str, dict[str, Any]]:
    """The `datasets` builder and options that read the file as llmkit's line reader does."""
    import datasets

    if kind in ("csv", "tsv"):
        # every field a string, as the CSV module reads it; TSV files in the wild do not quote (see sources.py)
        csv.field_size_limit(sys.maxsize)
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = next(
                csv.reader(handle, **({"delimiter": "\t", "quoting": csv.QUOTE_NONE} if kind == "tsv" else {})), []
            )
        features = datasets.Features({column: datasets.Value("string") for column in header})
        options = {"sep": "\t", "quoting": csv.QUOTE_NONE} if kind == "tsv" else {}
        return "csv", {**options, "features": features, "encoding": "utf-8-sig", "keep_default_na": False}
    if kind == "txt":
        return "text", {"encoding": "utf-8-sig"}
    if kind == "parquet":
        return "parquet", {}
    # JSON: a field whose type changes from row to row is an error (the row check names it), not re-encoded as JSON
    return "json", {"on_mixed_types": None}


def _not_blank(batch: dict[str, list]) -> list[bool]:
    return [any(isinstance(v, str) and v.strip() for v in values) for values in zip(*batch.values(), strict=True)]


def _cause(exc: BaseException) -> str:
    """The first line of the deepest cause: datasets wraps the reader's own message ('An error occurred ...')."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return first_line(exc)


def diagnose(path: Path, fmt: str, mapping: dict[str, str]) -> None:
    """Read the file with llmkit's line reader, which names a bad line (and checks rows as it goes, so a value of
    the wrong type is named too). Returns when the line reader finds nothing wrong."""
    inverse = {user: canonical for canonical, user in mapping.items()}
    bad, count, columns, rows = [], 0, [], 0
    for row, where in iter_rows(path):
        rows += 1
        row = {inverse.get(k, k): v for k, v in row.items()}
        columns = columns or list(row)
        for problem in row_problems([(row, where)], fmt):
            count += 1
            if len(bad) < MAX_REPORTED:
                bad.append(problem)
    if count:
        raise bad_rows_error(bad, count, fmt, columns)
    if fmt in PROMPT_FORMATS:  # a column of mixed types (a number here, text there) is what Arrow refused
        from llmkit.data.prompts import check_types

        check_types(({inverse.get(k, k): v for k, v in row.items()}, where) for row, where in iter_rows(path))
    if not rows:
        raise DataError("has no rows; a dataset needs at least one example", str(path))


def _rename(ds: Any, mapping: dict[str, str], name: str) -> Any:
    """Apply a columns map (format field → the file's column); the file's own column of that name gives way."""
    if not mapping:
        return ds
    missing = [col for col in mapping.values() if col not in ds.column_names]
    if missing:
        raise DataError(
            f"has no column {missing[0]!r} (data.columns maps to it); its columns are {', '.join(ds.column_names)}",
            name,
        )
    clashing = [field for field in mapping if field in ds.column_names and field not in mapping.values()]
    ds = ds.remove_columns(clashing)
    return ds.rename_columns({user: field for field, user in mapping.items() if user != field})


def check(
    ds: Any, fmt: str, locate: Locator, columns: list[str], cache_file: Path, num_proc: int | None = None
) -> None:
    """Every row must fit the format; the first few bad ones are reported together with their file and line."""
    import datasets

    nested = nested_columns(ds)
    found = datasets.Features({ROW: datasets.Value("int64"), "problem": datasets.Value("string")})

    def problems(batch: dict[str, list]) -> dict[str, list]:
        bad = row_problems(zip(rows_of(batch, nested), batch[ROW], strict=True), fmt)
        return {ROW: [row for row, _, _ in bad], "problem": [problem for _, problem, _ in bad]}

    with _quiet():
        bad = ds.map(
            problems,
            batched=True,
            remove_columns=ds.column_names,
            features=found,
            num_proc=num_proc,
            cache_file_name=str(cache_file),
            new_fingerprint=fingerprint_of(cache_file),
        )
    if len(bad):
        first = bad.select(range(min(len(bad), MAX_REPORTED)))
        at, problems = values(first, ROW), values(first, "problem")
        found = [(locate(i), p, ds[i]) for i, p in zip(at, problems, strict=True)]
        raise bad_rows_error(found, len(bad), fmt, columns)


def contiguous(ds: Any, path: Path) -> Any:
    """A selection of rows (held-out carve-out, mixture) written out in order. `datasets` reads a selection row by
    row, about fifty times slower than contiguous rows, and its own flatten_indices reads it that way; a pyarrow
    take per block does not. (`_indices` is the selection `datasets` keeps; None when there is none.)"""
    import datasets
    from datasets.arrow_writer import ArrowWriter

    indices = getattr(ds, "_indices", None)
    if indices is None:
        return ds
    rows = indices.column(0)
    table = ds.data.table
    with ArrowWriter(features=ds.features, path=str(path)) as writer:
        for start in range(0, len(rows), 100_000):
            writer.write_table(table.take(rows.slice(start, 100_000)))
        writer.finalize()
    return datasets.Dataset.from_file(str(path))


def fingerprint_of(out_file: Path) -> str:
    """The fingerprint a map writing `out_file` is given: unique to the file, so datasets need not hash the function
    (a tokenizer) to make one, and short, as datasets requires."""
    return hashlib.sha256(str(out_file.resolve()).encode()).hexdigest()[:32]


def values(ds: Any, key: str) -> list[Any]:
    """One column of a dataset as a list, read as Arrow in one go (`ds[key]` is a lazy column read row by row)."""
    return ds.select_columns([key]).with_format("arrow")[:].column(key).to_pylist()


def nested_columns(ds: Any) -> list[str]:
    """Columns of lists of records (chat messages): Arrow gives every record every key, None where it had none."""
    import datasets

    if ds.features is None:  # a stream of unknown layout: any column may hold records
        return list(ds.column_names or [])
    return [
        name
        for name, feature in ds.features.items()
        if isinstance(feature, datasets.List) and isinstance(feature.feature, dict)
    ]


def rows_of(batch: dict[str, list], nested: list[str]) -> list[dict[str, Any]]:
    """A batch's rows as dicts, as the line reader reads them (a message has only the keys it was written with)."""
    keys = [key for key in batch if key not in (ROW, SOURCE)]
    rows = [dict(zip(keys, values, strict=True)) for values in zip(*(batch[key] for key in keys), strict=True)]
    for row in rows:
        for name in nested:
            if isinstance(row.get(name), list):
                row[name] = [
                    {k: v for k, v in record.items() if v is not None} if isinstance(record, dict) else record
                    for record in row[name]
                ]
    return rows


def _read_hub(source: DataSource, streaming: bool = False) -> Any:
    import datasets

    label = source_name(source)
    split = source.split or "train"
    try:
        return datasets.load_dataset(
            source.hub, source.subset, split=split, revision=source.revision, streaming=streaming
        )
    except Exception as exc:  # the hub raises many types; the user needs the first line, not the stack
        raise DataError(f"cannot load this hub dataset: {first_line(exc)}", label) from None


class _quiet:
    """datasets' progress bars off for the small steps of reading (tokenising shows its own), and its log lines
    about a file it cannot read (llmkit names the line instead)."""

    def __enter__(self) -> None:
        import datasets

        self.was, self.level = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)

    def __exit__(self, *exc: object) -> None:
        import datasets

        datasets.logging.set_verbosity(self.level)
        if self.was:
            datasets.enable_progress_bars()
