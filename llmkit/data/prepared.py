"""A task's model-ready examples for every split it reads: prepared once into Arrow, cached, and memory-mapped.

`prepare_splits` reads the recipe's sources (`llmkit.data.splits`), runs the task's row → example function over
them in batches and worker processes (`llmkit.data.arrow`), and keeps the result in the prepared-data cache
(`llmkit.data.cache`): a second run with the same data, recipe settings and tokenizer loads it in seconds. In a
multi-process job the main process prepares and the others wait, then load what it wrote.

`sources` records each split's source, content hash and row count, so what a run used is written to its manifest
without a runner having to remember it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmkit.console import say
from llmkit.data import arrow, cache
from llmkit.data.splits import Split, locators, read_splits, split_sources
from llmkit.data.table import ROW, SOURCE, Locator, contiguous, fingerprint, values, workers
from llmkit.data.tokens import TokenStats
from llmkit.errors import DataError
from llmkit.recipe import DataSection, DataSource

Encode = arrow.Encode
# Works out what encoding needs from whole splits (a classifier's label names) before any row is encoded; returns
# those facts (kept with the cached entry) and the encoder that uses them.
Setup = Callable[[dict[str, Split]], tuple[dict[str, Any], Encode]]
Finish = Callable[[TokenStats], None]  # a check over a whole split's counts (the stop-token lint); raises
LABELS = {"train": "train", "validation": "held-out", "test": "test"}


@dataclass
class Prepared:
    train: Any  # a datasets.Dataset of examples (an IterableDataset when data.streaming)
    train_where: Sequence[str]
    held_out: Any | None = None
    held_out_where: Sequence[str] | None = None
    test: Any | None = None  # data.test, scored once after training by the tasks that score it
    sources: dict[str, Any] = field(default_factory=dict)  # split → {source, sha256, rows}: the manifest's `data`
    facts: dict[str, Any] = field(default_factory=dict)  # what a task's setup worked out (label names)
    entry: Path | None = None  # the cache entry the splits are read from


class Origins(Sequence[str]):
    """Where each example of a split came from (`file:line`), worked out on first use from its `_row` column."""

    def __init__(self, ds: Any, locate: list[Locator]):
        self.ds, self.locate, self.rows = ds, locate, None

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if self.rows is None:
            self.rows = (values(self.ds, ROW), values(self.ds, SOURCE))
        return self.locate[self.rows[1][i]](self.rows[0][i])


def prepare_splits(
    data: DataSection,
    encode: Encode | None,
    empty: str,
    unit: str = "training examples",
    *,
    key: cache.CacheKey | None = None,
    test: bool = False,
    setup: Setup | None = None,
    finish: Finish | None = None,
) -> Prepared:
    """The recipe's training and held-out examples (data.validation or a seeded data.validation_split), and data.test
    with `test`, each encoded by `encode(rows) -> (examples, where, stats)` (or the encoder `setup` returns). With a
    `key` (`cache.key_for`), the result is cached. No training example left is an error; `empty` says why."""
    sources = split_sources(data, test)
    with main_process_first():
        prints = _fingerprints(sources)
        root = cache.cache_root(data)
        key_hash = cache.digest(key, [fp for group in prints.values() for fp in group]) if key else None
        for attempt in range(2):
            meta = cache.lookup(root, key_hash) if key_hash else None
            cached = meta is not None
            if meta is None:
                with cache.building(root, key_hash) as work:
                    meta = _build(data, prints, encode, setup, finish, empty, unit, work, test, key)
                entry = root / key_hash if key_hash else work
            else:
                entry = root / key_hash
            try:
                prepared = _load(entry, meta, sources, key)
                break
            except Exception as exc:  # an Arrow file cut short or overwritten: rebuild it, once
                if attempt or not key_hash:
                    raise
                cache.discard(entry, exc)
    what = "read from the cache" if cached else ("cached" if key_hash else "prepared")
    say(f"data: {what} in {entry} ({cache.human(cache.size_of(entry))})")
    for split, info in meta["splits"].items():
        if cached:
            say(f"{LABELS[split]}: {TokenStats(**info['stats']).summary(info['name'])}")
    return prepared


def _fingerprints(sources: dict[str, list[DataSource]]) -> dict[str, list[str]]:
    """Each split's sources' content hashes; a source named twice (held-out carved from train) is hashed once."""
    known: dict[str, str] = {}
    for group in sources.values():
        for source in group:
            if source.model_dump_json() not in known:
                known[source.model_dump_json()] = fingerprint(source)
    return {split: [known[s.model_dump_json()] for s in group] for split, group in sources.items()}


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """In a torchrun / accelerate job, the main process prepares first and the others then load its cache entry."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        from accelerate import PartialState

        with PartialState().main_process_first():
            yield
    else:
        yield


def _build(
    data: DataSection,
    prints: dict[str, list[str]],
    encode: Encode | None,
    setup: Setup | None,
    finish: Finish | None,
    empty: str,
    unit: str,
    work: Path,
    test: bool,
    key: cache.CacheKey | None,
) -> dict[str, Any]:
    scratch = work / "scratch"
    splits = read_splits(data, prints, scratch, test)
    for name, split in splits.items():  # the carve-out and a mixture are selections: read them in order from here
        split.rows = contiguous(split.rows, scratch / f"{name}-rows.arrow")
    facts: dict[str, Any] = {}
    if setup is not None:
        facts, encode = setup(splits)
    assert encode is not None, "prepare_splits needs encode or setup"
    meta: dict[str, Any] = {"splits": {}, "sources": {}, "facts": facts}
    for name, split in splits.items():
        out, stats = arrow.encode(
            split.rows,
            split.locators,
            encode,
            split.name,
            out_file=work / f"{name}.arrow",
            scratch=scratch,
            num_proc=workers(len(split), data.num_proc),
            desc=f"tokenising {LABELS[name]}:",
        )
        if finish is not None:
            finish(stats)
        say(f"{LABELS[name]}: {stats.summary(split.name)}")
        if name == "train" and len(out) == 0:
            raise DataError(f"no {unit} are left {empty}", split.name)
        files = [Path(f["filename"]).name for f in out.cache_files]
        meta["splits"][name] = {"files": files, "rows": len(out), "stats": asdict(stats), "name": split.name}
        meta["sources"][name] = split.describe()
    meta["chat_templates"] = [getattr(tok, "chat_template", None) for tok in (key.tokenizers if key else ())]
    meta["key"] = key.parts if key else None
    (work / cache.META).write_text(json.dumps(meta, indent=1, default=str))
    return meta


def _load(entry: Path, meta: dict[str, Any], sources: dict[str, list], key: cache.CacheKey | None) -> Prepared:
    """The entry's splits, memory-mapped; each example's `_row` / `_source` stay for `where`, not for the model."""
    import datasets

    loaded = {}
    for name, info in meta["splits"].items():
        parts = [datasets.Dataset.from_file(str(entry / f)) for f in info["files"]]
        ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else (parts[0] if parts else None)
        if ds is None:
            ds = datasets.Dataset.from_dict({})
        if len(ds) != info["rows"]:
            raise ValueError(f"{name} has {len(ds)} examples, not the {info['rows']} it was written with")
        loaded[name] = ds
    for tok, template in zip(key.tokenizers if key else (), meta.get("chat_templates", []), strict=False):
        if template and getattr(tok, "chat_template", None) != template:
            tok.chat_template = template  # encoding gave a tokenizer without one ChatML; the run saves it
    where = {name: Origins(ds, locators(sources[name])) for name, ds in loaded.items()}
    model = {name: ds.remove_columns([c for c in (ROW, SOURCE) if c in ds.column_names]) for name, ds in loaded.items()}
    return Prepared(
        train=model["train"],
        train_where=where["train"],
        held_out=model.get("validation"),
        held_out_where=where.get("validation"),
        test=model.get("test"),
        sources=meta["sources"],
        facts=meta["facts"],
        entry=entry,
    )


def packed(prepared: Prepared, max_length: int, num_proc: int | None = None) -> tuple[Any, Any | None]:
    """The training and held-out examples packed into rows of up to `max_length` tokens (`llmkit.data.packing`),
    kept in the cache entry beside the examples; a stream is packed window by window as it is read."""
    from llmkit.data.packing import pack_dataset
    from llmkit.data.stream import pack_stream

    if prepared.entry is None:
        train = pack_stream(prepared.train, max_length)
        held = pack_stream(prepared.held_out, max_length) if prepared.held_out is not None else None
        return train, held
    import datasets

    target = prepared.entry / f"packed-{max_length}"
    splits = {"train": prepared.train, "validation": prepared.held_out}
    with main_process_first():
        if not (target / cache.META).is_file():
            with cache.building(prepared.entry, target.name) as work:
                files = {}
                for name, ds in splits.items():
                    if ds:
                        out = pack_dataset(ds, max_length, work / f"{name}.arrow", workers(len(ds), num_proc))
                        files[name] = [Path(f["filename"]).name for f in out.cache_files]
                (work / cache.META).write_text(json.dumps({"files": files}))
        files = json.loads((target / cache.META).read_text())["files"]
    rows = {
        name: datasets.concatenate_datasets([datasets.Dataset.from_file(str(target / f)) for f in names])
        for name, names in files.items()
    }
    say(f"packed into {len(rows['train'])} rows of up to {max_length} tokens")
    return rows["train"], rows.get("validation")
