"""Field names of upstream config dataclasses (TrainingArguments, TRL's DPOConfig, ...), read from their source.

`llmkit validate` checks pass-through keys against these names without importing the libraries (which import torch).
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path


@cache
def config_fields(package: str, relpath: str, class_name: str) -> frozenset[str] | None:
    """The fields `class_name` in `<package>/<relpath>` declares itself (not inherited); None if not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations))) / relpath
    tree = ast.parse(source.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    return frozenset(n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name))
