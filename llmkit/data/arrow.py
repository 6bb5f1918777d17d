"""A task's row → example function run over an Arrow table: `Dataset.map` in batches, in worker processes, writing
the examples straight to Arrow files.

The task functions stay the list-based ones (`build_examples`, `Encoder.examples`, ...), called on one batch of
rows at a time; this module turns a batch into rows and the examples back into columns. `datasets`' map has no
reduce step, so each batch leaves its counts (`TokenStats`) in a small file that the parent adds up.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from llmkit.data.sources import Rows
from llmkit.data.table import ROW, ROWS_PER_WORKER, SOURCE, Locator, _quiet, fingerprint_of, nested_columns, rows_of
from llmkit.data.tokens import TokenStats

Encode = Callable[[Rows], tuple[list[Any], list[str], TokenStats]]
BATCH = 1000  # rows per call of the task's function
PROBE = 64


class Batches:
    """The function `Dataset.map` calls: a batch of rows → the task's examples as columns, with each example's
    `_row` and `_source`, and the batch's counts left in `stats_dir`."""

    def __init__(self, encode: Encode, locators: Sequence[Locator], name: str, nested: list[str], stats_dir: Path):
        self.encode, self.locators, self.name, self.nested = encode, list(locators), name, nested
        self.stats_dir = stats_dir
        self.keys: list[str] = []
        self.schema: Any = None  # the examples' Arrow schema, once the probe has seen one

    def run(self, batch: dict[str, list]) -> tuple[dict[str, list], TokenStats]:
        rows = rows_of(batch, self.nested)
        where = [self.locators[s](r) for s, r in zip(batch[SOURCE], batch[ROW], strict=True)]
        examples, origins, stats = self.encode(Rows(rows, where, self.name, "", list(rows[0]) if rows else []))
        columns: dict[str, list] = {key: [] for key in self.keys or (list(examples[0]) if examples else [])}
        for example in examples:
            for key in columns:
                columns[key].append(arrow_value(example[key]))
        positions, at = [], 0
        for origin in origins:  # examples come in row order, several per row (overlong: split) or none
            while where[at] != origin:
                at += 1
            positions.append(at)
        columns[ROW] = [batch[ROW][i] for i in positions]
        columns[SOURCE] = [batch[SOURCE][i] for i in positions]
        return columns, stats

    def __call__(self, batch: dict[str, list], indices: list[int]) -> Any:
        columns, stats = self.run(batch)
        if indices:
            (self.stats_dir / f"{indices[0]:012d}.json").write_text(json.dumps(asdict(stats)))
        return to_table(columns, self.schema)


def to_table(columns: dict[str, list], schema: Any) -> Any:
    """A batch's examples as an Arrow table; token ids go in as one array per column (offsets and values), which
    costs far less than converting example by example."""
    import pyarrow as pa

    arrays = []
    for field in schema:
        values = columns[field.name]
        if pa.types.is_list(field.type) and values and all(isinstance(v, np.ndarray) for v in values):
            offsets = np.zeros(len(values) + 1, dtype=np.int32)
            np.cumsum([len(v) for v in values], out=offsets[1:])
            flat = pa.array(np.concatenate(values), type=field.type.value_type)
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets), flat))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def arrow_value(value: Any) -> Any:
    """Token ids as int32 (vocabularies are far below 2³¹, and -100 fits), so Arrow stores half of int64."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
        return value.astype(np.int32)
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return np.asarray(value, dtype=np.int32)
    if isinstance(value, dict):
        return {key: arrow_value(v) for key, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    return value


def encode(
    ds: Any,
    locators: Sequence[Locator],
    fn: Encode,
    name: str,
    *,
    out_file: Path,
    scratch: Path,
    num_proc: int | None = None,
    desc: str = "tokenising",
) -> tuple[Any, TokenStats]:
    """`fn` over every row of `ds` (a table from `llmkit.data.table`): the examples, written to `out_file` (one file
    per worker process), and the split's counts."""
    import datasets

    stats_dir = scratch / f"{out_file.stem}-stats"
    stats_dir.mkdir(parents=True, exist_ok=True)
    if num_proc:  # one thread per worker: the workers are the parallelism (and a forked tokenizer would warn)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    batches = Batches(fn, [locate.ready() for locate in locators], name, nested_columns(ds), stats_dir)
    features, probed = _probe(ds, batches)
    if features is None:  # no row made an example; the probe saw them all
        return datasets.Dataset.from_dict({}), probed
    batches.keys = [key for key in features if key not in (ROW, SOURCE)]
    batches.schema = features.arrow_schema
    quiet = len(ds) < ROWS_PER_WORKER
    with _quiet() if quiet else contextlib.nullcontext():
        out = ds.map(
            batches,
            batched=True,
            batch_size=BATCH,
            with_indices=True,
            num_proc=num_proc,
            remove_columns=ds.column_names,
            features=features,
            cache_file_name=str(out_file),
            new_fingerprint=fingerprint_of(out_file),
            desc=f"{desc} {name}",
        )
    parts = [TokenStats(**json.loads(path.read_text())) for path in sorted(stats_dir.glob("*.json"))]
    return out, TokenStats.merged(parts)


def _probe(ds: Any, batches: Batches) -> tuple[Any, TokenStats]:
    """The examples' Arrow types, from the first rows that make one (a map needs them for batches that make none);
    None, with the counts of every row, when no row does."""
    import datasets

    seen = []
    for start in range(0, len(ds), PROBE):
        columns, stats = batches.run(ds[start : start + PROBE])
        seen.append(stats)
        if columns[ROW]:
            first = {key: values[:1] for key, values in columns.items()}
            return datasets.Dataset.from_dict(first).features, stats
    return None, TokenStats.merged(seen)
