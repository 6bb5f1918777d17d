"""The list-based data path as it was before examples moved to Arrow: the reference the Arrow path must match token
for token. Rows are read by llmkit's own line reader (`read_source`), renamed, checked and carved here exactly as
`llmkit.data.load` did; the row → example functions are the library's, called on whole splits."""

from __future__ import annotations

import random
from typing import Any

from llmkit.data.classification import label_names
from llmkit.data.preference import build_pairs
from llmkit.data.seq2seq import Encoder as Seq2SeqEncoder
from llmkit.data.sft import build_examples
from llmkit.data.sources import Rows, read_source
from llmkit.recipe.distill import distill_kind
from llmkit.recipe.formats import FORMATS


def _source(source: Any, section: Any) -> Rows:
    rows = read_source(source.path, source.hub, source.split, source.subset, source.revision)
    inverse = {user: canonical for canonical, user in section.columns.items()}
    renamed = [{inverse.get(k, k): v for k, v in row.items()} for row in rows.rows]
    rows = Rows(renamed, rows.where, rows.name, rows.fingerprint, [inverse.get(c, c) for c in rows.columns])
    check = FORMATS[section.format].check_row
    assert not [row for row in rows.rows if check(row)], "the reference reads only good data"
    return rows


def load_splits(section: Any, test: bool = False) -> dict[str, Rows]:
    """train / validation / test rows as the list path read them (the seeded carve-out included)."""
    train = _source(section.train, section)
    held = None
    if section.validation is not None:
        held = _source(section.validation, section)
    elif section.validation_split > 0:
        order = list(range(len(train)))
        random.Random(section.split_seed).shuffle(order)
        n_eval = max(1, round(len(train) * section.validation_split))
        held = train.select(sorted(order[:n_eval]))
        train = train.select(sorted(order[n_eval:]))
    if section.max_train_samples:
        train = train.select(list(range(min(section.max_train_samples, len(train)))))
    if held is not None and section.max_eval_samples:
        held = held.select(list(range(min(section.max_eval_samples, len(held)))))
    splits = {"train": train}
    if held is not None:
        splits["validation"] = held
    if test and section.test is not None:
        splits["test"] = _source(section.test, section)
    return splits


def kind_of(recipe: Any) -> str:
    """Which data path a recipe's task takes: sft, classification, seq2seq, pairs, reward, prompts or rationale."""
    if recipe.task == "distill":
        return {"causal_lm": "sft"}.get(distill_kind(recipe.data.format), distill_kind(recipe.data.format))
    if recipe.task in ("grpo", "rloo"):
        return "prompts"
    return "pairs" if recipe.task in ("dpo", "orpo", "kto") else recipe.task


def examples(env: Any, tokenizer: Any) -> dict[str, tuple[list, list[str], dict]]:
    """Each split's (examples, where, manifest record) as the list path built them for the recipe's task."""
    from llmkit.data.classification import Encoder as ClassEncoder
    from llmkit.data.prompts import build_prompts
    from llmkit.data.reward import build_reward_pairs
    from llmkit.data.tokens import LengthPolicy
    from llmkit.recipe.rl import columns_needed
    from llmkit.tasks import distill_rationale
    from llmkit.tasks import grpo as grpo_task
    from llmkit.tasks import reward as reward_task
    from llmkit.tasks.sft import text_options

    recipe, data = env.recipe, env.recipe.data
    kind = kind_of(recipe)
    splits = load_splits(data, test=kind in ("classification", "seq2seq"))
    if kind == "sft":
        options = text_options(env, tokenizer)
        encode = lambda rows: build_examples(rows.rows, rows.where, **options)  # noqa: E731
    elif kind == "classification":
        ids = {name: i for i, name in enumerate(label_names(splits["train"], recipe.classification))}
        encoder = ClassEncoder(tokenizer, data.format == "sentence-pair", LengthPolicy(data.max_length, data.overlong))
        encode = lambda rows: encoder.examples(rows, ids)  # noqa: E731
    elif kind == "seq2seq":
        encode = Seq2SeqEncoder.for_data(tokenizer, data).examples
    elif kind == "pairs":
        encode = lambda rows: build_pairs(rows, data, tokenizer)  # noqa: E731
    elif kind == "reward":
        encoder = env.base.family in reward_task.ENCODERS
        encode = lambda rows: build_reward_pairs(rows, data, tokenizer, encoder)  # noqa: E731
    elif kind == "prompts":
        needed = columns_needed(grpo_task.section_of(recipe))
        encode = lambda rows: build_prompts(rows, data, tokenizer, needed)  # noqa: E731
    else:
        encode = distill_rationale._pairs(env, tokenizer)
    out = {}
    for name, rows in splits.items():
        built, where, _ = encode(rows)
        out[name] = (built, where, rows.describe())
    return out


def pack(examples: list[dict[str, Any]], max_length: int) -> list[dict[str, list[int]]]:
    """Packing as the list path did it: first-fit-decreasing by a scan of every open row; each example's first label
    masked, position ids restarting per example."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    bins: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = len(examples[i]["input_ids"])
        slot = next((b for b, space in enumerate(free) if space >= n), None)
        if slot is None:
            bins.append([i])
            free.append(max_length - n)
        else:
            bins[slot].append(i)
            free[slot] -= n
    rows = []
    for members in bins:
        ids, labels, positions = [], [], []
        for i in members:
            ids += list(examples[i]["input_ids"])
            labels += [-100, *list(examples[i]["labels"])[1:]]
            positions += list(range(len(examples[i]["input_ids"])))
        rows.append({"input_ids": ids, "labels": labels, "position_ids": positions})
    return rows
