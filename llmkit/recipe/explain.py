"""The recipe reference, rendered from the schema itself so field docs are written once (`llmkit explain`).

`docs/recipe.md` is this output; a test fails when the two drift apart.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from llmkit.errors import LlmkitError, did_you_mean
from llmkit.methods import METHODS
from llmkit.recipe.rl import LengthPenalty, Reward
from llmkit.recipe.schema import TASK_SECTIONS, Recipe
from llmkit.recipe.tasks import tasks_using
from llmkit.recipe.training import TrainingSection

HEADER = """# Recipe reference

Generated from the schema by `llmkit explain` (do not edit by hand; `make docs` rewrites it).
Every section rejects unknown keys. Relative paths resolve against the current directory.
"""


def reference(section: str | None = None) -> str:
    """The whole reference, or one section of it: `model`, `data`, `method` (every method) or `method.lora`,
    `training`, a task's section (`classification`, `dpo`, ...) or `top` (the top-level keys)."""
    sections = _sections()
    if section is None:
        return "\n".join([HEADER, *(line for lines in sections.values() for line in lines)]).rstrip() + "\n"
    chosen = [lines for key, lines in sections.items() if key == section or key.startswith(f"{section}.")]
    if not chosen:
        names = sorted({key.split(".")[0] for key in sections} | {k for k in sections if k.startswith("method.")})
        raise LlmkitError(
            f"explain: no recipe section '{section}'{did_you_mean(section, names)}; choose one of {', '.join(names)}."
        )
    return "\n".join(line for lines in chosen for line in lines).rstrip() + "\n"


def _sections() -> dict[str, list[str]]:
    """Every section's rendered table, keyed by its dotted name, in the reference's order."""
    data = _model_of(Recipe.model_fields["data"].annotation)
    out = {"top": _section("top level", Recipe, skip={"model", "data", "method", "training"})}
    for name in ("model", "data"):
        out[name] = _section(name, _model_of(Recipe.model_fields[name].annotation))
    out["data.train"] = _section("data.train / data.validation", _model_of(data.model_fields["train"].annotation))
    for name, cls in METHODS.items():
        out[f"method.{name}"] = _section(f"method: {name}", cls, skip={"name"}, doc=(cls.__doc__ or "").strip())
    out["training"] = _section("training", TrainingSection, doc=(TrainingSection.__doc__ or "").strip())
    for name, cls in TASK_SECTIONS.items():  # each read only by the tasks that list it
        out[name] = _section(f"{name} (task: {', '.join(tasks_using(name))})", cls, doc=(cls.__doc__ or "").strip())
    rewards = (
        ("rewards", "grpo / rloo rewards: each reward", Reward),
        ("rewards.length_penalty", "rewards: length_penalty", LengthPenalty),
    )
    for key, title, cls in rewards:
        out[key] = _section(title, cls, doc=(cls.__doc__ or "").strip())
    return out


def _model_of(annotation: Any) -> type[BaseModel]:
    """The first model inside an annotation, however deep (`Optional[Annotated[DataSource | list[...]]]`)."""
    annotation = _unwrapped(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        try:
            return _model_of(arg)
        except TypeError:
            continue
    raise TypeError(f"no model in {annotation!r}")


def _section(title: str, model: type[BaseModel], skip: set[str] = frozenset(), doc: str = "") -> list[str]:
    lines = [f"## {title}", ""]
    if doc:
        lines += [" ".join(doc.split()), ""]
    fields = {name: field for name, field in model.model_fields.items() if name not in skip}
    if not fields:
        return [*lines, "No keys of its own.", ""]
    lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in fields.items():
        default = "required" if field.is_required() else _default(field)
        lines.append(f"| `{name}` | {_type(field.annotation)} | {default} | {field.description or ''} |")
    return [*lines, ""]


def _default(field: Any) -> str:
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    return f"`{json.dumps(value)}`" if value is not None else "unset"


def _unwrapped(annotation: Any) -> Any:
    """The type inside Annotated[...] (a discriminated union's tagged members)."""
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation


def _type(annotation: Any) -> str:
    """`Literal['a', 'b'] | None` → `a, b or null`: the values a user can write, not Python's spelling."""
    annotation = _unwrapped(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if args and origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in args)
    if annotation is type(None):
        return "null"
    if args:
        return f"{origin.__name__}[{', '.join(_type(a) for a in args)}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))
