"""What every `method:` block shares: strict keys, which families and tasks it fits, and how it wraps a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

ALL_FAMILIES = ("bert", "gpt2", "llama", "t5")


@dataclass
class MethodContext:
    """What a method may need to know beyond its own block; built by the trainer after the model loads."""

    family: str
    task: str
    head: str  # causal_lm, seq_cls or seq2seq_lm
    model_type: str
    total_steps: int | None = None  # the run length, for schedules such as AdaLoRA's


class MethodConfig(BaseModel):
    """Base of every method block. Subclasses add their keys and implement `apply`."""

    model_config = ConfigDict(extra="forbid")

    families: ClassVar[tuple[str, ...]] = ALL_FAMILIES
    tasks: ClassVar[tuple[str, ...] | None] = None  # None: every task
    mergeable: ClassVar[bool] = False  # whether `llmkit merge` can fold it into the base weights

    def problems(self, family: str | None, task: str) -> list[str]:
        """Cross-checks against the model family and task; one sentence per problem."""
        name = self.name  # type: ignore[attr-defined]
        out = []
        if family is not None and family not in self.families:
            out.append(
                f"method.name: '{name}' does not work on {family} models; it supports {', '.join(self.families)}."
            )
        if self.tasks is not None and task not in self.tasks:
            out.append(f"method.name: '{name}' does not work with task '{task}'; it supports {', '.join(self.tasks)}.")
        return out

    def upstream_config(self, ctx: MethodContext) -> Any:
        """The library config this block becomes (e.g. a peft LoraConfig), built at train start so upstream's own
        checks fail before any weights load. None for methods with no upstream config."""
        return None

    def load_kwargs(self, ctx: MethodContext) -> dict[str, Any]:
        """Extra `from_pretrained` arguments the method needs when the base loads (e.g. a 4-bit quantization_config)."""
        return {}

    def apply(self, model: Any, ctx: MethodContext) -> Any:
        """Return the model ready to train: frozen where the method freezes, wrapped where it wraps."""
        raise NotImplementedError

    def callbacks(self, model: Any, ctx: MethodContext) -> list[Any]:
        """TrainerCallbacks the method needs during training (e.g. AdaLoRA's rank reallocation every step)."""
        return []

    saves_full_model: ClassVar[bool] = False  # True: the run directory holds the whole model, not an adapter

    def reload(self, base_model: Any, run_dir: Any) -> Any:
        """Put a finished run's trained weights back onto a freshly loaded base model (peft adapters by default)."""
        from peft import PeftModel

        return PeftModel.from_pretrained(base_model, run_dir)
