"""The distillation loss, one pure function so its maths is pinned by a hand-computed test.

    loss = alpha · CE(student, labels) + (1 − alpha) · T² · KL(softmax(teacher / T) ‖ softmax(student / T))

Both terms are sums over the scored positions (tokens whose label is not -100, or examples) divided by one count,
so the loss is a per-position mean and gradient accumulation can normalise it like transformers does its own loss.
The T² factor keeps the soft term's gradients on the same scale as T changes (Hinton et al., 2015).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmkit.data.tokens import IGNORE_INDEX


@dataclass
class DistillLoss:
    loss: torch.Tensor  # what backpropagates
    ce: torch.Tensor  # sum of the hard-label cross-entropy over the scored positions
    kl: torch.Tensor  # sum of KL(teacher ‖ student) at temperature T over the same positions
    count: int  # scored positions in this batch


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    temperature: float,
    num_items: int | torch.Tensor | None = None,
) -> DistillLoss:
    """`student` and `teacher` are [positions, classes] logits at the scored positions, `targets` [positions] the
    hard labels there. `num_items` is the count to divide by (the whole accumulated batch's, when the Trainer gives
    one); by default this batch's positions."""
    student, teacher = student.float(), teacher.float()
    ce = F.cross_entropy(student, targets, reduction="sum")
    kl = F.kl_div(
        F.log_softmax(student / temperature, dim=-1),
        F.log_softmax(teacher / temperature, dim=-1),
        log_target=True,
        reduction="sum",
    )
    count = len(targets)
    denominator = num_items if num_items is not None else max(count, 1)
    loss = (alpha * ce + (1 - alpha) * temperature**2 * kl) / denominator
    return DistillLoss(loss, ce.detach(), kl.detach(), count)


def scored_positions(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, labels: torch.Tensor, causal: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Select the positions that are scored: for a causal LM the logits at t predict the label at t + 1 (so the last
    logit and the first label drop out), for a classifier every example with a label. `teacher_logits` may already
    be selected (cached logits hold only scored positions), and then passes through."""
    if causal:
        student_logits, labels = student_logits[:, :-1], labels[:, 1:]
        if teacher_logits is not None and teacher_logits.dim() == 3:
            teacher_logits = teacher_logits[:, :-1]
    mask = labels != IGNORE_INDEX
    if teacher_logits is not None and teacher_logits.shape[:-1] == mask.shape:
        teacher_logits = teacher_logits[mask]
    return student_logits[mask], teacher_logits, labels[mask]
