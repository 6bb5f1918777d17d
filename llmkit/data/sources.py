"""Read a data source into rows, remembering where each row came from.

Local files are read with the standard library (and pyarrow for parquet) rather than `datasets.load_dataset`,
because a bad row must be reported as `file:line`, which `load_dataset`'s errors do not give.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkit.errors import DataError

SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".txt": "txt"}


@dataclass
class Rows:
    """Rows of one source; `where[i]` says where row i is (`file:line` or `file[row N]`)."""

    rows: list[dict[str, Any]]
    where: list[str]
    name: str
    fingerprint: str
    columns: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def describe(self) -> dict[str, Any]:
        """For the run manifest: which source, its content hash, and how many of its rows were used."""
        return {"source": self.name, "sha256": self.fingerprint, "rows": len(self.rows)}

    def column(self, key: str) -> list[Any]:
        return [row.get(key) for row in self.rows]

    def where_of(self, i: int) -> str:
        return self.where[i]

    def select(self, indices: list[int]) -> Rows:
        return Rows(
            [self.rows[i] for i in indices], [self.where[i] for i in indices], self.name, self.fingerprint, self.columns
        )


def read_source(
    path: str | None = None,
    hub: str | None = None,
    split: str | None = None,
    subset: str | None = None,
    revision: str | None = None,
) -> Rows:
    rows = _read_file(Path(path).expanduser()) if path else _read_hub(hub or "", split, subset, revision)
    if not rows.rows:
        raise DataError("has no rows; a dataset needs at least one example", rows.name)
    return rows


def _read_file(path: Path) -> Rows:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"unsupported file type '{path.suffix}'; use one of {', '.join(SUFFIXES)}", str(path))
    raw = path.read_bytes()
    fingerprint = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig") if kind != "parquet" else ""
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError("is not valid UTF-8 text", f"{path}:{line}") from None
    if kind == "parquet":
        rows, where = _parquet(path)
    elif kind == "json" and text.lstrip().startswith("["):
        rows, where = _json_array(path, text)
    else:  # a .json file of one object per line is common; it reads as JSON lines
        pairs = list(LINE_READERS[kind](path, io.StringIO(text, newline=""), kind))  # split as a file is
        rows, where = [row for row, _ in pairs], [origin for _, origin in pairs]
    columns = list(rows[0]) if rows else []
    return Rows(rows, where, str(path), fingerprint, columns)


def iter_rows(path: str | Path) -> Iterator[tuple[dict[str, Any], str]]:
    """(row, where) one at a time, reading line by line, so `llmkit predict` can stream inputs larger than memory.
    A JSON array or parquet file is read whole (use JSON lines for large inputs)."""
    path = Path(path).expanduser()
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"unsupported file type '{path.suffix}'; use one of {', '.join(SUFFIXES)}", str(path))
    if kind == "parquet" or (kind == "json" and starts_with_bracket(path)):
        rows = _read_file(path)
        yield from zip(rows.rows, rows.where, strict=True)
        return
    with path.open("rb") as handle:
        yield from LINE_READERS[kind](path, _decoded(handle, path), kind)


def sha256_file(path: Path) -> str:
    """A file's content hash, read in blocks so a large file never sits in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _decoded(handle: Iterable[bytes], path: Path) -> Iterator[str]:
    """Lines decoded one by one, so a bad byte is reported on its own line."""
    for lineno, raw in enumerate(handle, start=1):
        try:
            yield raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError:
            raise DataError("is not valid UTF-8 text", f"{path}:{lineno}") from None


def starts_with_bracket(path: Path) -> bool:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                return line.lstrip(b"\xef\xbb\xbf \t").startswith(b"[")
    return False


def _json_array(path: Path, text: str) -> tuple[list[dict], list[str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"is not valid JSON ({exc.msg} at column {exc.colno})", f"{path}:{exc.lineno}") from None
    where = [f"{path}[row {i + 1}]" for i in range(len(data))]
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"is a {type(row).__name__}, not an object with named fields", where[i])
    return data, where


Rowed = Iterator[tuple[dict[str, Any], str]]


def _jsonl(path: Path, lines: Iterable[str], kind: str) -> Rowed:
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"is not valid JSON ({exc.msg} at column {exc.colno})", f"{path}:{lineno}") from None
        if not isinstance(row, dict):
            raise DataError(f"is a {type(row).__name__}, not an object with named fields", f"{path}:{lineno}")
        yield row, f"{path}:{lineno}"


def _csv(path: Path, lines: Iterable[str], kind: str) -> Rowed:
    # TSV files in the wild (SMS Spam Collection among them) do not quote fields; quotes are text there.
    options: dict[str, Any] = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if kind == "tsv" else {}
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(lines, **options)
    header = next(reader, None)
    if header is None:
        return
    for fields in reader:
        lineno = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise DataError(f"has {len(fields)} fields but the header has {len(header)}", f"{path}:{lineno}")
        yield dict(zip(header, fields, strict=False)), f"{path}:{lineno}"


def _txt(path: Path, lines: Iterable[str], kind: str) -> Rowed:
    """One example per non-empty line, in a `text` column (use jsonl for multi-line documents)."""
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            yield {"text": line.rstrip("\r\n")}, f"{path}:{lineno}"


LINE_READERS = {"json": _jsonl, "jsonl": _jsonl, "csv": _csv, "tsv": _csv, "txt": _txt}


def _parquet(path: Path) -> tuple[list[dict], list[str]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"cannot be read as parquet ({exc})", str(path)) from None
    return rows, [f"{path}[row {i + 1}]" for i in range(len(rows))]


def _read_hub(name: str, split: str | None, subset: str | None, revision: str | None) -> Rows:
    import datasets

    split = split or "train"
    label = f"hub:{name}[{split}]"
    try:
        ds = datasets.load_dataset(name, subset, split=split, revision=revision)
    except Exception as exc:  # the hub raises many types; the user needs the first line, not the stack
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot load this hub dataset: {first}", label) from None
    rows = ds.to_list()
    return Rows(rows, [f"{label} row {i + 1}" for i in range(len(rows))], label, ds._fingerprint, ds.column_names)
