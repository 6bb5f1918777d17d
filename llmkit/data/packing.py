"""Packing: several examples per row of at most max_length tokens, attention kept inside each example.

Bins are first-fit-decreasing: examples longest first, each into the first row with room. A tree over the rows'
free space finds that row in log time, so a million examples pack in seconds (a scan of every open row is
quadratic); the rows are the ones the plain scan would give. `pack` does it on a list of examples, `pack_dataset`
on an Arrow dataset (writing the packed rows to Arrow with `Dataset.map`), `pack_window` on each window of a stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmkit.data.tokens import IGNORE_INDEX


def first_fit(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Indices of the examples in each row, first-fit-decreasing (a stable sort, so ties keep their order)."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    size = 1
    while size < max(1, len(order)):
        size *= 2
    tree = [max_length] * (2 * size)  # leaves: each row's free space (rows not yet opened are empty)
    bins: list[list[int]] = []
    for i in order.tolist():
        n = int(lengths[i])
        if tree[1] >= n:  # the leftmost row with room: descend towards it
            node = 1
            while node < size:
                node = 2 * node if tree[2 * node] >= n else 2 * node + 1
            row = node - size
        else:  # longer than max_length (kept as is): a row of its own
            row = len(bins)
            node = row + size
        if row == len(bins):
            bins.append([])
        bins[row].append(i)
        tree[node] -= n
        node //= 2
        while node:  # up to the first ancestor whose largest free space is unchanged
            largest = max(tree[2 * node], tree[2 * node + 1])
            if tree[node] == largest:
                break
            tree[node] = largest
            node //= 2
    return bins


def packed_row(members: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """One row from examples: ids and labels concatenated, position_ids restarting at 0 for each example, and each
    example's first label masked (unpacked, position 0 is never a target either). With position_ids and no attention
    mask, transformers builds a block-diagonal causal mask, so no example attends to another."""
    labels = []
    for example in members:
        lab = np.array(example["labels"], dtype=np.int64)
        lab[0] = IGNORE_INDEX
        labels.append(lab)
    return {
        "input_ids": np.concatenate([np.asarray(ex["input_ids"], dtype=np.int64) for ex in members]),
        "labels": np.concatenate(labels),
        "position_ids": np.concatenate([np.arange(len(ex["input_ids"])) for ex in members]),
    }


def pack(examples: Sequence[dict[str, Any]], max_length: int) -> list[dict[str, np.ndarray]]:
    """A list of examples packed into rows of at most `max_length` tokens."""
    bins = first_fit([len(ex["input_ids"]) for ex in examples], max_length)
    return [packed_row([examples[i] for i in members]) for members in bins]


def pack_window(batch: dict[str, list], max_length: int) -> dict[str, list]:
    """A batch of a stream's examples packed among themselves (`IterableDataset.map(batched=True)`)."""
    examples = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
    rows = pack(examples, max_length)
    return {key: [row[key] for row in rows] for key in ("input_ids", "labels", "position_ids")}


def pack_dataset(ds: Any, max_length: int, out_file: Path, num_proc: int | None = None) -> Any:
    """An Arrow dataset of examples packed into rows, written to `out_file`. Only the lengths are read to place the
    examples (Arrow's list offsets, not the tokens)."""
    import datasets
    import pyarrow.compute as pc

    from llmkit.data.table import fingerprint_of

    table = ds.with_format("arrow")[:]
    lengths = pc.list_value_length(table.column("input_ids")).to_numpy()
    bins = first_fit(lengths, max_length)
    plan = datasets.Dataset.from_dict({"members": bins})
    features = datasets.Features(
        {key: datasets.List(datasets.Value("int32")) for key in ("input_ids", "labels", "position_ids")}
    )

    def rows(batch: dict[str, list]) -> dict[str, list]:
        flat = [i for members in batch["members"] for i in members]
        fetched = ds[flat]
        at, out = 0, {key: [] for key in features}
        for members in batch["members"]:
            examples = [{k: fetched[k][at + j] for k in ("input_ids", "labels")} for j in range(len(members))]
            at += len(members)
            for key, value in packed_row(examples).items():
                out[key].append(value.astype(np.int32))
        return out

    return plan.map(
        rows,
        batched=True,
        batch_size=256,
        num_proc=num_proc,
        remove_columns=["members"],
        features=features,
        cache_file_name=str(out_file),
        new_fingerprint=fingerprint_of(out_file),
        desc="packing",
    )
