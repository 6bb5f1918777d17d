"""Toy data sets a tiny model learns in a few dozen steps, and recipes for them (classification and seq2seq)."""

from __future__ import annotations

import json
import random
from pathlib import Path

# Separable by vocabulary: every word of a "pos" text is from POS, every word of a "neg" text from NEG.
POS = ["good", "great", "happy", "love", "nice", "best", "kind", "warm"]
NEG = ["bad", "sad", "hate", "poor", "worst", "angry", "cold", "cruel"]
NOUNS = ["red", "blue", "green", "cat", "dog", "house", "tree", "sun", "moon", "river", "stone", "bird"]


def sentiment_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "neg" if i % 2 else "pos"
        words = NEG if label == "neg" else POS
        rows.append({"text": " ".join(rng.choice(words) for _ in range(rng.randint(2, 6))), "label": label})
    return rows


def pair_rows(n: int, seed: int) -> list[dict]:
    """The label is decided by the second text; the first is a neutral distractor (so the pair reaches the model)."""
    rng = random.Random(seed)
    rows = []
    for row in sentiment_rows(n, seed):
        question = " ".join(rng.choice(NOUNS) for _ in range(rng.randint(2, 4)))
        rows.append({"question": question, "answer": row["text"], "verdict": row["label"]})
    return rows


def copy_rows(n: int, seed: int) -> list[dict]:
    """A 'summary' is the first two words of the source: learnable by a tiny T5 in a few dozen steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(NOUNS) for _ in range(rng.randint(4, 8))]
        rows.append({"source": " ".join(words), "target": " ".join(words[:2])})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_splits(directory: Path, make, sizes=(96, 24, 24)) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return {
        split: write_jsonl(directory / f"{split}.jsonl", make(n, seed))
        for split, n, seed in zip(("train", "validation", "test"), sizes, (0, 1, 2), strict=True)
    }


TRAINING = {
    "max_steps": 30,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "learning_rate": 5e-3,
    "logging_steps": 10,
    "save_strategy": "no",
    "seed": 0,
}


def classification_recipe(model_dir: Path, splits: dict[str, Path], output_dir: Path, **overrides) -> dict:
    recipe = {
        "task": "classification",
        "model": {"name": str(model_dir)},
        "data": {
            "train": str(splits["train"]),
            "validation": str(splits["validation"]),
            "test": str(splits["test"]),
            "format": "classification",
            "max_length": 32,
        },
        "training": dict(TRAINING),
        "output_dir": str(output_dir),
    }
    recipe.update(overrides)
    return recipe


def seq2seq_recipe(model_dir: Path, splits: dict[str, Path], output_dir: Path, **overrides) -> dict:
    recipe = {
        "task": "seq2seq",
        "model": {"name": str(model_dir)},
        "data": {
            "train": str(splits["train"]),
            "validation": str(splits["validation"]),
            "format": "seq2seq",
            "source_prefix": "summarize: ",
            "max_length": 32,
            "max_target_length": 8,
        },
        "generation": {"max_new_tokens": 6},
        "training": {**TRAINING, "max_steps": 60, "learning_rate": 1e-2},
        "output_dir": str(output_dir),
    }
    recipe.update(overrides)
    return recipe


def accumulation_pair(make_recipe, tmp_path: Path) -> tuple:
    """Two runs that see the same examples per optimizer step — batch 4 × accumulation 1 and batch 1 × accumulation
    4 — with plain SGD, under which a loss scaled wrongly for accumulation shows (Adam would hide most of it)."""
    import llmkit
    from llmkit import Recipe

    runs = []
    for batch, accum in ((4, 1), (1, 4)):
        recipe = make_recipe(tmp_path / f"b{batch}")
        recipe["training"].update(
            per_device_train_batch_size=batch, gradient_accumulation_steps=accum, max_steps=3, optim="sgd",
            learning_rate=0.5,
        )  # fmt: skip
        runs.append(llmkit.Trainer(Recipe.from_dict(recipe)).train())
    return tuple(runs)
