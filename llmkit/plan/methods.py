"""What a method trains, from the layout alone: the trainable parameter count, the linear layers that carry an
adapter (their inputs must be kept for the backward pass) and whether the base weights themselves train."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmkit.errors import RecipeError
from llmkit.plan.arch import Arch, Linear

# peft's `target_modules` defaults per model type (peft.utils.constants), for `target_modules: auto`.
PEFT_DEFAULT_TARGETS = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "gemma"), ("q_proj", "v_proj")),
    "gpt2": ("c_attn",),
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "electra"), ("query", "value")),
    **dict.fromkeys(("t5", "mt5"), ("q", "v")),
}
# AdaLoRA's defaults differ for encoder-decoders (peft's TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING).
ADALORA_DEFAULT_TARGETS = {
    "t5": ("q", "k", "v", "o", "wi", "wo"),
    "mt5": ("q", "k", "v", "o", "wi_0", "wi_1", "wo"),
    "roberta": ("query", "key", "value", "dense"),
}
MODELLED = ("full", "lora", "qlora", "adalora", "bitfit", "prompt_tuning")


@dataclass(frozen=True)
class Trains:
    trainable: int
    adapted: tuple[Linear, ...]  # base linears with an adapter beside them
    rank: int  # the adapter rank (0 without adapters)
    dropout: float  # dropout on the adapters' inputs
    base_weights: bool  # the optimizer updates base weights (full: all, bitfit: biases)
    virtual_tokens: int = 0  # prompt tuning: positions added to every sequence
    all_weights: bool = False  # full fine-tuning: every weight trains


def trains(arch: Arch, method: Any, head: str) -> Trains:
    """What `method` (the recipe's method block) trains on `arch` with this head."""
    name = method.name
    if name == "full":
        return Trains(arch.total_params(), (), 0, 0.0, True, all_weights=True)
    if name == "bitfit":
        biases = sum(lin.fan_out * lin.count for lin in arch.linears if lin.bias) + arch.other_biases
        pooler = sum(lin.fan_out for lin in arch.head if lin.bias and lin.name == "pooler.dense")
        return Trains(biases + pooler + _trained_head(arch), (), 0, 0.0, True)
    if name == "prompt_tuning":
        submodules = 2 if head == "seq2seq_lm" else 1
        tokens = method.num_virtual_tokens
        return Trains(tokens * arch.hidden * submodules + _trained_head(arch), (), 0, 0.0, False, tokens)
    if name in ("lora", "qlora", "adalora"):
        defaults = ADALORA_DEFAULT_TARGETS if name == "adalora" else {}
        adapted = _targets(arch, method.target_modules, defaults)
        rank = method.init_r if name == "adalora" else method.r
        per = sum(rank * (lin.fan_in + lin.fan_out) * lin.count for lin in adapted)
        if name == "adalora":
            per += sum(rank * lin.count for lin in adapted)  # the singular values E
        if getattr(method, "use_dora", False):
            per += sum(lin.fan_out * lin.count for lin in adapted)  # DoRA's magnitude vectors
        return Trains(per + _trained_head(arch), adapted, rank, method.lora_dropout, False)
    raise RecipeError(f"method.name: llmkit plan does not model method '{name}' yet; it models {', '.join(MODELLED)}.")


def _targets(arch: Arch, target: str | list[str], defaults: dict[str, tuple[str, ...]]) -> tuple[Linear, ...]:
    if target == "all-linear":  # peft: every linear but the output layer and a classifier head
        return arch.linears + tuple(lin for lin in arch.head if lin.name == "pooler.dense")
    known = {**PEFT_DEFAULT_TARGETS, **defaults}
    names = known.get(arch.model_type) if target == "auto" else tuple(target)
    if names is None:
        raise RecipeError(
            f"method.target_modules: peft has no default target modules for '{arch.model_type}'; name them."
        )
    return tuple(lin for lin in arch.linears if any(lin.matches(n) for n in names))


def _trained_head(arch: Arch) -> int:
    """A new classification head trains in full with every method (peft's modules_to_save)."""
    return sum(lin.params for lin in arch.head if not _is_lm_head(lin) and lin.name != "pooler.dense")


def _is_lm_head(lin: Linear) -> bool:
    return lin.name == "lm_head"
