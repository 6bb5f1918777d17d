"""data.streaming: training rows read, checked and tokenised as training consumes them (`datasets.IterableDataset`),
for files or hub datasets too large to prepare ahead.

Nothing is cached: a stream is never held whole. Rows are shuffled in a seeded buffer (a stream cannot be shuffled
whole), a bad row stops training when it is reached (named by its file and line), and packing packs each window
of examples among themselves. Held-out data is data.validation, or the stream's first max_eval_samples
rows (training skips them); it is small, so it is read and encoded whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llmkit.console import say
from llmkit.data.arrow import BATCH, Batches, Encode
from llmkit.data.checks import bad_rows_error, check_columns, row_problems
from llmkit.data.load import load_source
from llmkit.data.packing import pack, pack_window
from llmkit.data.prepared import Prepared
from llmkit.data.sources import Rows, iter_rows
from llmkit.data.table import (
    ROW,
    SOURCE,
    Locator,
    _read_hub,
    fingerprint,
    nested_columns,
    rows_of,
    source_kind,
    source_name,
)
from llmkit.data.tokens import TokenStats
from llmkit.errors import DataError
from llmkit.recipe import DataSection, DataSource
from llmkit.recipe.formats import FORMATS

SHUFFLE_BUFFER = 10_000  # rows a stream is shuffled within (datasets' IterableDataset.shuffle)
PACK_WINDOW = 1_000  # examples packed among themselves


def prepare_stream(data: DataSection, encode: Encode, finish: Callable[[TokenStats], None] | None = None) -> Prepared:
    """The training stream (mixed as data.train says) and the held-out examples."""
    import datasets

    sources = data.required_train()
    streams, fields = [], {ROW: None, SOURCE: None}
    for i, source in enumerate(sources):
        ds, columns = _stream(source, data, i)
        streams.append(ds)
        fields.update(dict.fromkeys(columns))
    if len(streams) == 1:
        rows = streams[0]
    elif sources[0].weight is not None:
        weights = [s.weight for s in sources]
        rows = datasets.interleave_datasets(streams, probabilities=weights, seed=data.split_seed)
    else:
        rows = datasets.concatenate_datasets(streams)
    names = [source_name(s) for s in sources]
    locate = [Locator(name, "line" if source_kind(s) not in ("hub", "parquet", "json-array") else "stream")
              for name, s in zip(names, sources, strict=True)]  # fmt: skip
    held = None
    if data.validation is not None:
        held = load_source(data.validation, data)
    elif data.max_eval_samples:
        first = list(rows.take(data.max_eval_samples))
        where = [locate[r[SOURCE]](r[ROW]) for r in first]
        held = Rows(rows_of(_columns(first), nested_columns(rows)), where, " + ".join(names), "")
        _check(held, data.format)
        rows = rows.skip(data.max_eval_samples)
    if data.max_train_samples:
        rows = rows.take(data.max_train_samples)
    rows = rows.shuffle(seed=data.split_seed, buffer_size=SHUFFLE_BUFFER)
    train = rows.map(
        _Checked(encode, locate, " + ".join(names), data.format, finish, nested_columns(rows)),
        batched=True,
        batch_size=BATCH,
        remove_columns=list(fields),
    )
    say(f"train: streamed from {' + '.join(names)}; rows are checked and tokenised as training reads them")
    prepared = Prepared(train, [], sources={"train": _describe(sources, names)})
    if held is not None:
        examples, where, stats = encode(held)
        if finish is not None:
            finish(stats)
        say(f"held-out: {stats.summary(held.name)}")
        prepared.held_out = datasets.Dataset.from_list(examples) if examples else None
        prepared.held_out_where = where
        prepared.sources["validation"] = held.describe() if data.validation is not None else _held(held, names)
    return prepared


def _stream(source: DataSource, data: DataSection, index: int) -> tuple[Any, list[str]]:
    """One source as an IterableDataset of the format's fields (named too: a stream does not know its columns
    before it is read), with `_row` and `_source`. A local file is read by
    llmkit's line reader, which streams line by line and names a bad line itself; a hub dataset (or a parquet file,
    read in Arrow batches) by `datasets`."""
    import datasets

    kind, name = source_kind(source), source_name(source)
    mapping = data.columns_of(source)
    fields = FORMATS[data.format].fields
    if kind in ("hub", "parquet"):
        if kind == "hub":
            ds = _read_hub(source, streaming=True)
        else:
            ds = datasets.load_dataset("parquet", data_files=name, split="train", streaming=True)
        first = next(iter(ds), None)
        columns = _checked_columns(first, mapping, data.format, name, len(data.train_sources()) > 1)
        ds = ds.remove_columns([f for f in mapping if f in first and f not in mapping.values()])
        ds = ds.rename_columns({user: field for field, user in mapping.items() if user != field})
        kept = [f for f in fields if f in columns]
        ds = ds.select_columns(kept).map(lambda row, i: {ROW: i, SOURCE: index}, with_indices=True)
    else:
        first = next(iter_rows(name), (None, None))[0]
        columns = _checked_columns(first, mapping, data.format, name, len(data.train_sources()) > 1)
        kept = [f for f in fields if f in columns]
        ds = datasets.IterableDataset.from_generator(
            # a tuple: from_generator would split a list among shards
            _lines,
            gen_kwargs={"path": name, "mapping": mapping, "fields": tuple(kept), "index": index, "kind": kind},
        )
    return (ds.take(source.max_samples) if source.max_samples else ds), kept


def _checked_columns(first: Any, mapping: dict[str, str], fmt: str, name: str, mixed: bool) -> list[str]:
    """The format fields a source's first row has (after the columns map); one sentence if it lacks one."""
    if first is None:
        raise DataError("has no rows; a dataset needs at least one example", name)
    missing = [col for col in mapping.values() if col not in first]
    if missing:
        raise DataError(
            f"has no column {missing[0]!r} (data.columns maps to it); its columns are {', '.join(first)}", name
        )
    inverse = {user: field for field, user in mapping.items()}
    columns = [inverse.get(c, c) for c in first if c in inverse or c not in mapping]
    check_columns(columns, fmt, name, mixed)
    return columns


def _lines(
    path: str, mapping: dict[str, str], fields: tuple[str, ...], index: int, kind: str
) -> Iterator[dict[str, Any]]:
    """Rows as the line reader reads them, renamed to the format's fields, each with its line as `_row` (its
    position, in a JSON array)."""
    inverse = {user: field for field, user in mapping.items()}
    for i, (row, where) in enumerate(iter_rows(path)):
        row = {inverse.get(k, k): v for k, v in row.items() if k in inverse or k not in mapping}
        at = i if kind == "json-array" else int(where.rsplit(":", 1)[1])
        yield {**{f: row.get(f) for f in fields}, ROW: at, SOURCE: index}


class _Checked(Batches):
    """A stream's batch: rows checked against the format (a bad one stops training, named by its position), then
    encoded; a whole-split check (the stop-token lint) applies to each batch."""

    def __init__(self, encode: Encode, locate: list[Locator], name: str, fmt: str, finish: Any, nested: list[str]):
        super().__init__(encode, locate, name, nested, Path("."))
        self.fmt, self.finish = fmt, finish

    def __call__(self, batch: dict[str, list], indices: Any = None) -> dict[str, list]:  # type: ignore[override]
        rows = rows_of(batch, self.nested)
        where = [self.locators[s](r) for s, r in zip(batch[SOURCE], batch[ROW], strict=True)]
        _check(Rows(rows, where, self.name, ""), self.fmt)
        columns, stats = self.run(batch)
        if self.finish is not None:
            self.finish(stats)
        columns.pop(ROW), columns.pop(SOURCE)
        return columns


def _check(rows: Rows, fmt: str) -> None:
    bad = row_problems(zip(rows.rows, rows.where, strict=True), fmt)
    if bad:
        raise bad_rows_error(bad, len(bad), fmt, rows.columns)


def _columns(rows: list[dict[str, Any]]) -> dict[str, list]:
    return {key: [row[key] for row in rows] for key in (rows[0] if rows else {})}


def _describe(sources: list[DataSource], names: list[str]) -> dict[str, Any]:
    """The manifest's record of a stream: its sources' hashes (a file is hashed, not read into memory); rows are
    not counted ahead."""
    prints = [fingerprint(s) if s.path else None for s in sources]
    return {
        "source": " + ".join(names),
        "sha256": prints[0] if len(prints) == 1 else prints,
        "rows": None,
        "streamed": True,
    }


def _held(held: Rows, names: list[str]) -> dict[str, Any]:
    return {"source": f"first {len(held)} rows of " + " + ".join(names), "sha256": None, "rows": len(held)}


def pack_stream(ds: Any, max_length: int) -> Any:
    """A stream of examples packed window by window; a held-out Dataset (small) packed whole."""
    import datasets

    if isinstance(ds, datasets.Dataset):
        return datasets.Dataset.from_list(pack(ds.to_list(), max_length))
    return ds.map(
        pack_window, batched=True, batch_size=PACK_WINDOW, fn_kwargs={"max_length": max_length},
        remove_columns=["input_ids", "labels"],
    )  # fmt: skip
