"""What every `method:` block shares: strict keys, which families and tasks it fits, and how it wraps a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from llmkit.families import FAMILIES

ALL_FAMILIES = tuple(FAMILIES)


@dataclass
class MethodContext:
    """What a method may need to know beyond its own block; built by the trainer after the model loads."""

    family: str
    task: str
    head: str  # causal_lm, seq_cls or seq2seq_lm
    model_type: str
    total_steps: int | None = None  # the run length, for schedules such as AdaLoRA's
    model_name: str | None = None  # the recipe's model.name, as written (AdapterFusion checks its adapters' base)
    model_path: str | None = None  # where from_pretrained finds the base (prompt tuning loads its tokenizer)


class MethodConfig(BaseModel):
    """Base of every method block. Subclasses add their keys and implement `apply`."""

    model_config = ConfigDict(extra="forbid")

    families: ClassVar[tuple[str, ...]] = ALL_FAMILIES
    tasks: ClassVar[tuple[str, ...] | None] = None  # None: every task
    model_types: ClassVar[tuple[str, ...] | None] = None  # None: every model type of its families
    refused_model_types: ClassVar[dict[str, str]] = {}  # model types of a supported family that fail, with the reason
    # (family, task) pairs that fail although both are supported on their own, each with the reason.
    excluded: ClassVar[dict[tuple[str, str], str]] = {}
    mergeable: ClassVar[bool] = False  # whether `llmkit merge` can fold it into the base weights
    merge_note: ClassVar[str] = ""  # for methods that cannot merge: why, in one clause

    @classmethod
    def why_not(cls, family: str | None, task: str) -> str | None:
        """Why this method does not fit `family` and `task` together (None if it does, or if the family is unknown)."""
        keys = ((family, task), (family, "*"), ("*", task))
        reason = next((cls.excluded[k] for k in keys if k in cls.excluded), None)
        if reason is not None:
            return reason
        if family is not None and family not in cls.families:
            return f"it supports {', '.join(cls.families)} models"
        if cls.tasks is not None and task not in cls.tasks:
            return f"it supports the tasks {', '.join(cls.tasks)}"
        return None

    def problems(self, family: str | None, task: str, model_type: str | None = None) -> list[str]:
        """Cross-checks against the model family, task and model type; one sentence per problem."""
        name = self.name  # type: ignore[attr-defined]
        reason = self.why_not(family, task)
        if reason is not None:
            on = f" on {family} models" if family is not None else ""
            return [f"method.name: '{name}' does not work for task '{task}'{on}: {reason}."]
        if model_type is not None and self.model_types is not None and model_type not in self.model_types:
            return [
                f"method.name: '{name}' does not work on model type '{model_type}'; "
                f"it supports {', '.join(self.model_types)}."
            ]
        why = self.refused_model_types.get(model_type or "")
        if why is not None:
            return [f"method.name: '{name}' does not work on model type '{model_type}': {why}."]
        return []

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
    trains_base_weights: ClassVar[bool] = False  # True: the optimizer updates base weights (kept float32 under auto)

    def save(self, model: Any, directory: Any) -> None:
        """Write what the run trained into `directory` (a peft adapter or a whole model by default)."""
        model.save_pretrained(directory)

    def reload(self, base_model: Any, run_dir: Any) -> Any:
        """Put a finished run's trained weights back onto a freshly loaded base model (peft adapters by default)."""
        from peft import PeftModel

        return PeftModel.from_pretrained(base_model, run_dir)

    def merged(self, base_model: Any, run_dir: Any) -> Any:
        """A plain transformers model with the run's weights folded in (for `llmkit merge`; mergeable methods)."""
        return self.reload(base_model, run_dir).merge_and_unload()
