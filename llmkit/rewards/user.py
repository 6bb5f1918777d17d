"""A user's reward function, named in the recipe as `path/to/file.py:name` or `module:name`: imported when training
starts (never by `llmkit validate`), checked for TRL's calling convention, and fingerprinted for the manifest."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmkit.errors import RecipeError, first_line


def load_function(reference: str, key: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The function and what the manifest records of it (its reference, source file and that file's sha256).
    Anything that stops it from being called the way TRL calls rewards is one sentence naming `key`."""
    target, name = reference.rsplit(":", 1)
    try:
        module = _import(target)
    except Exception as exc:  # the user's module may fail in any way while it runs its top level
        raise RecipeError(f"{key}: cannot import '{reference}': {type(exc).__name__}: {first_line(exc)}") from None
    function = getattr(module, name, None)
    if function is None:
        raise RecipeError(f"{key}: '{target}' has no '{name}'; check the name after the colon in '{reference}'")
    if not callable(function):
        raise RecipeError(f"{key}: '{reference}' is a {type(function).__name__}, not a function")
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        parameters = None  # a builtin or C callable: trust it
    if parameters is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise RecipeError(
            f"{key}: '{reference}' must accept **kwargs: TRL passes prompts, completions, completion_ids and every "
            f"dataset column by keyword; write it as def {name}(completions, **kwargs)"
        )
    source = getattr(module, "__file__", None)
    record: dict[str, Any] = {"function": reference, "file": source}
    if source and Path(source).is_file():
        record["sha256"] = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    return function, record


def _import(target: str) -> Any:
    if not target.endswith(".py"):
        return importlib.import_module(target)
    path = Path(target).expanduser().resolve()
    name = f"llmkit_rewards.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"'{path}' cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
