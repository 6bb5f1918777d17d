"""Model-level harness for the method tests: load a tiny base the way a run does, apply a method, train a few
steps on a fixed batch, save, reload. Shared by tests/test_methods*.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import transformers

from llmkit import models
from llmkit.families import family_of
from llmkit.methods import METHODS, MethodConfig, MethodContext
from llmkit.recipe import ModelSection
from llmkit.recipe.tasks import head_task

STEPS = 8
# Small sizes, so each tiny model trains in about a second; every other key keeps its default.
SMALL = {
    "lora": {"r": 4, "target_modules": "all-linear"},
    "qlora": {"r": 4, "target_modules": "all-linear"},
    "adalora": {"init_r": 6, "target_r": 2, "tinit": 1, "tfinal": 2},
    "prefix_tuning": {"num_virtual_tokens": 4},
    "prompt_tuning": {"num_virtual_tokens": 4},
    "adapter": {"reduction_factor": 4},
    "llama_adapter": {"adapter_len": 4},
}


@dataclass
class Case:
    """One method on one tiny base model under one head."""

    method: MethodConfig
    base_dir: Path
    head: str

    @property
    def base(self) -> models.ResolvedModel:
        section = ModelSection(name=str(self.base_dir))
        model_type = transformers.AutoConfig.from_pretrained(self.base_dir).model_type
        return models.ResolvedModel(str(self.base_dir), model_type, family_of(model_type), section)

    def ctx(self, total_steps: int | None = STEPS) -> MethodContext:
        base = self.base
        return MethodContext(
            family=base.family,
            task=head_task(self.head),
            head=self.head,
            model_type=base.model_type,
            total_steps=total_steps,
            model_name=str(self.base_dir),
            model_path=str(self.base_dir),
        )

    def tokenizer(self) -> Any:
        return models.load_tokenizer(self.base)

    def load_base(self) -> Any:
        """The base as `llmkit train` loads it (head, pad token, the method's load kwargs), with a seeded new head."""
        transformers.set_seed(0)
        return models.load_model(self.base, self.head, self.tokenizer(), **self.method.load_kwargs(self.ctx()))

    def applied(self) -> Any:
        return self.method.apply(self.load_base(), self.ctx())


def method(name: str, **keys: Any) -> MethodConfig:
    return METHODS[name](name=name, **keys)


def batch(case: Case, seed: int = 0) -> dict[str, torch.Tensor]:
    """A fixed batch of two unpadded rows for the head (a model only has to fit it: loss must fall)."""
    g = torch.Generator().manual_seed(seed)
    tokenizer = case.tokenizer()
    ids = torch.randint(10, len(tokenizer), (2, 12), generator=g)
    if case.base.family == "t5":
        ids[:, -1] = tokenizer.eos_token_id  # as T5's tokenizer ends every input; its classifier pools there
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if case.head == "causal_lm":
        out["labels"] = ids.clone()
    elif case.head == "seq_cls":
        out["labels"] = torch.tensor([0, 1])
    else:
        out["labels"] = torch.randint(10, len(tokenizer), (2, 6), generator=g)
    return out


def train(
    model: Any, case: Case, data: dict[str, torch.Tensor], steps: int = STEPS, lr: float = 1e-2, callbacks: bool = True
) -> list[float]:
    """A bare training loop that calls the method's callbacks where transformers' Trainer does (after the optimizer
    step, before gradients are zeroed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    hooks = case.method.callbacks(model, case.ctx(steps)) if callbacks else []
    model.train()
    losses = []
    for step in range(steps):
        loss = model(**data).loss
        loss.backward()
        optimizer.step()
        for callback in hooks:
            callback.on_optimizer_step(None, SimpleNamespace(global_step=step), None)
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def snapshot(model: Any) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def logits(model: Any, data: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**data).logits
