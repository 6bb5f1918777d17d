"""`llmkit eval --samples N`: held-out prompts with the reference answer and the model's generation side by side,
because people read outputs before they trust numbers. sft and seq2seq runs; a JSONL file and a short preview.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmkit.console import say
from llmkit.errors import LlmkitError
from llmkit.outputs import write_text
from llmkit.recipe import Recipe
from llmkit.tasks import predictor

PREVIEW = 3  # samples shown on the console
PREVIEW_CHARS = 160
BATCH = 16  # prompts generated together


def _alpaca(row: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    return {k: v for k, v in row.items() if k != "output"}, prompt, row["output"]


def _chat(row: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """The conversation up to its last assistant turn is the prompt; that turn is the reference."""
    messages = row["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    prompt = "\n".join(f"{m['role']}: {m['content']}" for m in messages[:last])
    return {**row, "messages": messages[:last]}, prompt, messages[last]["content"]


def _seq2seq(row: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    return {"source": row["source"]}, row["source"], row["target"]


# A row of each format → (the row without its answer, the prompt as text, the reference answer).
SPLITS: dict[str, Callable[[dict[str, Any]], tuple[dict[str, Any], str, str]]] = {
    "alpaca": _alpaca,
    "chat": _chat,
    "seq2seq": _seq2seq,
}


def check(recipe: Recipe) -> None:
    """Refuse --samples before anything loads when the run does not generate or its rows hold no reference."""
    if recipe.task not in ("sft", "seq2seq"):
        raise LlmkitError(f"--samples shows generations, and a {recipe.task} run does not generate; drop --samples.")
    if recipe.data.format not in SPLITS:
        raise LlmkitError(
            f"--samples needs a prompt and a reference answer per row, and format '{recipe.data.format}' has none "
            f"(formats {', '.join(SPLITS)} do); drop --samples."
        )


def write(recipe: Recipe, trained: Any, rows: list[dict[str, Any]], origins: list[str], path: Path) -> Path:
    """Generate for each row's prompt (the run's template and generation settings, as `llmkit predict`) and write
    {where, prompt, reference, generation} per line to `path`; show the first few."""
    split = SPLITS[recipe.data.format]
    parts = [split(row) for row in rows]
    predict = predictor(recipe.task, "eval --samples").predict
    generations: list[str] = []
    for start in range(0, len(parts), BATCH):
        batch = parts[start : start + BATCH]
        outputs = predict(recipe, trained, [p for p, _, _ in batch], origins[start : start + BATCH])
        generations += [out["generation"] for out in outputs]
    records = [
        {"where": where, "prompt": prompt, "reference": reference, "generation": generation}
        for where, (_, prompt, reference), generation in zip(origins, parts, generations, strict=True)
    ]
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    for record in records[:PREVIEW]:
        say(
            f"sample {record['where']}\n  prompt:     {_short(record['prompt'])}\n"
            f"  reference:  {_short(record['reference'])}\n  generation: {_short(record['generation'])}"
        )
    say(f"wrote {len(records)} samples to {path}")
    return path


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"
