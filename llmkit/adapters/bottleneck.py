"""Bottleneck adapters: a small down-project → activation → up-project block with a residual, inserted after a
transformer sub-layer's output projection (before that sub-layer's own residual connection and layer norm).

Houlsby et al. (2019) put one after the attention output and one after the feed-forward output of every layer;
Pfeiffer et al. (2021) only after the feed-forward output. AdapterFusion (Pfeiffer et al., 2021) keeps several
trained adapters frozen at each place and learns an attention over their outputs.

An adapter is attached to the projection layer it follows as a child module named `llmkit_adapter` and run by a
forward hook, so the base model's own parameter names (and checkpoints) stay unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers.activations import ACT2FN

ADAPTER = "llmkit_adapter"

# Output projections of the attention and feed-forward sub-layers, by architecture (matched at the end of a
# module's name): BERT/RoBERTa/ELECTRA/DeBERTa-v2, DistilBERT, GPT-2, Llama-style, T5, BART.
ATTENTION_OUTPUTS = (
    r"\.layer\.\d+\.attention\.output\.dense",
    r"\.layer\.\d+\.attention\.out_lin",
    r"\.h\.\d+\.attn\.c_proj",
    r"\.layers\.\d+\.self_attn\.o_proj",
    r"\.block\.\d+\.layer\.\d+\.(SelfAttention|EncDecAttention)\.o",
    r"\.layers\.\d+\.(self_attn|encoder_attn)\.out_proj",
)
FEED_FORWARD_OUTPUTS = (
    r"\.layer\.\d+\.output\.dense",
    r"\.layer\.\d+\.ffn\.lin2",
    r"\.h\.\d+\.mlp\.c_proj",
    r"\.layers\.\d+\.mlp\.down_proj",
    r"\.block\.\d+\.layer\.\d+\.DenseReluDense\.wo",
    r"\.layers\.\d+\.fc2",
)
PLACES = {"houlsby": ATTENTION_OUTPUTS + FEED_FORWARD_OUTPUTS, "pfeiffer": FEED_FORWARD_OUTPUTS}


class Bottleneck(nn.Module):
    """h + up(act(down(h))). `up` starts at zero, so an untrained adapter leaves the model exactly as it was."""

    def __init__(self, size: int, reduction_factor: int, activation: str):
        super().__init__()
        self.down = nn.Linear(size, max(1, size // reduction_factor))
        self.act = ACT2FN[activation]
        self.up = nn.Linear(self.down.out_features, size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.act(self.down(hidden)))


class Fusion(nn.Module):
    """Attention over the outputs of frozen adapters: the sub-layer output is the query, each adapter's output a
    key and a value. `value` starts as the identity, so the start is a weighted average of the adapters."""

    def __init__(self, adapters: Sequence[Bottleneck], size: int):
        super().__init__()
        self.adapters = nn.ModuleList(adapters)
        self.query = nn.Linear(size, size)
        self.key = nn.Linear(size, size)
        self.value = nn.Linear(size, size, bias=False)
        for layer in (self.query, self.key):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        nn.init.eye_(self.value.weight)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([adapter(hidden) for adapter in self.adapters], dim=-2)  # (..., adapters, size)
        scores = torch.einsum("...d,...nd->...n", self.query(hidden), self.key(outputs))
        return torch.einsum("...n,...nd->...d", scores.softmax(dim=-1), self.value(outputs))


def places(model: nn.Module, architecture: str) -> list[str]:
    """Names of the projection layers adapters follow, for `architecture` houlsby or pfeiffer."""
    pattern = re.compile("(" + "|".join(PLACES[architecture]) + ")$")
    return [name for name, _ in model.named_modules() if pattern.search("." + name)]


def _run_adapter(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    # A module-level function, not a closure, so a deep copy of the model (e.g. a DPO reference) runs its own copy.
    return getattr(module, ADAPTER)(output)


def insert(model: nn.Module, architecture: str, build: Callable[[int], nn.Module]) -> list[str]:
    """Attach `build(width)` after every place of `architecture`; returns the places. Raises ValueError if the
    model has none (an architecture these patterns do not know)."""
    names = places(model, architecture)
    if not names:
        raise ValueError(
            f"found no attention or feed-forward output layers for adapters in this {model.config.model_type} model"
        )
    for name in names:
        layer = model.get_submodule(name)
        weight = layer.weight
        width = layer.out_features if isinstance(layer, nn.Linear) else weight.shape[-1]  # GPT-2 Conv1D: (in, out)
        layer.add_module(ADAPTER, build(width).to(device=weight.device, dtype=weight.dtype))
        layer.register_forward_hook(_run_adapter)
    return names


def adapter_parameter_names(model: nn.Module) -> list[str]:
    """Every parameter that belongs to an inserted adapter or fusion layer."""
    return [name for name, _ in model.named_parameters() if f".{ADAPTER}." in name]
