"""Held-out losses over the whole split: the mean over its tokens (or examples, or pairs), whatever the batch size.

Why our own: transformers' `Trainer.evaluation_loop` reports the mean of the per-batch mean losses, each batch
weighed by the configured batch size, so the figure moves with `per_device_eval_batch_size` (short last batch, and
batches holding different numbers of tokens). Every task's trainer is handed to `weigh_eval_loss` with what its
loss is a mean over; the wrapper records each batch's loss times that count and replaces `<prefix>_loss` with
sum / count over the split. Under several processes every batch is gathered across them with accelerate's
`gather_for_metrics`, which drops the examples accelerate repeats to even out the last batches.

A wrapper on the instance, not a subclass: the same two hooks (`prediction_step`, `evaluation_loop`) are needed on
transformers' Trainer and Seq2SeqTrainer and on TRL's DPO, ORPO and KTO trainers, and a subclass of each would be
the trainer tower docs/design.md avoids.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import torch

from llmkit.data.tokens import IGNORE_INDEX

# A batch → how many units (tokens, examples, pairs) each of its items holds; one entry per dataset item.
Counter = Callable[[Mapping[str, Any]], torch.Tensor]


def predicted_tokens(inputs: Mapping[str, Any]) -> torch.Tensor:
    """A causal LM's loss is a mean over the tokens it predicts: labels after the first position that are not -100."""
    return (inputs["labels"][:, 1:] != IGNORE_INDEX).sum(-1)


def target_tokens(inputs: Mapping[str, Any]) -> torch.Tensor:
    """An encoder-decoder's loss is a mean over its target tokens (labels are not shifted)."""
    return (inputs["labels"] != IGNORE_INDEX).sum(-1)


def examples(inputs: Mapping[str, Any]) -> torch.Tensor:
    """A classifier's loss is a mean over examples."""
    return torch.ones(len(inputs["labels"]), dtype=torch.long)


class SplitMeans:
    """Sums and counts of named quantities over one pass through a split, gathered across processes per batch.

    A batch adds, per quantity, its total and each item's count; each item carries the share of the total its count
    gives it, so accelerate can drop repeated items one by one. Exact for every batch except, under several
    processes, the one batch accelerate completes with repeated items, whose real items count at that batch's mean.
    """

    def __init__(self, gather: Callable[[torch.Tensor], torch.Tensor]):
        self.gather = gather
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, float] = defaultdict(float)

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()

    def add(self, parts: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """`parts`: name → (the batch's total, the count of each item). Every process calls it for every batch."""
        names = sorted(parts)
        columns = []
        for name in names:
            total, counts = parts[name]
            counts = counts.detach().float()
            n = counts.sum()
            columns += [total.detach().float() * counts / n.clamp(min=1), counts]
        gathered = self.gather(torch.stack(columns, dim=1)).double().sum(0).tolist()
        for i, name in enumerate(names):
            self.sums[name] += gathered[2 * i]
            self.counts[name] += gathered[2 * i + 1]

    def mean(self, name: str) -> float:
        return self.sums[name] / self.counts[name] if self.counts[name] else float("nan")

    def means(self) -> dict[str, float]:
        return {name: self.mean(name) for name in self.counts}


def weigh_eval_loss(trainer: Any, count: Counter) -> Any:
    """Make `trainer`'s evaluation report `<prefix>_loss` as the mean over the split's units, `count(batch)` per item
    (the units its per-batch loss is a mean over). Every task runner calls this on the trainer it builds; returns the
    trainer."""
    means = SplitMeans(trainer.accelerator.gather_for_metrics)
    step, loop = trainer.prediction_step, trainer.evaluation_loop

    def prediction_step(model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        counts = count(inputs)  # before the step: a loss function may pop the labels
        loss, logits, labels = step(model, inputs, *args, **kwargs)
        if loss is not None:
            counts = counts.to(loss.device)
            means.add({"loss": (loss.detach().float().mean() * counts.sum(), counts)})
        return loss, logits, labels

    def evaluation_loop(*args: Any, metric_key_prefix: str = "eval", **kwargs: Any) -> Any:
        means.reset()
        # Each process's batch loss must be the mean over its own batch: with average_tokens_across_devices,
        # transformers divides it by every process's count instead (a training-time normalisation).
        settings, averaged = trainer.args, trainer.args.average_tokens_across_devices
        settings.average_tokens_across_devices = False
        try:
            output = loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        finally:
            settings.average_tokens_across_devices = averaged
        if means.counts:
            output.metrics[f"{metric_key_prefix}_loss"] = means.mean("loss")
        return output

    trainer.prediction_step = prediction_step
    trainer.evaluation_loop = evaluation_loop
    trainer.weighs_eval_loss = True
    return trainer
