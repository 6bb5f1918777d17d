"""Losses through the LM head in chunks of trained tokens, so the `[batch × length × vocabulary]` logits never exist.

Why our own: transformers' causal-LM and encoder-decoder heads compute the logits of every position in float32 and
keep them, their log-softmax and their gradient alive for backward; on SmolLM2 (49,152 tokens) that is most of a
LoRA run's activation memory. TRL's fused LM head (which its DPO, KTO and GRPO trainers use) returns a causal LM's
per-token log-probabilities only, not the whole distribution distillation's KL needs, nor an encoder-decoder's; and
Liger's fused kernel needs Triton on a GPU.

Here a forward pre-hook on the head hands llmkit the hidden states and lets the head compute nothing; the hidden
states of the positions whose label is not -100 then go through the head `chunk` at a time, and each chunk's loss
and gradient are computed and freed in the forward pass (`_HeadLoss`), so backward only multiplies stored gradients.
The result equals the model's own loss and gradients (tests pin both, to 1e-5, on GPT-2, Llama and T5).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmkit.console import say
from llmkit.data.tokens import IGNORE_INDEX
from llmkit.families import EXACT_HEAD_MODEL_TYPES, chunk_tokens
from llmkit.losses import per_item

# A chunk's loss: (its logits [n, vocab], the slice of scored positions they belong to) → (the chunk's summed loss,
# a 1-D tensor of additive statistics such as per-part sums, summed over chunks and returned detached).
ChunkLoss = Callable[[torch.Tensor, slice], tuple[torch.Tensor, torch.Tensor]]


def unsupported(model: Any, sharded: bool = False) -> str | None:
    """Why the chunked loss would not be exact (or possible) for this model, or None. `sharded`: FSDP or DeepSpeed
    train it, which gather the head's weight only inside the model's own forward."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in EXACT_HEAD_MODEL_TYPES:
        return f"model type '{model_type}' changes its logits after the head"
    if output_head(model) is None:
        return "the model has no LM head"
    if type(getattr(model, "base_model", None)).__name__ == "AdaLoraModel":
        return "AdaLoRA adds its orthogonal regularisation to the model's own loss"
    if sharded:
        return "FSDP and DeepSpeed gather the head's weight only inside the model's forward"
    return None


def enabled(trainer: Any, model: Any, wanted: bool, task_reason: str | None = None) -> bool:
    """Whether `trainer` should compute `model`'s loss chunked: the recipe's `training.chunked_loss`, where it is
    exact. Where it is not — for the model, or for the task (`task_reason`) — says why once and leaves the model's
    own loss."""
    if not wanted:
        return False
    if getattr(trainer.args, "use_liger_kernel", False):
        say("training.chunked_loss: off, as Liger's fused linear cross-entropy (training.use_liger_kernel) does it")
        return False
    reason = task_reason or unsupported(model, sharded=bool(trainer.args.fsdp or trainer.args.deepspeed))
    if reason:
        say(f"training.chunked_loss: off, as {reason}; the model computes its full logits")
    else:
        say(f"loss: trained tokens only through the LM head, {vocab_chunk(model)} at a time (training.chunked_loss)")
    return reason is None


def vocab_chunk(model: Any) -> int:
    """Tokens per chunk for `model`'s head."""
    head = output_head(model)
    return chunk_tokens(getattr(head, "out_features", None) or model.config.vocab_size)


def output_head(model: Any) -> nn.Module | None:
    """The module that turns hidden states into logits, under any peft wrapper."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    getter = getattr(inner, "get_output_embeddings", None)
    return getter() if getter is not None else None


class HeadInput:
    """Captures the hidden states of the first call to the LM head inside `capturing()`, and makes that call return
    no positions (its logits come out `[batch, 0, vocab]`), so the model never computes them. Otherwise the head is
    untouched: generation, the model's own loss and the chunks llmkit sends work as before."""

    def __init__(self, head: nn.Module):
        self.head = head
        self.active = False
        self.hidden: torch.Tensor | None = None
        head.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not self.active:
            return None
        self.active = False  # the model's one call; llmkit's own calls on the chunks then reach the head
        self.hidden = args[0]
        return (args[0][..., :0, :], *args[1:])

    @contextmanager
    def capturing(self) -> Iterator[HeadInput]:
        self.active, self.hidden = True, None
        try:
            yield self
        finally:
            self.active = False

    def take(self) -> torch.Tensor:
        """The hidden states of the last forward pass (and forget them, so they are freed with the graph)."""
        if self.hidden is None:
            raise RuntimeError("the LM head was not called during the forward pass")
        hidden, self.hidden = self.hidden, None
        return hidden


def aligned(hidden: torch.Tensor, labels: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states [batch, positions, hidden] and the labels they predict [batch, positions]: for a causal LM
    position t predicts label t + 1. Prompt tuning prepends virtual tokens, so only the last `labels.shape[1]`
    positions are the inputs'."""
    hidden = hidden[:, hidden.shape[1] - labels.shape[1] :]
    labels = labels.to(hidden.device)
    return (hidden[:, :-1], labels[:, 1:]) if causal else (hidden, labels)


def scored_hidden(hidden: torch.Tensor, labels: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden states that predict a label (not -100), and those labels, as [positions, ...]."""
    hidden, labels = aligned(hidden, labels, causal)
    mask = labels != IGNORE_INDEX
    return hidden[mask], labels[mask]


def _over_chunks(
    hidden: torch.Tensor, head: nn.Module, chunk_loss: ChunkLoss, chunk: int, params: Sequence[Any] | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
    """`chunk_loss` summed over chunks of `hidden`: (loss, statistics, gradients). With `params`, also the
    gradients of the loss for `hidden` and then for each of `params`, taken chunk by chunk, so one chunk's logits
    are alive at a time; without, none are taken."""
    grads = None if params is None else [torch.zeros_like(hidden), *(torch.zeros_like(p) for p in params)]
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    stats = None
    for start in range(0, len(hidden), chunk):
        where = slice(start, min(start + chunk, len(hidden)))
        with torch.enable_grad() if grads is not None else torch.no_grad():
            piece = hidden[where].detach().requires_grad_(grads is not None)
            loss, extra = chunk_loss(head(piece), where)
            if grads is not None:
                found = torch.autograd.grad(loss, [piece, *params], allow_unused=True)
        if grads is not None:
            grads[0][where] = found[0]
            for acc, grad in zip(grads[1:], found[1:], strict=True):
                if grad is not None:
                    acc += grad
        total += loss.detach().float()
        stats = extra.detach() if stats is None else stats + extra.detach()
    return total, stats, grads


class _HeadLoss(torch.autograd.Function):
    """Sum of `chunk_loss` over chunks of `hidden`, with the gradients taken chunk by chunk in forward; backward
    scales them. The head's trainable parameters are inputs, so their gradients reach them (a tied or LoRA head)."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, head: nn.Module, chunk_loss: ChunkLoss, chunk: int, *params: Any):
        total, stats, grads = _over_chunks(hidden, head, chunk_loss, chunk, params)
        ctx.save_for_backward(*grads)
        ctx.mark_non_differentiable(stats)
        return total, stats

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor, grad_stats: Any) -> tuple[Any, ...]:
        grad_hidden, *grad_params = ctx.saved_tensors
        scale = grad_total.to(grad_hidden.dtype)
        return (grad_hidden * scale, None, None, None, *(g * grad_total.to(g.dtype) for g in grad_params))


def head_loss(
    hidden: torch.Tensor, head: nn.Module, chunk_loss: ChunkLoss, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`chunk_loss` summed over `hidden` [positions, hidden] in chunks of `chunk` positions: (loss, statistics).
    Without gradients (evaluation) the chunks are simply summed."""
    if len(hidden) == 0:
        zero = hidden.sum() * 0.0
        _, extra = chunk_loss(head(hidden[:1]), slice(0, 0))
        return zero.float(), torch.zeros_like(extra)
    params = [p for p in head.parameters() if p.requires_grad]
    if torch.is_grad_enabled() and (hidden.requires_grad or params):
        return _HeadLoss.apply(hidden, head, chunk_loss, chunk, *params)
    total, stats, _ = _over_chunks(hidden, head, chunk_loss, chunk)
    return total, stats


class _HeadLogProbs(torch.autograd.Function):
    """Per-position log-probability of `targets` through `head`, a chunk at a time. For a loss that is not a sum over
    positions (ORPO's odds ratio of per-row means), so the gradient cannot be taken in forward: backward recomputes
    each chunk's logits. Also returns each position's mean logit, detached, for TRL's logging."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx: Any, hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, chunk: int, *params: Any):
        log_probs, means = [], []
        for start in range(0, len(hidden), chunk):
            logits = head(hidden[start : start + chunk]).float()
            log_probs.append(logits.log_softmax(-1).gather(-1, targets[start : start + chunk, None]).squeeze(-1))
            means.append(logits.mean(-1))
        ctx.save_for_backward(hidden, targets)
        ctx.head, ctx.chunk, ctx.params = head, chunk, params
        mean = torch.cat(means) if means else hidden.new_zeros(0, dtype=torch.float32)
        ctx.mark_non_differentiable(mean)
        return (torch.cat(log_probs) if log_probs else mean.clone()), mean

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx: Any, grad_log_probs: torch.Tensor, grad_means: Any) -> tuple[Any, ...]:
        hidden, targets = ctx.saved_tensors

        def weighted(logits: torch.Tensor, where: slice) -> tuple[torch.Tensor, torch.Tensor]:
            picked = logits.float().log_softmax(-1).gather(-1, targets[where, None]).squeeze(-1)
            return (picked * grad_log_probs[where]).sum(), picked.new_zeros(1)

        _, _, grads = _over_chunks(hidden, ctx.head, weighted, ctx.chunk, ctx.params)
        return (grads[0], None, None, None, *grads[1:])


def token_log_probs(
    hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability of each target [positions], each position's mean logit [positions], detached)."""
    params = [p for p in head.parameters() if p.requires_grad]
    return _HeadLogProbs.apply(hidden, head, targets, chunk, *params)


def cross_entropy_sums(
    targets: torch.Tensor,
    groups: Sequence[tuple[torch.Tensor, float | torch.Tensor]] = (),
    label_smoothing: float = 0.0,
) -> ChunkLoss:
    """Summed cross-entropy against `targets` [positions]. With `groups` (mask over the positions, scale) the loss is
    the sum of each group's cross-entropy times its scale, and the statistics each group's plain sum; without, the
    loss and the one statistic are the plain sum. `label_smoothing` shapes the loss, never the statistics."""

    def loss(logits: torch.Tensor, where: slice) -> tuple[torch.Tensor, torch.Tensor]:
        per_token = F.cross_entropy(logits.float(), targets[where], reduction="none", label_smoothing=label_smoothing)
        plain = per_token.detach()
        if label_smoothing:
            plain = F.cross_entropy(logits.detach().float(), targets[where], reduction="none")
        if not groups:
            return per_token.sum(), plain.sum().reshape(1)
        weighted = sum((per_token[mask[where]].sum() * scale for mask, scale in groups), per_token.new_zeros(()))
        return weighted, torch.stack([plain[mask[where]].sum() for mask, _ in groups])

    return loss


def causal_lm_loss(capture: HeadInput, chunk: int) -> Callable[..., torch.Tensor]:
    """A Trainer `compute_loss_func` for a causal LM whose head `capture` watches: the summed next-token
    cross-entropy over the trained tokens, divided by the accumulated batch's count as transformers' loss is."""
    return _lm_loss(capture, chunk, causal=True)


def seq2seq_loss(capture: HeadInput, chunk: int, label_smoothing: float = 0.0) -> Callable[..., torch.Tensor]:
    """The same for an encoder-decoder, whose labels are not shifted (the decoder inputs are). Label smoothing
    applies while training only, as in `llmkit.losses.batch_loss`, so eval_loss is the plain cross-entropy."""
    return _lm_loss(capture, chunk, causal=False, label_smoothing=label_smoothing)


def _lm_loss(capture: HeadInput, chunk: int, causal: bool, label_smoothing: float = 0.0) -> Callable[..., torch.Tensor]:
    def loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        hidden, targets = scored_hidden(capture.take(), labels, causal)
        smoothing = label_smoothing if torch.is_grad_enabled() else 0.0
        total, _ = head_loss(hidden, capture.head, cross_entropy_sums(targets, label_smoothing=smoothing), chunk)
        return per_item(total, num_items_in_batch, max(len(targets), 1))

    return loss


def attach(trainer: Any, model: Any, causal: bool, label_smoothing: float = 0.0) -> None:
    """Give a transformers `trainer` the chunked loss of `model` as its `compute_loss_func`."""
    capture = capture_head(trainer, model)
    if causal:
        trainer.compute_loss_func = causal_lm_loss(capture, vocab_chunk(model))
    else:
        trainer.compute_loss_func = seq2seq_loss(capture, vocab_chunk(model), label_smoothing)


def attach_loss(trainer: Any, model: Any, loss: Any) -> None:
    """Let a loss of llmkit's own (`llmkit.distill.trainer`) compute through `model`'s head in chunks."""
    loss.chunk(capture_head(trainer, model), vocab_chunk(model))


def capture_head(trainer: Any, model: Any) -> HeadInput:
    """Watch `model`'s LM head while `trainer` computes a loss (training and evaluation), and only then: generation
    inside an evaluation (Seq2SeqTrainer) still gets its logits. A wrapper on the instance, like `llmkit.heldout`."""
    capture = HeadInput(output_head(model))
    compute_loss = trainer.compute_loss

    def watched(*args: Any, **kwargs: Any) -> Any:
        with capture.capturing():
            return compute_loss(*args, **kwargs)

    trainer.compute_loss = watched
    return capture
