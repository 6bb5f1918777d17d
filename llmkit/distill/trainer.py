"""transformers' Trainer with a loss of llmkit's own: the one Trainer subclass, because distillation's losses really
differ (one reads a second model's logits, the other weighs two tasks). Loop, accumulation and checkpoints are
upstream's; a loss is a small callable, and the trainer logs its named parts (e.g. ce and kl) next to the loss.

Held-out figures are over the whole split (`llmkit.heldout`): each part is a sum over its positions divided by their
count over the split, and `eval_loss` is the loss's own combination of those means (`combine`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import transformers

from llmkit import chunked
from llmkit.data.tokens import IGNORE_INDEX
from llmkit.distill.loss import distillation_loss, scored_positions
from llmkit.heldout import SplitMeans, examples, predicted_tokens
from llmkit.losses import per_item

# A part of a loss: its sum over the batch, and how many positions each item of the batch contributes to it.
Parts = dict[str, tuple[torch.Tensor, torch.Tensor]]
# A loss: (model, inputs, num_items_in_batch) → (loss, model outputs, parts); it also has `combine(part means)`.
LossFn = Callable[[Any, dict[str, Any], Any], tuple[torch.Tensor, Any, Parts]]


class TeacherCollator:
    """Wraps a collator: cached teacher logits of the batch's examples travel with it, concatenated in the order
    `scored_positions` selects the student's positions (row by row)."""

    def __init__(self, collate: Any):
        self.collate = collate

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        cached = [example["teacher_logits"] for example in batch if "teacher_logits" in example]
        out = self.collate([{k: v for k, v in ex.items() if k != "teacher_logits"} for ex in batch])
        if cached:
            out["teacher_logits"] = torch.cat([torch.as_tensor(x) for x in cached])
        return out


class SoftTargets:
    """alpha · CE + (1 − alpha) · T² · KL against a frozen teacher, live or from cached logits in the batch.
    Normalised by the accumulated batch's count, like transformers' own loss."""

    scaled_for_ga = None  # the Trainer's rule: scaled exactly when it passes num_items_in_batch, as here
    by_num_items = True

    def __init__(self, teacher: Any, alpha: float, temperature: float, causal: bool):
        self.teacher, self.alpha, self.temperature, self.causal = teacher, alpha, temperature, causal
        self.capture: chunked.HeadInput | None = None  # the student's head, when the loss is chunked
        self.teacher_capture: chunked.HeadInput | None = None

    def chunk(self, capture: chunked.HeadInput, size: int) -> None:
        """Compute the loss through the student's head in chunks (`llmkit.chunked`); a live teacher's logits are
        then computed chunk by chunk too, where its head allows."""
        self.capture, self.chunk_size = capture, size
        if self.teacher is not None and chunked.unsupported(self.teacher) is None:
            self.teacher_capture = chunked.HeadInput(chunked.output_head(self.teacher))

    def __call__(self, model: Any, inputs: dict[str, Any], num_items: Any) -> tuple[torch.Tensor, Any, Parts]:
        counts = predicted_tokens(inputs) if self.causal else examples(inputs)
        labels = inputs.pop("labels")
        teacher_logits = inputs.pop("teacher_logits", None)
        outputs = model(**inputs)
        if self.capture is not None:
            return self._chunked(outputs, inputs, labels, teacher_logits, num_items, counts)
        if teacher_logits is None:
            with torch.no_grad():
                teacher_logits = self.teacher(**inputs).logits
        student, teacher, targets = scored_positions(outputs.logits, teacher_logits, labels, self.causal)
        vocab = min(student.shape[-1], teacher.shape[-1])  # padded embedding rows past the tokenizer are never targets
        parts = distillation_loss(
            student[:, :vocab], teacher[:, :vocab], targets, self.alpha, self.temperature, num_items
        )
        return parts.loss, outputs, {"ce": (parts.ce, counts), "kl": (parts.kl, counts)}

    def _chunked(
        self, outputs: Any, inputs: dict[str, Any], labels: torch.Tensor, cached: Any, num_items: Any, counts: Any
    ) -> tuple[torch.Tensor, Any, Parts]:
        hidden, targets = chunked.scored_hidden(self.capture.take(), labels, self.causal)
        teacher_rows = self._teacher_rows(inputs, labels, cached)

        def chunk_loss(logits: torch.Tensor, where: slice) -> tuple[torch.Tensor, torch.Tensor]:
            teacher = teacher_rows(where)
            vocab = min(logits.shape[-1], teacher.shape[-1])  # padded embedding rows are never targets
            student, soft = logits[:, :vocab], teacher[:, :vocab]
            sums = distillation_loss(student, soft, targets[where], self.alpha, self.temperature, num_items=1)
            return sums.loss, torch.stack([sums.ce, sums.kl])

        total, (ce, kl) = chunked.head_loss(hidden, self.capture.head, chunk_loss, self.chunk_size)
        loss = per_item(total, num_items, max(len(targets), 1))
        return loss, outputs, {"ce": (ce, counts), "kl": (kl, counts)}

    def _teacher_rows(self, inputs: dict[str, Any], labels: torch.Tensor, cached: Any) -> Callable[[slice], Any]:
        """The teacher's logits at the scored positions, by slice: cached, from its head chunk by chunk, or (a head
        the chunked loss cannot use) selected from its full logits."""
        if cached is not None:
            return lambda where: cached[where]
        with torch.no_grad():
            if self.teacher_capture is None:  # any [batch, positions, ...] tensor is selected like hidden states
                selected, _ = chunked.scored_hidden(self.teacher(**inputs).logits, labels, self.causal)
                return lambda where: selected[where]
            with self.teacher_capture.capturing():
                self.teacher(**inputs)
            hidden, _ = chunked.scored_hidden(self.teacher_capture.take(), labels, self.causal)
        head = self.teacher_capture.head

        def rows(where: slice) -> torch.Tensor:
            with torch.no_grad():
                return head(hidden[where])

        return rows

    def combine(self, means: dict[str, float]) -> float:
        """The loss over a split, from its parts' means over the split's positions."""
        return self.alpha * means["ce"] + (1 - self.alpha) * self.temperature**2 * means["kl"]


class TwoTasks:
    """Distilling step by step: label loss + weight · rationale loss, each the mean cross-entropy over its own
    target tokens in the batch (`task` 0 = label, 1 = rationale). Per-batch means, so the Trainer divides by the
    accumulation steps."""

    scaled_for_ga = False
    by_num_items = False

    def __init__(self, weight: float, causal: bool):
        self.weight, self.causal = weight, causal
        self.capture: chunked.HeadInput | None = None

    def chunk(self, capture: chunked.HeadInput, size: int) -> None:
        """Compute both losses through the model's head in chunks (`llmkit.chunked`)."""
        self.capture, self.chunk_size = capture, size

    def __call__(self, model: Any, inputs: dict[str, Any], num_items: Any) -> tuple[torch.Tensor, Any, Parts]:
        task = inputs.pop("task")
        # an encoder-decoder builds its decoder inputs from the labels unless the collator did
        chunk = self.capture is not None and (self.causal or "decoder_input_ids" in inputs)
        labels = inputs.pop("labels") if self.causal or chunk else inputs["labels"]
        outputs = model(**inputs)
        if chunk:
            return self._chunked(outputs, labels, task)
        logits = outputs.logits[:, :-1] if self.causal else outputs.logits
        targets = labels[:, 1:] if self.causal else labels
        per_token = F.cross_entropy(
            logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
        )
        row_counts = (targets != IGNORE_INDEX).sum(-1)  # the collator puts every input's label row, then its rationale
        sums = [per_token[task == i].sum() for i in (0, 1)]
        counts = [row_counts[task == i] for i in (0, 1)]
        label_loss, rationale_loss = (sums[i] / counts[i].sum().clamp(min=1) for i in (0, 1))
        loss = label_loss + self.weight * rationale_loss
        parts = {"label_loss": (sums[0].detach(), counts[0]), "rationale_loss": (sums[1].detach(), counts[1])}
        return loss, outputs, parts

    def _chunked(self, outputs: Any, labels: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, Any, Parts]:
        hidden, targets = chunked.aligned(self.capture.take(), labels, self.causal)
        mask = targets != IGNORE_INDEX
        task = task.to(mask.device)
        counts = [mask.sum(-1)[task == i] for i in (0, 1)]
        scales = (1 / counts[0].sum().clamp(min=1), self.weight / counts[1].sum().clamp(min=1))
        of_position = task[:, None].expand_as(targets)[mask]
        groups = [(of_position == i, scales[i]) for i in (0, 1)]
        loss_fn = chunked.cross_entropy_sums(targets[mask], groups)
        loss, sums = chunked.head_loss(hidden[mask], self.capture.head, loss_fn, self.chunk_size)
        return loss, outputs, {"label_loss": (sums[0], counts[0]), "rationale_loss": (sums[1], counts[1])}

    def combine(self, means: dict[str, float]) -> float:
        return means["label_loss"] + self.weight * means["rationale_loss"]


class LossTrainer(transformers.Trainer):
    """A Trainer whose loss is `loss` (SoftTargets or TwoTasks) and which reports the loss's parts per position."""

    weighs_eval_loss = True  # eval_loss is the loss over the whole split, from its parts (`llmkit.heldout`)

    def __init__(self, *args: Any, loss: LossFn, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.loss = loss
        self.loss_is_scaled_for_ga = getattr(loss, "scaled_for_ga", None)
        teacher = getattr(loss, "teacher", None)
        if teacher is not None:
            loss.teacher = teacher.to(self.args.device)
        self._train_sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # per logging window: sum, count
        self._held_out = SplitMeans(self.accelerator.gather_for_metrics)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        loss, outputs, parts = self.loss(model, dict(inputs), num_items_in_batch)
        global_count = getattr(self.loss, "by_num_items", False) and num_items_in_batch is not None
        if self.args.average_tokens_across_devices and global_count:
            loss = loss * self.accelerator.num_processes  # the count is global; DDP averages the gradients
        if model.training:
            for key, (total, counts) in parts.items():
                self._train_sums[key][0] += float(total)
                self._train_sums[key][1] += float(counts.sum())
        else:
            self._held_out.add(parts)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training:
            logs.update({key: total / n for key, (total, n) in self._train_sums.items() if n})
            self._train_sums.clear()
        super().log(logs, start_time)

    def evaluation_loop(self, *args: Any, metric_key_prefix: str = "eval", **kwargs: Any) -> Any:
        """The loss and its parts over the whole split, so they are logged and reported that way."""
        self._held_out.reset()
        output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        means = self._held_out.means()
        if means:
            output.metrics.update({f"{metric_key_prefix}_{key}": value for key, value in means.items()})
            output.metrics[f"{metric_key_prefix}_loss"] = self.loss.combine(means)
        return output
