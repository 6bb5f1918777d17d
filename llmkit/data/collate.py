"""Batching: pad examples; packed rows (`llmkit.data.packing`) keep attention inside each example.

Labels are padded with -100 by position, never by comparing token ids with the pad id, so an EOS that doubles as
the pad token is still trained.
"""

from __future__ import annotations

from typing import Any

import torch

from llmkit.data.tokens import IGNORE_INDEX


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
