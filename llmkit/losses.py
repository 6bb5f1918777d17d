"""Cross-entropy normalised over the whole accumulated batch, for Trainer's `compute_loss_func`.

Why our own: transformers' sequence-classification and encoder-decoder heads (BERT, GPT-2, Llama, T5, BART) average
their loss over each micro-batch, yet accept `**kwargs`, so Trainer takes their loss as already normalised by
`num_items_in_batch` and does not divide it by the accumulation steps: with `gradient_accumulation_steps: 4` the
gradient comes out 4× too large. Summing per-item losses and dividing by the accumulated batch's item count makes
batch 4 × accumulation 1 equal batch 1 × accumulation 4 (a test pins it). Class weights need the same sum, which
transformers' `fixed_cross_entropy` cannot weight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from llmkit.data.tokens import IGNORE_INDEX


def summed_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Sum of (optionally class-weighted, label-smoothed) cross-entropy over items that are not -100, divided by the
    number of such items in the whole accumulated batch (`num_items_in_batch`), or in this batch when evaluating."""
    logits = logits.float()
    labels = labels.to(logits.device)
    total = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        labels.reshape(-1),
        weight=weight,
        ignore_index=IGNORE_INDEX,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    return per_item(total, num_items_in_batch, (labels != IGNORE_INDEX).sum())


def per_item(total: torch.Tensor, num_items_in_batch: torch.Tensor | int | None, items: Any) -> torch.Tensor:
    """`total` divided by the accumulated batch's item count when the Trainer gives one (training), else by `items`,
    this batch's: how transformers normalises its own loss under gradient accumulation."""
    count = num_items_in_batch if num_items_in_batch is not None else items
    if torch.is_tensor(count):
        count = count.to(total.device)
    return total / count


def batch_loss(
    class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0
) -> Callable[..., torch.Tensor]:
    """A `compute_loss_func(outputs, labels, num_items_in_batch)` for classifiers and encoder-decoders;
    `class_weights[i]` scales the loss of examples labelled i while training. `label_smoothing` is the recipe's
    `training.label_smoothing_factor`, which Trainer applies only when no `compute_loss_func` is given."""
    weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None

    def loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        logits = outputs["logits"]
        # Weights and smoothing shape the training gradient only; evaluation (run without gradients) reports the
        # plain cross-entropy, so eval_loss compares across settings.
        training = torch.is_grad_enabled()
        w = weight.to(logits.device) if weight is not None and training else None
        return summed_cross_entropy(logits, labels, num_items_in_batch, w, label_smoothing if training else 0.0)

    return loss
