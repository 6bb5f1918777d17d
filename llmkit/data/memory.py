"""Rows a notebook already holds — a `datasets.Dataset` / `DatasetDict`, a pandas DataFrame, a list of dicts — as
the data sources of a recipe.

Each object becomes a `datasets.Dataset` and an in-memory `DataSource` (`in_memory`: its kind, `fingerprint`: the
Dataset's content fingerprint) that carries the rows; from there the path is the file path's: the same column map,
format checks, held-out carve-out, cache (keyed by the fingerprint) and manifest. A row is named by its index in the
object the user holds: `row 3 of train (in-memory list)` is `rows[3]`. Decisions: docs/python-api.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from llmkit.data.checks import MAX_REPORTED, bad_rows_error, row_problems
from llmkit.data.table import _quiet
from llmkit.errors import DataError, RecipeError, first_line
from llmkit.recipe import DataSection, DataSource, Recipe
from llmkit.recipe.sections import DATA_SPLITS

KINDS = "a datasets.Dataset (or DatasetDict), a pandas DataFrame or a list of dicts"


def label(split: str, kind: str) -> str:
    """How a split of in-memory rows is named in messages and the manifest: `train (in-memory list)`."""
    return f"{split} (in-memory {kind})"


def where(name: str, index: int) -> str:
    """Where row `index` (0-based, as the user indexes the object) of in-memory rows `name` is."""
    return f"row {index} of {name}"


def attach(recipe: Recipe, **objects: Any) -> Recipe:
    """The recipe with `train=` / `validation=` / `test=` objects as its data sources (an object replaces the
    recipe's source for that split; a DatasetDict given as train gives its train, validation and test splits)."""
    objects = {split: rows for split, rows in objects.items() if rows is not None}
    objects.update(_splits_of(objects))
    if not objects:
        return recipe
    if recipe.data.streaming:
        raise RecipeError(
            "data.streaming reads files and hub datasets as training goes; rows passed from Python are already in "
            "memory, so remove data.streaming"
        )
    sources = {split: source(rows, split, recipe.data) for split, rows in objects.items()}
    return recipe.with_data({name: getattr(recipe.data, name) for name in recipe.data.model_fields_set} | sources)


def _splits_of(objects: dict[str, Any]) -> dict[str, Any]:
    """A DatasetDict as `train=`: its train split, and its validation and test splits where not given separately."""
    for split, rows in objects.items():
        if not _is_dataset_dict(rows):
            continue
        if split != "train":
            raise DataError(f"{split}= takes one split, not a DatasetDict; pass {split}=rows['<split>']")
        unknown = [name for name in rows if name not in DATA_SPLITS]
        if "train" not in rows or unknown:
            raise DataError(
                f"a DatasetDict passed as train= needs a 'train' split and may have 'validation' and 'test'; it has "
                f"{', '.join(rows) or 'none'}: rename its splits, or pass train=rows['<split>'] and validation=..."
            )
        given = [name for name in rows if name != "train" and name in objects]
        if given:
            raise DataError(f"{given[0]} is both a split of train= and {given[0]}=; give it once")
        return dict(rows)
    return {}


def _is_dataset_dict(rows: Any) -> bool:
    return type(rows).__name__ == "DatasetDict" and type(rows).__module__.startswith("datasets")


def source(rows: Any, split: str, data: DataSection) -> DataSource:
    """An in-memory data source for one split, holding its rows as a `datasets.Dataset`."""
    ds, kind = as_dataset(rows, split, data)
    return DataSource.held(kind, ds._fingerprint, ds, label(split, kind))


def as_dataset(rows: Any, split: str, data: DataSection | None = None) -> tuple[Any, str]:
    """(a `datasets.Dataset` of the rows, their kind: Dataset, DataFrame or list). A list or DataFrame Arrow cannot
    make into a table (a column of mixed types) is read row by row to name the bad row."""
    import datasets

    kind = kind_of(rows, split)
    if kind == "Dataset":
        return _label_names(_nonempty(rows, label(split, kind))), kind
    name = label(split, kind)
    records = list(records_of(rows, name))
    try:
        with _quiet():
            ds = datasets.Dataset.from_list(records)
    except Exception as exc:  # pyarrow refuses a column of mixed types in many ways; the row check names the row
        if data is not None:
            _diagnose(records, data, name)
        raise DataError(f"cannot be made into a table ({first_line(exc)})", name) from None
    return _nonempty(ds, name), kind


def kind_of(rows: Any, split: str) -> str:
    """Dataset, DataFrame or list; anything else (a dict of columns, an iterator, an IterableDataset) is refused."""
    import datasets

    if isinstance(rows, datasets.Dataset):
        return "Dataset"
    if isinstance(rows, datasets.IterableDataset):
        raise DataError(
            f"{split}= got an IterableDataset, whose rows cannot be counted or fingerprinted before training; pass a "
            "Dataset, or name the files in the recipe with data.streaming: true"
        )
    if _is_dataframe(rows):
        return "DataFrame"
    if isinstance(rows, (list, tuple)):
        return "list"
    raise DataError(f"{split}= takes {KINDS}, not a {type(rows).__name__}")


def records_of(rows: Any, name: str) -> Iterator[dict[str, Any]]:
    """The rows of a list of dicts or a DataFrame as dicts; anything else in a list is named by its index. A
    DataFrame's missing values (NaN, None, NaT) are None, as a missing field of a JSON row is."""
    if _is_dataframe(rows):
        yield from rows.astype(object).where(rows.notna(), None).to_dict(orient="records")
        return
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"is of type {type(row).__name__}, not a dict of column → value", where(name, i))
        yield row


def located(rows: Any, split: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Any of the kinds as a list of row dicts and where each is (for predict, which reads rows one by one)."""
    kind = kind_of(rows, split)
    name = label(split, kind)
    records = rows.to_list() if kind == "Dataset" else list(records_of(rows, name))
    if not records:
        raise DataError("has no rows", name)
    return records, [where(name, i) for i in range(len(records))]


def _label_names(ds: Any) -> Any:
    """ClassLabel columns (most hub classification datasets) as their label names, as a file would hold them, so a
    classifier's id2label says 'pos', not '1'; -1 (no label) is None. The fingerprint follows from the original's."""
    import datasets

    named = {c: f for c, f in ds.features.items() if isinstance(f, datasets.ClassLabel)}
    if not named:
        return ds
    features = datasets.Features({**ds.features, **dict.fromkeys(named, datasets.Value("string"))})

    def names(batch: dict[str, list]) -> dict[str, list]:
        return {c: [f.int2str(v) if v is not None and v >= 0 else None for v in batch[c]] for c, f in named.items()}

    with _quiet():
        return ds.map(names, batched=True, features=features, new_fingerprint=f"{ds._fingerprint[:16]}-names")


def _is_dataframe(rows: Any) -> bool:
    """A pandas DataFrame, recognised without importing pandas."""
    return type(rows).__name__ == "DataFrame" and type(rows).__module__.startswith("pandas")


def _nonempty(ds: Any, name: str) -> Any:
    if len(ds) == 0:
        raise DataError("has no rows; a dataset needs at least one example", name)
    return ds


def _diagnose(records: list[dict[str, Any]], data: DataSection, name: str) -> None:
    """Check the rows as Python objects, in the format's fields, so the row Arrow refused is named."""
    inverse = {user: field for field, user in data.columns.items()}
    rows = (({inverse.get(k, k): v for k, v in row.items()}, where(name, i)) for i, row in enumerate(records))
    bad = row_problems(rows, data.format)
    if bad:
        raise bad_rows_error(bad[:MAX_REPORTED], len(bad), data.format, list(records[0]))
