"""Batching: pad examples, or pack several into one row with attention kept inside each example.

Labels are padded with -100 by position, never by comparing token ids with the pad id, so an EOS that doubles as
the pad token is still trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from llmkit.data.tokens import IGNORE_INDEX


def pack(examples: Sequence[dict[str, np.ndarray]], max_length: int) -> list[dict[str, np.ndarray]]:
    """First-fit-decreasing bin packing into rows of at most `max_length` tokens.

    Each row carries `position_ids` that restart at 0 for every example; with no attention mask, transformers
    reads those restarts as sequence boundaries and builds a block-diagonal causal mask, so no example attends to
    another. The first label of each example is masked: unpacked, position 0 is never a target either.
    """
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    bins: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = len(examples[i]["input_ids"])
        slot = next((b for b, space in enumerate(free) if space >= n), None)
        if slot is None:
            bins.append([i])
            free.append(max_length - n)
        else:
            bins[slot].append(i)
            free[slot] -= n
    rows = []
    for members in bins:
        labels = []
        for i in members:
            lab = examples[i]["labels"].copy()
            lab[0] = IGNORE_INDEX
            labels.append(lab)
        rows.append(
            {
                "input_ids": np.concatenate([examples[i]["input_ids"] for i in members]),
                "labels": np.concatenate(labels),
                "position_ids": np.concatenate([np.arange(len(examples[i]["input_ids"])) for i in members]),
            }
        )
    return rows


class Collator:
    """Right-pads a batch. Packed rows (with position_ids) get no attention mask, so the packing boundaries hold."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(ex["input_ids"]) for ex in batch)
        packed = "position_ids" in batch[0]
        input_ids = torch.full((len(batch), length), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        positions = torch.zeros((len(batch), length), dtype=torch.long)
        for row, ex in enumerate(batch):
            n = len(ex["input_ids"])
            input_ids[row, :n] = torch.as_tensor(ex["input_ids"])
            labels[row, :n] = torch.as_tensor(ex["labels"])
            mask[row, :n] = 1
            if packed:
                positions[row, :n] = torch.as_tensor(ex["position_ids"])
                positions[row, n:] = torch.arange(length - n)  # padding forms its own segment
        out = {"input_ids": input_ids, "labels": labels}
        if packed:
            out["position_ids"] = positions
        else:
            out["attention_mask"] = mask
        return out
