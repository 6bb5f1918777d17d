"""ORPO through the chunked LM head: TRL's experimental `ORPOTrainer` computes the full logits of every chosen and
rejected row; DPO and KTO already use TRL's fused head, ORPO does not.

Why our own: ORPO's loss needs, from one forward pass, the chosen rows' mean cross-entropy over every non-padding
token and each row's mean log-probability of its answer tokens. Both are read from one per-token log-probability of
the next input token (`llmkit.chunked.token_log_probs`), since a row's answer labels are its input tokens. This
replaces the trainer instance's `concatenated_forward` (as `llmkit.heldout` wraps instance methods) with the same
outputs, computed without the `[rows × length × vocabulary]` logits.
"""

from __future__ import annotations

from typing import Any

import torch

from llmkit import chunked
from llmkit.data.tokens import IGNORE_INDEX


def unsupported(trainer: Any) -> str | None:
    """Why this `ORPOTrainer` keeps TRL's own forward, or None."""
    if trainer.is_encoder_decoder:
        return "ORPO's chunked forward is for decoder-only models"
    if trainer.aux_loss_enabled:
        return "the model adds a router loss to ORPO's"
    return None


def attach(trainer: Any, model: Any) -> None:
    """Give an `ORPOTrainer` instance the chunked forward (the caller checked `chunked.enabled` with `unsupported`)."""
    capture, size = chunked.HeadInput(chunked.output_head(model)), chunked.vocab_chunk(model)

    def concatenated_forward(model: Any, batch: dict[str, Any]) -> tuple[Any, ...]:
        device = trainer.accelerator.device
        cat = trainer.concatenated_inputs(batch, is_encoder_decoder=False, padding_value=trainer.padding_value,
                                          device=device)  # fmt: skip
        rows = batch["chosen_labels"].shape[0]
        ids, mask = cat["concatenated_input_ids"], cat["concatenated_attention_mask"]
        with capture.capturing():
            model(ids, attention_mask=mask, use_cache=False)
        hidden, nexts = chunked.aligned(capture.take(), torch.where(mask == 1, ids, IGNORE_INDEX), causal=True)
        answers = cat["concatenated_labels"][:, 1:].to(nexts.device)
        scored, answer = nexts != IGNORE_INDEX, answers != IGNORE_INDEX
        if not torch.equal(answers[answer], nexts[answer]):
            raise RuntimeError("ORPO's answer labels are not the next input tokens; this is a bug in llmkit")
        log_probs, mean_logits = chunked.token_log_probs(hidden[scored], capture.head, nexts[scored], size)
        per_token = log_probs.new_zeros(scored.shape)
        per_token[scored] = log_probs
        chosen_nll = -per_token[:rows].sum() / scored[:rows].sum()
        logps = (per_token * answer).sum(-1) / answer.sum(-1)
        chosen = int(scored[:rows].sum())  # TRL logs the mean logit over every position; here the non-padding ones
        return logps[:rows], logps[rows:], mean_logits[:chosen], mean_logits[chosen:], chosen_nll

    trainer.concatenated_forward = concatenated_forward
