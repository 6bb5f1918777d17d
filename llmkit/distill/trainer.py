"""transformers' Trainer with the distillation loss: the one place llmkit subclasses a trainer, because the loss
really differs (it reads a second model's logits). Everything else — loop, accumulation, checkpoints — is upstream.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import transformers

from llmkit.distill.loss import distillation_loss, scored_positions


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


class DistillationTrainer(transformers.Trainer):
    """Student training against a frozen teacher (live, or its cached logits in the batch)."""

    def __init__(self, *args: Any, teacher: Any, alpha: float, temperature: float, causal: bool, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device) if teacher is not None else None
        self.alpha, self.temperature, self.causal = alpha, temperature, causal
        self._sums: dict[str, dict[str, float]] = {"train": defaultdict(float), "eval": defaultdict(float)}

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        teacher_logits = inputs.pop("teacher_logits", None)
        outputs = model(**inputs)
        if teacher_logits is None:
            with torch.no_grad():
                teacher_logits = self.teacher(**inputs).logits
        student, teacher, targets = scored_positions(outputs.logits, teacher_logits, labels, self.causal)
        vocab = min(student.shape[-1], teacher.shape[-1])  # padded embedding rows past the tokenizer are never targets
        parts = distillation_loss(
            student[:, :vocab], teacher[:, :vocab], targets, self.alpha, self.temperature, num_items_in_batch
        )
        loss = parts.loss
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # the count is global; DDP averages the gradients
        sums = self._sums["train" if model.training else "eval"]
        sums["ce"] += float(parts.ce)
        sums["kl"] += float(parts.kl)
        sums["n"] += parts.count
        return (loss, outputs) if return_outputs else loss

    def _mean_parts(self, mode: str) -> dict[str, float]:
        """Hard-label cross-entropy and KL to the teacher, per scored position, since the last report."""
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
        """Adds the loss's two parts to the evaluation metrics, so they are logged and reported with eval_loss."""
        self._sums["eval"].clear()
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", "eval")
        output.metrics.update({f"{prefix}_{key}": value for key, value in self._mean_parts("eval").items()})
        return output
