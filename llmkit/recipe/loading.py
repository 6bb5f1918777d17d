"""Reading a recipe: YAML with the line of every key, shorthands expanded, `key.path=value` overrides applied.

Validation itself is the schema's (`llmkit.recipe.schema`); this module only turns text into the dict it validates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmkit.errors import RecipeError
from llmkit.recipe.sections import DATA_SPLITS

Loc = tuple[str, ...]


def method_dict(value: Any) -> Any:
    """`method: lora` is shorthand for `method: {name: lora}`."""
    if isinstance(value, str):
        return {"name": value}
    return value


def normalise(data: Any) -> dict[str, Any]:
    """Expand shorthands (so overrides like `method.r=16` apply to `method: lora`); copy so the input is untouched."""
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a YAML mapping of sections (model, data, method, training, output_dir).")
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    if "method" in data:
        data["method"] = method_dict(data["method"])
    section = data.get("data")
    if isinstance(section, dict):
        for split in DATA_SPLITS:
            if split in section:
                section[split] = source_dict(section[split])
    return data


def anchor_data_paths(data: dict[str, Any], directory: Path) -> None:
    """Make the relative `path` of every data source in a normalised recipe start at `directory`."""

    def anchor(source: Any) -> None:
        if isinstance(source, list):
            for item in source:
                anchor(item)
        elif isinstance(source, dict) and isinstance(source.get("path"), str):
            path = Path(source["path"]).expanduser()
            if not path.is_absolute():
                source["path"] = str(directory / path)

    section = data.get("data")
    if isinstance(section, dict):
        for split in DATA_SPLITS:
            anchor(section.get(split))


def apply_override(data: dict[str, Any], item: str, source: str | None) -> tuple[str, ...]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override '{item}' must look like key.path=value (e.g. training.max_steps=10).", source)
    path = tuple(key.strip().split("."))
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return set_value(data, path, value, item, source)


def set_value(data: dict[str, Any], path: Loc, value: Any, item: str, source: str | None = None) -> Loc:
    """Set the dotted key `path` of a normalised recipe dict (sections made as needed); `item` names it in errors."""
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if isinstance(child, str) and path[: i + 1] == ("method",):
            child = method_dict(child)
        elif isinstance(child, str) and path[: i + 1] in {("data", split) for split in DATA_SPLITS}:
            child = {"path": child}
        elif child is None:
            child = {}
        elif not isinstance(child, dict):
            section = ".".join(path[: i + 1])
            raise RecipeError(f"override '{item}': '{section}' is a value, not a section.", source)
        node[part] = child
        node = child
    node[path[-1]] = method_dict(value) if path == ("method",) else value
    if path in {("data", split) for split in DATA_SPLITS}:
        node[path[-1]] = source_dict(value)
    return path


def source_dict(value: Any) -> Any:
    """A data source given as a path is shorthand for {path: ...}; so is each path of a list of sources (a mix)."""
    if isinstance(value, str):
        return {"path": value}
    if isinstance(value, list):
        return [source_dict(item) for item in value]
    return value


def load_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(
            f"{path}: is not UTF-8 text (byte {exc.start} cannot be decoded); save it as UTF-8."
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{where}: this is not valid YAML ({problem}).") from None
    if data is None:
        raise RecipeError(f"{path} is empty; a recipe needs at least model, data and output_dir.")
    lines: dict[tuple[str, ...], int] = {}
    duplicates: list[str] = []
    _index_lines(root, (), lines, duplicates, path)
    if duplicates:
        raise RecipeError(duplicates, str(path))
    return data, lines


def _index_lines(node: Any, prefix: tuple[str, ...], lines: dict, duplicates: list, path: Path) -> None:
    """Record the line of every key, so an error at `data.train.path` can say `recipe.yaml:7`."""
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in seen:
            dotted = ".".join((*prefix, key))
            duplicates.append(f"{path}:{line}: key '{dotted}' appears twice (also line {seen[key]}).")
        seen[key] = line
        lines[(*prefix, key)] = line
        _index_lines(value_node, (*prefix, key), lines, duplicates, path)
