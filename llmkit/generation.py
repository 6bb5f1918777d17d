"""Generating text from a model: the recipe's `generation` section as a GenerationConfig, and the one batched
decoding loop (`llmkit predict` / `generate`, `llmkit rationales`, a rationale student's label accuracy, GRPO's greedy
held-out answers).
Seq2seq evaluation generates through Seq2SeqTrainer with the same GenerationConfig.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import GenerationConfig

from llmkit.errors import RecipeError, first_line
from llmkit.recipe import GenerationSection


def check_generation(section: GenerationSection) -> None:
    """transformers' own checks on the settings, at run start, before any weights load."""
    try:
        GenerationConfig(**section.kwargs()).validate(strict=True)
    except ValueError as exc:
        raise RecipeError(f"generation: {first_line(exc)}") from None


def configure(model: Any, section: GenerationSection, tokenizer: Any) -> None:
    """Put the recipe's decoding settings on the model's own generation config (which keeps what the checkpoint
    knows: decoder start token, EOS ids); saved with a fully fine-tuned model."""
    config = model.generation_config
    config.update(**section.kwargs())
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    if not section.do_sample:  # a checkpoint's sampling defaults (SmolLM2 ships temperature 0.2) would only warn
        config.temperature = config.top_p = config.top_k = None


@torch.no_grad()
def generate_ids(
    model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], batch_size: int = 8, **overrides: Any
) -> Iterator[torch.Tensor]:
    """The one batched decoding loop: each batch's new token ids (an encoder-decoder's whole output), with the
    model's generation config (and `overrides` of it). Decoder-only models are padded on the left, so every prompt
    ends where generation starts."""
    decoder_only = not model.config.is_encoder_decoder
    for start in range(0, len(prompts), batch_size):
        batch = [{"input_ids": [int(i) for i in ids]} for ids in prompts[start : start + batch_size]]
        inputs = tokenizer.pad(batch, padding_side="left" if decoder_only else "right", return_tensors="pt")
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        out = model.generate(**inputs, **overrides)
        yield out[:, inputs["input_ids"].shape[1] :] if decoder_only else out


def generate(
    model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], batch_size: int = 8, **overrides: Any
) -> list[str]:
    """Decode a continuation of each tokenised prompt: only the new tokens, stripped and without special tokens."""
    texts: list[str] = []
    for new in generate_ids(model, tokenizer, prompts, batch_size, **overrides):
        texts += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return texts
