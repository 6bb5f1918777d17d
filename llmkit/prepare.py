"""`llmkit prepare`: a run's data step alone — read, check, tokenise and cache every split — so a CPU node can do it
before a GPU job, which then loads the cache in seconds."""

from __future__ import annotations

from typing import Any

from llmkit import models, tasks
from llmkit.console import set_verbosity
from llmkit.data import cache
from llmkit.data.prepared import Prepared
from llmkit.outputs import RunDir
from llmkit.recipe import Recipe
from llmkit.run import RunEnv


def prepare_recipe(recipe: Recipe) -> tuple[RunEnv, Any, Prepared]:
    """The run's environment, its tokenizer and every split its task reads, prepared (or loaded from the cache)."""
    base = models.resolve_base(recipe.model, recipe.model_ref())
    env = RunEnv(recipe=recipe, run=RunDir.for_output(recipe.output_dir), base=base)
    tokenizer = env.tokenizer()
    return env, tokenizer, tasks.get(recipe.task).prepare(env, tokenizer)


def prepare_data(recipe: Recipe) -> str:
    """Prepare the recipe's data; what was written where, and how big, as lines for the user."""
    set_verbosity()
    _, _, prepared = prepare_recipe(recipe)
    splits = {"train": prepared.train, "held-out": prepared.held_out, "test": prepared.test}
    counts = ", ".join(
        f"{name} {len(ds):,}" for name, ds in splits.items() if ds is not None and hasattr(ds, "__len__")
    )
    if prepared.entry is None:
        return f"nothing to prepare ahead: data.streaming tokenises training rows as training reads them ({counts})"
    return f"prepared: {prepared.entry} ({cache.human(cache.size_of(prepared.entry))}; examples: {counts})"
