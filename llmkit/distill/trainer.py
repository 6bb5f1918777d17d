"""transformers' Trainer with a loss of llmkit's own: the one Trainer subclass, because distillation's losses really
differ (one reads a second model's logits, the other weighs two tasks). Loop, accumulation and checkpoints are
upstream's; a loss is a small callable, and the trainer logs its named parts (e.g. ce and kl) next to the loss.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import transformers

from llmkit.data.tokens import IGNORE_INDEX
from llmkit.distill.loss import distillation_loss, scored_positions

# A loss: (model, inputs, num_items_in_batch) → (loss, model outputs, {part: sum}, positions the sums are over)
LossFn = Callable[[Any, dict[str, Any], Any], tuple[torch.Tensor, Any, dict[str, float], int]]


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

    def __call__(self, model: Any, inputs: dict[str, Any], num_items: Any) -> tuple[torch.Tensor, Any, dict, int]:
        labels = inputs.pop("labels")
        teacher_logits = inputs.pop("teacher_logits", None)
        outputs = model(**inputs)
        if teacher_logits is None:
            with torch.no_grad():
                teacher_logits = self.teacher(**inputs).logits
        student, teacher, targets = scored_positions(outputs.logits, teacher_logits, labels, self.causal)
        vocab = min(student.shape[-1], teacher.shape[-1])  # padded embedding rows past the tokenizer are never targets
        parts = distillation_loss(
            student[:, :vocab], teacher[:, :vocab], targets, self.alpha, self.temperature, num_items
        )
        return parts.loss, outputs, {"ce": float(parts.ce), "kl": float(parts.kl)}, parts.count


class TwoTasks:
    """Distilling step by step: label loss + weight · rationale loss, each the mean cross-entropy over its own
    target tokens in the batch (`task` 0 = label, 1 = rationale). Per-batch means, so the Trainer divides by the
    accumulation steps."""

    scaled_for_ga = False
    by_num_items = False

    def __init__(self, weight: float, causal: bool):
        self.weight, self.causal = weight, causal

    def __call__(self, model: Any, inputs: dict[str, Any], num_items: Any) -> tuple[torch.Tensor, Any, dict, int]:
        task = inputs.pop("task")
        labels = (
            inputs["labels"] if not self.causal else inputs.pop("labels")
        )  # seq2seq builds decoder inputs from them
        outputs = model(**inputs)
        logits = outputs.logits[:, :-1] if self.causal else outputs.logits
        targets = labels[:, 1:] if self.causal else labels
        per_token = F.cross_entropy(
            logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
        )
        counts = [(targets[task == i] != IGNORE_INDEX).sum() for i in (0, 1)]
        label_loss, rationale_loss = (per_token[task == i].sum() / counts[i].clamp(min=1) for i in (0, 1))
        loss = label_loss + self.weight * rationale_loss
        n = len(task) // 2  # inputs in the batch: parts are weighted by them, as the Trainer weighs eval_loss
        return loss, outputs, {"label_loss": label_loss.item() * n, "rationale_loss": rationale_loss.item() * n}, n


class LossTrainer(transformers.Trainer):
    """A Trainer whose loss is `loss` (SoftTargets or TwoTasks) and which reports the loss's parts per position."""

    def __init__(self, *args: Any, loss: LossFn, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.loss = loss
        self.loss_is_scaled_for_ga = getattr(loss, "scaled_for_ga", None)
        teacher = getattr(loss, "teacher", None)
        if teacher is not None:
            loss.teacher = teacher.to(self.args.device)
        self._sums: dict[str, dict[str, float]] = {"train": defaultdict(float), "eval": defaultdict(float)}

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        loss, outputs, parts, count = self.loss(model, dict(inputs), num_items_in_batch)
        global_count = getattr(self.loss, "by_num_items", False) and num_items_in_batch is not None
        if self.args.average_tokens_across_devices and global_count:
            loss = loss * self.accelerator.num_processes  # the count is global; DDP averages the gradients
        sums = self._sums["train" if model.training else "eval"]
        for key, value in parts.items():
            sums[key] += value
        sums["n"] += count
        return (loss, outputs) if return_outputs else loss

    def _mean_parts(self, mode: str) -> dict[str, float]:
        sums = self._sums[mode]
        n = sums.pop("n", 0)
        out = {key: value / n for key, value in sums.items()} if n else {}
        sums.clear()
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training:
            logs.update(self._mean_parts("train"))
        super().log(logs, start_time)

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        """Adds the loss's parts to the evaluation metrics, so they are logged and reported with eval_loss."""
        self._sums["eval"].clear()
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", "eval")
        output.metrics.update({f"{prefix}_{key}": value for key, value in self._mean_parts("eval").items()})
        return output
