"""Step 1 of rationale distillation (`llmkit rationales`): the teacher writes a rationale and an answer per input.

Resumable and crash-safe: each record is appended to the JSONL output (and fsynced) as soon as it is generated, and a
rerun skips the inputs already answered, so an interrupted run continues where it stopped. Inputs the teacher gave
no usable answer for go to `<output>.rejected.jsonl` with the reason, so the main file is always valid data for step
2 (`data.format: rationale`).
"""

from __future__ import annotations

import json
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.console import say
from llmkit.data.sources import read_source
from llmkit.distill.teacher import load_teacher, resolve_teacher, teacher_tokenizer
from llmkit.errors import DataError, LlmkitError
from llmkit.families import text_head
from llmkit.generation import generate

DEFAULT_PROMPT = (
    "{input}\n\nExplain your reasoning step by step, then give the final answer on its own last line, "
    "written as 'Answer: <answer>'."
)
ANSWER = re.compile(r"(?im)^\s*(?:final\s+)?answer\s*[:：]\s*(.+?)\s*$")


@dataclass
class Summary:
    written: int = 0
    rejected: int = 0
    already_done: int = 0

    def line(self, output: Path) -> str:
        return (
            f"{self.written} rationales written to {output}, {self.rejected} inputs without a usable answer "
            f"(see {rejected_path(output)}), {self.already_done} already done before this run"
        )


def rejected_path(output: Path) -> Path:
    return output.with_name(output.stem + ".rejected.jsonl")


def parse(text: str) -> tuple[str, str | None]:
    """(rationale, answer): the answer is the last 'Answer: ...' line; the rationale is everything before it."""
    matches = list(ANSWER.finditer(text))
    if not matches:
        return text.strip(), None
    last = matches[-1]
    return text[: last.start()].strip(), last.group(1).strip().rstrip(".").strip() or None


def check_prompt(prompt: str, has_label: bool) -> None:
    fields = {name for _, name, _, _ in string.Formatter().parse(prompt) if name is not None}
    unknown = fields - {"input", "label"}
    if unknown or "input" not in fields:
        raise LlmkitError(
            f"--prompt: use the placeholders {{input}} (required) and {{label}}; found {sorted(fields) or 'none'}."
        )
    if "label" in fields and not has_label:
        raise LlmkitError("--prompt uses {label}, so give --label-column (the teacher is told the answer to explain).")


def done_sources(*paths: Path) -> set[str]:
    """Sources already answered; a half-written last line (an interrupted write) is cut off first."""
    done = set()
    for path in paths:
        if not path.is_file():
            continue
        text = path.read_text()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
            path.write_text(text)
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                done.add(json.loads(line)["source"])
            except (ValueError, KeyError, TypeError):
                raise DataError(
                    "is not a record of `llmkit rationales` (JSON with a 'source'); choose a new --output",
                    f"{path}:{number}",
                ) from None
    return done


def generate_rationales(
    teacher: str,
    data: str,
    output: str,
    *,
    input_column: str = "input",
    label_column: str | None = None,
    prompt: str = DEFAULT_PROMPT,
    max_new_tokens: int = 128,
    batch_size: int = 4,
    limit: int | None = None,
    dtype: str = "float32",
) -> Summary:
    """Append one {input, label, rationale, teacher_answer, source} record per input of `data` to `output`.

    The label is the gold label when `label_column` is given (the teacher's answer is kept beside it), else the
    teacher's answer. Greedy decoding, so a rerun of the same teacher gives the same rationales."""
    check_prompt(prompt, label_column is not None)
    rows = read_source(data)
    for column in (input_column, label_column):
        if column is not None and rows.columns and column not in rows.columns:
            raise DataError(f"has no column '{column}'; its columns are {', '.join(rows.columns)}", rows.name)
    out, rejected = Path(output), rejected_path(Path(output))
    done = done_sources(out, rejected)
    pending = [(row, where) for row, where in zip(rows.rows, rows.where, strict=True) if where not in done]
    summary = Summary(already_done=len(rows) - len(pending))
    if limit is not None:
        pending = pending[: max(0, limit - summary.already_done)]
    if not pending:
        reached = f"--limit {limit} is reached" if limit is not None and summary.already_done < len(rows) else None
        say(f"nothing to do: {reached or f'all {len(rows)} inputs of {rows.name} are in {out} or {rejected}'}")
        return summary

    ref = resolve_teacher(teacher, dtype)
    head = text_head(ref.family)
    tokenizer = teacher_tokenizer(ref)
    model = load_teacher(ref, head, tokenizer)
    out.parent.mkdir(parents=True, exist_ok=True)
    say(f"{len(pending)} inputs to explain with {teacher} ({summary.already_done} already done)")
    with out.open("a") as good, rejected.open("a") as bad:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            prompts = [_prompt(tokenizer, prompt, row, input_column, label_column, head) for row, _ in batch]
            texts = generate(model, tokenizer, prompts, len(prompts), max_new_tokens=max_new_tokens, do_sample=False)
            for (row, where), text in zip(batch, texts, strict=True):
                rationale, answer = parse(text)
                gold = str(row[label_column]) if label_column else None
                record = {"input": str(row[input_column]), "label": gold or answer, "rationale": rationale}
                record.update(teacher_answer=answer, source=where)
                if not record["label"] or not rationale:
                    record["reason"] = "no 'Answer:' line" if not record["label"] else "no rationale before the answer"
                    _append(bad, record)
                    summary.rejected += 1
                else:
                    _append(good, record)
                    summary.written += 1
            say(f"{summary.written + summary.rejected} of {len(pending)} inputs done")
    return summary


def _prompt(
    tokenizer: Any, template: str, row: dict[str, Any], input_column: str, label_column: str | None, head: str
) -> list[int]:
    """The prompt's token ids; an instruct decoder is asked in its chat template, as it was tuned."""
    text = template.format(input=row[input_column], label=row[label_column] if label_column else "")
    if head == "causal_lm" and getattr(tokenizer, "chat_template", None):
        chat = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(chat, add_special_tokens=False)["input_ids"]
    return tokenizer(text)["input_ids"]


def _append(handle: Any, record: dict[str, Any]) -> None:
    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    handle.flush()
    os.fsync(handle.fileno())
