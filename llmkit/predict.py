"""`llmkit predict` and `llmkit generate`: a trained model's outputs for new inputs.

`predict` streams its input (JSON lines, CSV, TSV or text; a JSON array or parquet file is read whole) in batches
and appends each batch's results to the output as soon as they exist, so a large file never sits in memory and a
bad row — reported with its line — loses none of the rows already written. Each output line is the input row plus
the prediction: `prediction` and `probabilities` for classification, `generation` for seq2seq and sft.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import ValidationError

from llmkit.console import say, set_verbosity
from llmkit.data import memory
from llmkit.data.sources import iter_rows
from llmkit.errors import DataError, LlmkitError, RecipeError, did_you_mean
from llmkit.evaluation import find_checkpoint, run_recipe
from llmkit.recipe import GenerationSection, Recipe
from llmkit.recipe.formats import FORMATS
from llmkit.tasks import predictor

if TYPE_CHECKING:
    from llmkit.models import Trained

Batch = list[tuple[dict[str, Any], dict[str, Any], str]]  # (row as read, row in format fields, where)


def predict_file(
    run: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    batch_size: int = 16,
    overrides: Sequence[str] = (),
    recipe: str | None = None,
) -> int:
    """Write one JSON line per input row to `output_path`; returns how many were written. `run` is a finished run
    (or one of its checkpoints); its own recipe says how rows are read (format, columns, template, generation)."""
    found = find_checkpoint(run)
    chosen = run_recipe(found, overrides, recipe)
    predict = predictor(chosen.task).predict
    source, target = Path(input_path), Path(output_path)
    if not source.is_file():
        raise LlmkitError(f"--input '{source}' does not exist.")
    if target.exists():
        raise LlmkitError(f"--output '{target}' already exists; choose another path or delete it.")
    if not target.parent.is_dir():
        raise LlmkitError(f"--output: the directory '{target.parent}' does not exist.")
    if batch_size < 1:
        raise LlmkitError("--batch-size must be at least 1.")
    set_verbosity()
    rows = _checked_rows(chosen, iter_rows(source))
    first = next(rows, None)  # a bad first row fails before the model loads
    if first is None:
        raise DataError("has no rows to predict", str(source))
    trained = found.load()
    writer = _Writer(target)

    def flush(batch: Batch) -> None:
        writer.write(batch, predict(chosen, trained, [f for _, f, _ in batch], [w for _, _, w in batch]))

    batch: Batch = [first]
    try:
        while True:
            try:
                item = next(rows, None)
            except DataError as exc:  # a bad row: keep every row before it, then stop at it
                flush(batch)
                raise DataError(f"{exc}; the {writer.written} rows before it are in {target}") from None
            if item is None:
                break
            if len(batch) == batch_size:
                flush(batch)
                batch = []
            batch.append(item)
        flush(batch)
    finally:
        writer.close()
    say(f"wrote {writer.written} predictions to {target}")
    return writer.written


def predict(run: str | os.PathLike[str], rows: Any, batch_size: int = 16) -> list[dict[str, Any]]:
    """`llmkit predict` from Python: each row (a datasets.Dataset, a pandas DataFrame or a list of dicts) with the
    run's prediction added, exactly the JSON lines `llmkit predict` writes. `llmkit.load(run).predict(rows)` too."""
    found = find_checkpoint(run)
    recipe = run_recipe(found)
    predictor(recipe.task)  # a task that cannot predict says so before the model loads
    checked = located_rows(recipe, rows)  # and so does a bad row
    set_verbosity()
    return predict_rows(recipe, found.load(), checked, batch_size)


def predict_rows(recipe: Recipe, trained: Trained, rows: Batch, batch_size: int = 16) -> list[dict[str, Any]]:
    """Checked rows (as `_checked_rows` yields them) with their predictions, `batch_size` rows at a time."""
    if batch_size < 1:
        raise LlmkitError("batch_size must be at least 1.")
    task = predictor(recipe.task)
    out: list[dict[str, Any]] = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        predictions = task.predict(recipe, trained, [f for _, f, _ in batch], [w for _, _, w in batch])
        out += [{**row, **prediction} for (row, _, _), prediction in zip(batch, predictions, strict=True)]
    return out


def located_rows(recipe: Recipe, rows: Any) -> Batch:
    """In-memory rows for prediction, checked: a bad one stops with its index (`row 3 of rows (in-memory list)`)."""
    records, where = memory.located(rows, "rows")
    return list(_checked_rows(recipe, zip(records, where, strict=True)))


def _checked_rows(
    recipe: Recipe, rows: Iterable[tuple[dict[str, Any], str]]
) -> Iterator[tuple[dict[str, Any], dict[str, Any], str]]:
    """Rows as read, renamed to the format's fields (data.columns) and checked: a bad one stops with where it is."""
    fmt = FORMATS[recipe.data.format]
    check = fmt.check_input or fmt.check_row
    inverse = {user: field for field, user in recipe.data.columns.items()}
    for row, where in rows:
        fields = {inverse.get(key, key): value for key, value in row.items()}
        problem = check(fields)
        if problem:
            raise DataError(in_user_columns(problem, recipe.data.columns), where)
        yield row, fields, where


def in_user_columns(problem: str, columns: Mapping[str, str]) -> str:
    """A row check names the format's field ('text'); a file whose column data.columns maps to it has the user's
    name for it, which is the one to say."""
    for field, user in columns.items():
        if f"'{field}'" in problem:
            return f"{problem.replace(repr(field), repr(user))} (data.columns maps it to {field})"
    return problem


class _Writer:
    """Appends JSON lines, flushed per batch; the file is created with the first line, so a run that fails before
    any prediction leaves nothing behind."""

    def __init__(self, path: Path):
        self.path = path
        self.handle: IO[str] | None = None
        self.written = 0

    def write(self, batch: Batch, predictions: list[dict[str, Any]]) -> None:
        if self.handle is None:
            self.handle = self.path.open("x", encoding="utf-8")
        for (row, _, _), prediction in zip(batch, predictions, strict=True):
            self.handle.write(json.dumps({**row, **prediction}, ensure_ascii=False) + "\n")
        self.handle.flush()
        self.written += len(batch)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


# The row a bare prompt becomes, per data format, so `llmkit generate` renders it as training rendered its rows.
PROMPT_ROWS: dict[str, Callable[[str], dict[str, Any]]] = {
    "alpaca": lambda prompt: {"instruction": prompt},
    "chat": lambda prompt: {"messages": [{"role": "user", "content": prompt}]},
    "text": lambda prompt: {"text": prompt},
    "seq2seq": lambda prompt: {"source": prompt},
    "prompt": lambda prompt: {"prompt": prompt},
}


def generate_from_run(
    run_dir: str | os.PathLike[str], prompts: list[str], max_new_tokens: int | None = None
) -> list[str]:
    """Generate from a finished sft, seq2seq or grpo run, each prompt rendered with the run's own template (Alpaca or
    chat template, system prompt, source prefix) and decoded with its `generation` settings."""
    settings = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
    recipe = generation_recipe(Recipe.from_run(run_dir), run_dir, settings)
    set_verbosity()
    return generate_texts(recipe, find_checkpoint(run_dir).load(), prompts)


def generation_recipe(recipe: Recipe, run: str | os.PathLike[str], settings: dict[str, Any]) -> Recipe:
    """The run's recipe with `generation` settings changed (validated as the recipe's are); a run that does not
    generate text says so before any model loads."""
    if recipe.data.format not in PROMPT_ROWS:
        raise LlmkitError(
            f"'{run}' is a {recipe.task} run, which does not generate text; use llmkit predict for its outputs."
        )
    predictor(recipe.task, "generate")
    if not settings:
        return recipe
    merged = {**recipe.generation.model_dump(exclude_unset=True), **settings}
    try:
        generation = GenerationSection.model_validate(merged)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in ("generation", *error["loc"]))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown key{did_you_mean(str(error['loc'][-1]), GenerationSection.model_fields)}"
        raise RecipeError(f"{key}: {message}") from None
    return recipe.model_copy(update={"generation": generation})


def generate_texts(recipe: Recipe, trained: Trained, prompts: Sequence[str]) -> list[str]:
    """Each prompt rendered as the run's training rendered its rows, and the model's answer (`llmkit generate`)."""
    rows = [PROMPT_ROWS[recipe.data.format](prompt) for prompt in prompts]
    predictions = predictor(recipe.task, "generate").predict(recipe, trained, rows, ["--prompt"] * len(rows))
    return [out["generation"] for out in predictions]
