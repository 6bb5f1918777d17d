"""pydantic's validation errors → one sentence each: `file:line: dotted.key: what is wrong and how to fix it`.

Decisions here read the errors' structure (type, location, input), never their message text.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from llmkit.errors import did_you_mean

Loc = tuple[str, ...]
# The error type of a section's pass-through keys that upstream does not know (TrainingArguments, TRL configs). They
# are reported from the raw recipe instead: pydantic skips a section's own check when a typed key there is wrong too.
UNKNOWN_KEYS = "llmkit_unknown_keys"
NO_LINE = 1e9
OVERRIDE = float("inf")


def unknown_keys(problems: Mapping[str, str]) -> PydanticCustomError:
    """The error a section raises for keys upstream does not take, one clause per key."""
    return PydanticCustomError(UNKNOWN_KEYS, "; ".join(f"{key}: {msg}" for key, msg in problems.items()))


def explain(
    exc: ValidationError,
    data: dict[str, Any],
    *,
    root: type[BaseModel],
    methods: Mapping[str, type[BaseModel]],
    key_checks: Mapping[str, Callable[[Any], dict[str, str]]],
    source: str | None,
    lines: dict[Loc, int],
    touched: set[Loc],
) -> list[str]:
    """Every problem of a recipe in file order. `key_checks[section](keys)` names the section's unknown pass-through
    keys (run on the raw dict); `methods` are the method blocks, whose tag pydantic puts in error locations."""
    located: list[tuple[Loc, str, str | None]] = []
    for section, check in key_checks.items():
        if isinstance(data.get(section), dict):
            located += [((section, key), message, None) for key, message in check(data[section]).items()]
    for err in exc.errors():
        kind = err["type"]
        if kind == UNKNOWN_KEYS:
            continue  # reported above from the raw dict
        # ints are list positions; "<...>" parts are the tags of a discriminated union (data.train: one or a list)
        loc = tuple(str(p) for p in err["loc"] if not isinstance(p, int) and not str(p).startswith("<"))
        loc = tuple(p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] == "method" and p in methods))
        got = None
        if kind == "extra_forbidden":
            message = f"unknown key{did_you_mean(loc[-1], allowed_keys(root, methods, loc[:-1]))}"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "union_tag_invalid":
            tag = str(err.get("input", {}).get("name", "")) if isinstance(err.get("input"), dict) else ""
            message = f"unknown method '{tag}'{did_you_mean(tag, methods)}; choose one of {', '.join(methods)}"
            loc = ("method", "name")
        elif kind == "union_tag_not_found":
            message = f"method needs a name (e.g. method.name=lora); choose one of {', '.join(methods)}"
        else:
            message = re.sub(r" or instance of \w+", "", err["msg"].removeprefix("Value error, "))
            if kind not in ("value_error", "assertion_error") and "input" in err:
                got = repr(err["input"])
        located.append((loc, message, got))
    merged = _merge_union_members(located)
    merged.sort(key=lambda item: line_of(item[0], lines, touched))
    return [f"{where(loc, source, lines, touched)}{_keyed(loc, msg)}" for loc, msg in merged]


def _keyed(loc: Loc, message: str) -> str:
    """`key.path: message`; a rule across sections names its key itself (`grpo.num_generations: ...`)."""
    if not loc and _KEY_FIRST.match(message):
        return message
    return f"{'.'.join(loc) or 'recipe'}: {message}"


_KEY_FIRST = re.compile(r"^[a-z_]+(\.[\w]+)*: ")


# pydantic names the member of a plain union (`str | list[str]`) a value failed as the last part of its location.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|list\[.*\]|dict\[.*\]|literal\[.*\]|function-\w+\[.*\])$")


def _merge_union_members(located: list[tuple[Loc, str, str | None]]) -> list[tuple[Loc, str]]:
    """A value that fits no member of a union is one problem, not one per member: `key: A, or B (got x)`."""
    merged: dict[Loc, list[tuple[str, str | None]]] = {}
    for loc, message, got in located:
        key = loc[:-1] if len(loc) > 1 and _UNION_MEMBER.match(loc[-1]) else loc
        merged.setdefault(key, []).append((message, got))
    out = []
    for loc, items in merged.items():
        inputs = {got for _, got in items if got is not None}
        if len(items) > 1 and len(inputs) == 1:
            lead = "Input should be "
            parts = [message for message, _ in items]
            parts = [parts[0]] + [p.removeprefix(lead) if parts[0].startswith(lead) else p for p in parts[1:]]
            out.append((loc, ", or ".join(dict.fromkeys(parts)) + f" (got {inputs.pop()})"))
        else:
            out += [(loc, message + (f" (got {got})" if got is not None else "")) for message, got in items]
    return out


def line_of(loc: Loc, lines: dict[Loc, int], touched: set[Loc]) -> float:
    """The recipe line a key sits on; overrides sort last, keys with no line (missing ones) just before them."""
    if loc not in lines and any(t[: len(loc)] == loc for t in touched):
        return OVERRIDE  # a section an override created (method.r=4 with no method in the file)
    for i in range(len(loc), 0, -1):
        if loc[:i] in touched:
            return OVERRIDE
        if loc[:i] in lines:
            return lines[loc[:i]]
    return NO_LINE


def where(loc: Loc, source: str | None, lines: dict[Loc, int], touched: set[Loc]) -> str:
    line = line_of(loc, lines, touched)
    if line == OVERRIDE:
        return "(command-line override) "
    if line != NO_LINE:
        return f"{source}:{int(line)}: " if source else f"line {int(line)}: "
    return f"{source}: " if source else ""


def allowed_keys(root: type[BaseModel], methods: Mapping[str, type[BaseModel]], loc: Loc) -> list[str]:
    """The field names of the section at `loc`, for 'did you mean' suggestions."""
    model: Any = root
    for part in loc:
        if model is root and part == "method":
            return sorted({f for cls in methods.values() for f in cls.model_fields})
        field = model.model_fields.get(part)
        if field is None:
            return []
        candidates = [a for a in _members(field.annotation) if isinstance(a, type)]
        model = next((a for a in candidates if issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _members(annotation: Any) -> list[Any]:
    """The types a field may hold: a union's members, unwrapped from Annotated[...] and list[...]."""
    out = []
    for member in getattr(annotation, "__args__", (annotation,)):
        while typing.get_origin(member) in (typing.Annotated, list):
            member = typing.get_args(member)[0]
        out.append(member)
    return out
