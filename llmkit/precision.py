"""Precision and attention that fit the hardware: `model.dtype: auto`, `training.bf16: auto`,
`model.attn_implementation: auto`.

bf16 where the GPU supports it and float32 on CPU (bf16 autocast is slower than float32 on most CPUs, and float16
needs loss scaling). A method that trains the base weights themselves (full, BitFit) keeps them in float32 and gets
bf16 through autocast, because an optimizer step on bf16 weights rounds small updates away. Attention: FlashAttention
2 when it is installed and the model supports it on a GPU in half precision, else transformers' choice (sdpa where
the model has it).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cuda_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def weight_dtype(setting: str, trains_base_weights: bool = False) -> torch.dtype:
    """The dtype the base weights load in: the recipe's, or for `auto` bf16 on a bf16 GPU unless they train."""
    if setting != "auto":
        return DTYPES[setting]
    return torch.bfloat16 if cuda_bf16() and not trains_base_weights else torch.float32


def bf16_autocast(setting: bool | str | None, fp16: bool | None) -> bool:
    """`training.bf16`: as set, or for `auto` (the default) on wherever the GPU supports it and fp16 is not asked."""
    if setting == "auto" or setting is None:
        return cuda_bf16() and not fp16
    return bool(setting)


def attention_candidates(setting: str | None, dtype: torch.dtype) -> list[str | None]:
    """Implementations to try in order (None: transformers' default, sdpa where the model supports it)."""
    if setting not in ("auto", None):
        return [setting]
    half = dtype in (torch.bfloat16, torch.float16)
    if setting == "auto" and half and torch.cuda.is_available() and importlib.util.find_spec("flash_attn"):
        return ["flash_attention_2", None]
    return [None]


def describe(model: Any, args: Any) -> str:
    """One line on what was chosen, read back from the model and the training arguments."""
    first = next(model.parameters())
    autocast = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
    attention = getattr(getattr(model, "config", None), "_attn_implementation", None) or "default"
    return f"precision: {str(first.dtype).removeprefix('torch.')} weights, {autocast} autocast · attention {attention}"
